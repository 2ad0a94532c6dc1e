//! A stand-in identity provider on loopback: OIDC discovery, JWKS, authorize, token (checking
//! client secret, redirect URI and the PKCE S256 verifier as a real provider does), userinfo,
//! and GitHub-style `/user` and `/user/emails`. ID tokens are signed with a test RSA key
//! (`fixtures/idp_key.pem`), and its clock is the test server's, so expiry is consistent.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Form, Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use gatehouse::domain::{Clock, ManualClock};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::{net::TcpListener, sync::oneshot};

const KEY_PEM: &[u8] = include_bytes!("fixtures/idp_key.pem");
const OTHER_KEY_PEM: &[u8] = include_bytes!("fixtures/other_key.pem");
const KEY_PUBLIC: &str = include_str!("fixtures/idp_key.public.json");
const KID: &str = "test-key-1";

/// The person signed in at the provider.
#[derive(Debug, Clone)]
pub struct IdpUser {
    pub sub: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: String,
}

/// How the next ID token is spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenMode {
    Valid,
    BadSignature,
    WrongAudience,
    WrongNonce,
    Expired,
    WrongIssuer,
    AlgNone,
}

/// How the token endpoint misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFailure {
    ServerError,
    Slow,
    /// 503 with an OAuth `temporarily_unavailable` body and `Retry-After`.
    TemporarilyUnavailable,
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    scope: String,
    user: IdpUser,
}

/// The stand-in's mutable state; tests change it between calls.
pub struct IdpState {
    pub clock: Option<ManualClock>,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    pub user: IdpUser,
    pub id_token_mode: IdTokenMode,
    pub token_failure: Option<TokenFailure>,
    /// Put the email in the ID token (else only userinfo has it).
    pub email_in_id_token: bool,
    /// Access token lifetime; `None` sends no `expires_in` and no refresh token (GitHub).
    pub access_ttl: Option<i64>,
    /// Every token this provider issued, to look for in the database.
    pub issued: Vec<String>,
    /// Verifiers the token endpoint received.
    pub verifiers: Vec<String>,
    /// Scopes requested at authorize.
    pub requested_scopes: Vec<String>,
    /// Refresh grants served.
    pub refreshes: u32,
    /// Issue refresh tokens with expiring access tokens.
    pub issue_refresh_tokens: bool,
    base: String,
    codes: HashMap<String, Grant>,
    access: HashMap<String, IdpUser>,
    refresh: HashMap<String, IdpUser>,
}

/// A running stand-in.
pub struct Idp {
    pub base: String,
    pub state: Arc<Mutex<IdpState>>,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

type Shared = Arc<Mutex<IdpState>>;

impl Idp {
    /// Starts a provider for `client_id`/`client_secret` that accepts `redirect_uris`.
    pub async fn start(client_id: &str, client_secret: &str, redirect_uris: &[&str], user: IdpUser) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(IdpState {
            clock: None,
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: redirect_uris.iter().map(|s| s.to_string()).collect(),
            user,
            id_token_mode: IdTokenMode::Valid,
            token_failure: None,
            email_in_id_token: true,
            access_ttl: Some(3600),
            issued: Vec::new(),
            verifiers: Vec::new(),
            requested_scopes: Vec::new(),
            refreshes: 0,
            issue_refresh_tokens: true,
            base: base.clone(),
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .route("/user", get(github_user))
            .route("/user/emails", get(github_emails))
            .with_state(Arc::clone(&state));
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Self { base, state, shutdown: Mutex::new(Some(tx)), server: Mutex::new(Some(server)) }
    }

    /// Stops answering: the provider is down.
    pub fn stop(&self) {
        if let Some(tx) = self.shutdown.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }

    /// Stops answering and returns once the port is closed: a graceful shutdown signalled
    /// alone may still serve a request that arrives before the server task next runs.
    pub async fn stop_now(&self) {
        self.stop();
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }

    /// Runs `f` on the state.
    pub fn with<R>(&self, f: impl FnOnce(&mut IdpState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

fn random(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).unwrap();
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn oauth_error(status: StatusCode, code: &str) -> Response {
    (status, Json(json!({ "error": code }))).into_response()
}

async fn discovery(State(s): State<Shared>) -> Json<Value> {
    let base = s.lock().unwrap().base.clone();
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }))
}

async fn jwks() -> Json<Value> {
    let public: Value = serde_json::from_str(KEY_PUBLIC).unwrap();
    Json(json!({ "keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": KID,
        "n": public["n"], "e": public["e"],
    }]}))
}

async fn authorize(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut st = s.lock().unwrap();
    let param = |k: &str| q.get(k).cloned().unwrap_or_default();
    if param("client_id") != st.client_id {
        return (StatusCode::BAD_REQUEST, "unknown client").into_response();
    }
    // A real provider never redirects to an unregistered URI: it shows an error page.
    let redirect_uri = param("redirect_uri");
    if !st.redirect_uris.contains(&redirect_uri) {
        return (StatusCode::BAD_REQUEST, "redirect_uri mismatch").into_response();
    }
    if param("response_type") != "code"
        || param("code_challenge_method") != "S256"
        || param("code_challenge").is_empty()
    {
        return Redirect::to(&format!("{redirect_uri}?error=invalid_request&state={}", param("state"))).into_response();
    }
    let code = random("code-");
    st.requested_scopes = param("scope").split(' ').map(str::to_owned).collect();
    let grant = Grant {
        client_id: param("client_id"),
        redirect_uri: redirect_uri.clone(),
        challenge: param("code_challenge"),
        nonce: q.get("nonce").cloned(),
        scope: param("scope"),
        user: st.user.clone(),
    };
    st.codes.insert(code.clone(), grant);
    Redirect::to(&format!("{redirect_uri}?code={code}&state={}", urlencode(&param("state")))).into_response()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn client_authenticated(st: &IdpState, headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| pair.split_once(':').map(|(id, secret)| (id.to_owned(), secret.to_owned())));
    let (id, secret) = match from_header {
        Some(pair) => pair,
        None => {
            (form.get("client_id").cloned().unwrap_or_default(), form.get("client_secret").cloned().unwrap_or_default())
        }
    };
    id == st.client_id && secret == st.client_secret
}

async fn token(State(s): State<Shared>, headers: HeaderMap, Form(form): Form<HashMap<String, String>>) -> Response {
    let failure = s.lock().unwrap().token_failure;
    match failure {
        Some(TokenFailure::ServerError) => {
            return (StatusCode::BAD_GATEWAY, "upstream trouble").into_response();
        }
        Some(TokenFailure::Slow) => tokio::time::sleep(Duration::from_secs(5)).await,
        Some(TokenFailure::TemporarilyUnavailable) => {
            let body = Json(json!({"error": "temporarily_unavailable", "error_description": "try later"}));
            return (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "30")], body).into_response();
        }
        None => {}
    }
    let mut st = s.lock().unwrap();
    if !client_authenticated(&st, &headers, &form) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    match field("grant_type").as_str() {
        "authorization_code" => {
            // Codes are single use, whatever happens next.
            let Some(grant) = st.codes.remove(&field("code")) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            let verifier = field("code_verifier");
            st.verifiers.push(verifier.clone());
            let verifier_ok = (43..=128).contains(&verifier.len())
                && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
                && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == grant.challenge;
            if grant.client_id != st.client_id || grant.redirect_uri != field("redirect_uri") || !verifier_ok {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            let id_token = grant
                .scope
                .split(' ')
                .any(|s| s == "openid")
                .then(|| id_token(&st, &grant.user, grant.nonce.as_deref()));
            issue(&mut st, grant.user, &grant.scope, id_token, true)
        }
        "refresh_token" => {
            let Some(user) = st.refresh.get(&field("refresh_token")).cloned() else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            st.refreshes += 1;
            issue(&mut st, user, "openid email profile", None, false)
        }
        _ => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    }
}

fn issue(st: &mut IdpState, user: IdpUser, scope: &str, id_token: Option<String>, with_refresh: bool) -> Response {
    let access = random("idp-at-");
    st.issued.push(access.clone());
    st.access.insert(access.clone(), user.clone());
    let mut body = json!({ "access_token": access, "token_type": "Bearer", "scope": scope });
    if let Some(ttl) = st.access_ttl {
        body["expires_in"] = json!(ttl);
        if with_refresh && st.issue_refresh_tokens {
            let refresh = random("idp-rt-");
            st.issued.push(refresh.clone());
            st.refresh.insert(refresh.clone(), user);
            body["refresh_token"] = json!(refresh);
        }
    }
    if let Some(id_token) = id_token {
        st.issued.push(id_token.clone());
        body["id_token"] = json!(id_token);
    }
    Json(body).into_response()
}

fn id_token(st: &IdpState, user: &IdpUser, nonce: Option<&str>) -> String {
    let now = st.clock.as_ref().map(|c| c.now().timestamp()).unwrap_or_default();
    let mode = st.id_token_mode;
    let mut claims = json!({
        "iss": if mode == IdTokenMode::WrongIssuer { "https://evil.example".to_owned() } else { st.base.clone() },
        "sub": user.sub,
        "aud": if mode == IdTokenMode::WrongAudience { "someone-else".to_owned() } else { st.client_id.clone() },
        "iat": if mode == IdTokenMode::Expired { now - 7200 } else { now },
        "exp": if mode == IdTokenMode::Expired { now - 3600 } else { now + 3600 },
        "name": user.name,
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(if mode == IdTokenMode::WrongNonce { "not-the-nonce" } else { nonce });
    }
    if st.email_in_id_token
        && let Some(email) = &user.email
    {
        claims["email"] = json!(email);
        claims["email_verified"] = json!(user.email_verified);
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.into());
    match mode {
        IdTokenMode::AlgNone => {
            let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
            let c = URL_SAFE_NO_PAD.encode(claims.to_string());
            format!("{h}.{c}.")
        }
        IdTokenMode::BadSignature => {
            let key = EncodingKey::from_rsa_pem(OTHER_KEY_PEM).unwrap();
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        }
        _ => {
            let key = EncodingKey::from_rsa_pem(KEY_PEM).unwrap();
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        }
    }
}

fn bearer_user(st: &IdpState, headers: &HeaderMap) -> Option<IdpUser> {
    let token = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?;
    st.access.get(token).cloned()
}

async fn userinfo(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let st = s.lock().unwrap();
    let Some(user) = bearer_user(&st, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    Json(json!({
        "sub": user.sub,
        "email": user.email,
        "email_verified": user.email_verified,
        "name": user.name,
    }))
    .into_response()
}

async fn github_user(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let st = s.lock().unwrap();
    let Some(user) = bearer_user(&st, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let id: u64 = user.sub.parse().unwrap_or(1);
    Json(json!({
        "id": id,
        "login": format!("octo{id}"),
        "name": user.name,
        "email": null,
        "avatar_url": format!("https://avatars.example/{id}"),
    }))
    .into_response()
}

async fn github_emails(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let st = s.lock().unwrap();
    let Some(user) = bearer_user(&st, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let mut emails = vec![json!({
        "email": "secondary@noreply.example", "primary": false, "verified": true, "visibility": null,
    })];
    if let Some(email) = user.email {
        emails.push(json!({
            "email": email, "primary": true, "verified": user.email_verified, "visibility": "private",
        }));
    }
    Json(Value::Array(emails)).into_response()
}
