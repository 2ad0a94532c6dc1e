//! Identity for the service mesh: access tokens verified offline with an independent EdDSA
//! implementation against the published JWKS, rotation, introspection, push revocation across
//! replicas, the admin API's service authentication, TLS/mTLS and metrics.

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::TimeDelta;
use gatehouse::{
    Config,
    domain::Clock,
    proto::v1::{self as pb, admin_service_client::AdminServiceClient, token_service_client::TokenServiceClient},
};
use serde_json::Value;
use tokio_stream::StreamExt;
use tonic::{Code, Request, transport::Channel};

use crate::helpers::{Backend, PASSWORD, TestApp, bearer, spawn_app_with, spawn_on, violated_fields};

const AUDIENCE: &str = "books-api";
/// The admin API key of the tests, and its SHA-256 as configured.
const API_KEY: &str = "test-service-key-0123456789abcdef";

fn api_key_hash() -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(API_KEY.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn mesh_config(c: &mut Config) {
    c.mesh.access_token_audiences = vec![AUDIENCE.into(), "other-api".into()];
    c.mesh.admin_api_keys = vec![format!("tests={}", api_key_hash())];
    c.mesh.signing_key_check_interval = Duration::from_millis(100);
}

fn tokens(app: &TestApp) -> TokenServiceClient<Channel> {
    TokenServiceClient::new(app.channel.clone())
}

pub(crate) fn admin(app: &TestApp) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(app.channel.clone())
}

pub(crate) fn with_key<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-api-key", API_KEY.parse().unwrap());
    request
}

pub(crate) async fn issue(
    app: &TestApp,
    session: &str,
    audience: &str,
) -> Result<pb::IssueAccessTokenResponse, tonic::Status> {
    tokens(app)
        .issue_access_token(bearer(pb::IssueAccessTokenRequest { audience: audience.into() }, session))
        .await
        .map(tonic::Response::into_inner)
}

async fn introspect(app: &TestApp, token: &str) -> pb::IntrospectTokenResponse {
    tokens(app)
        .introspect_token(with_key(pb::IntrospectTokenRequest { token: token.into() }))
        .await
        .unwrap()
        .into_inner()
}

async fn http_json(app: &TestApp, path: &str) -> Value {
    reqwest::get(format!("http://{}{path}", app.http_addr)).await.unwrap().json().await.unwrap()
}

/// Verifies an EdDSA JWT with ed25519-dalek directly (not the library that signed it) against
/// the JWK Set served over HTTP. Returns the claims.
pub(crate) async fn verify_independently(app: &TestApp, jwt: &str) -> Option<Value> {
    verify_with(&http_json(app, "/.well-known/jwks.json").await, jwt)
}

/// Verifies an EdDSA JWT's signature with ed25519-dalek against `jwks` (a key set as served,
/// possibly cached); returns the claims.
fn verify_with(jwks: &Value, jwt: &str) -> Option<Value> {
    let mut parts = jwt.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    if header["alg"] != "EdDSA" {
        return None;
    }
    let key = jwks["keys"].as_array()?.iter().find(|k| k["kid"] == header["kid"])?;
    assert_eq!((key["kty"].as_str(), key["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
    let x: [u8; 32] = URL_SAFE_NO_PAD.decode(key["x"].as_str()?).ok()?.try_into().ok()?;
    let public = ed25519_dalek::VerifyingKey::from_bytes(&x).ok()?;
    let signature = ed25519_dalek::Signature::from_slice(&URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
    public.verify_strict(format!("{h}.{p}").as_bytes(), &signature).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
}

fn forge(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

async fn access_tokens_verify_offline(app: &TestApp) {
    let up = app.sign_up("mesh@example.com").await;
    let issued = issue(app, &up.session_token, AUDIENCE).await.unwrap();
    assert_eq!(issued.token_type, "Bearer");
    let claims = verify_independently(app, &issued.access_token).await.expect("verifies with the published key");
    let user = up.user.unwrap();
    assert_eq!(claims["sub"], user.id.as_str());
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["sid"], up.session.unwrap().id.as_str());
    assert_eq!(claims["email"], "mesh@example.com");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600, "ten minutes");
    assert_eq!(claims["iss"], http_json(app, "/.well-known/openid-configuration").await["issuer"]);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));

    let discovery = http_json(app, "/.well-known/openid-configuration").await;
    assert!(discovery["jwks_uri"].as_str().unwrap().ends_with("/.well-known/jwks.json"));
    assert_eq!(discovery["id_token_signing_alg_values_supported"][0], "EdDSA");
    let grpc_jwks: Value =
        serde_json::from_str(&tokens(app).get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner().jwks_json)
            .unwrap();
    assert_eq!(grpc_jwks, http_json(app, "/.well-known/jwks.json").await);

    // Audiences are an allow-list; a session is needed.
    assert_eq!(violated_fields(&issue(app, &up.session_token, "unknown-api").await.unwrap_err()), ["audience"]);
    assert_eq!(
        tokens(app)
            .issue_access_token(pb::IssueAccessTokenRequest { audience: AUDIENCE.into() })
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let active = introspect(app, &issued.access_token).await;
    assert!(active.active);
    assert_eq!(
        (active.token_type.as_str(), active.sub.as_str(), active.aud.as_str()),
        ("access_token", user.id.as_str(), AUDIENCE)
    );

    // Rejected: tampered claims, alg none, a key that is not ours, HS256 keyed with the public key.
    let mut parts = issued.access_token.split('.');
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    let mut tampered = claims.clone();
    tampered["sub"] = Value::String(uuid::Uuid::new_v4().to_string());
    let signature = URL_SAFE_NO_PAD.decode(issued.access_token.rsplit('.').next().unwrap()).unwrap();
    let forged_claims = forge(&header, &tampered, &signature);
    let none = forge(&serde_json::json!({"alg": "none", "typ": "JWT"}), &claims, b"");
    let stranger = {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let unsigned =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        use ed25519_dalek::Signer;
        format!("{unsigned}.{}", URL_SAFE_NO_PAD.encode(key.sign(unsigned.as_bytes()).to_bytes()))
    };
    let hs256 = {
        use hmac::{Hmac, KeyInit, Mac};
        let jwks = http_json(app, "/.well-known/jwks.json").await;
        let public = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
        let h = serde_json::json!({"alg": "HS256", "kid": header["kid"], "typ": "JWT"});
        let unsigned =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(h.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(public.as_bytes()).unwrap();
        mac.update(unsigned.as_bytes());
        format!("{unsigned}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    };
    for (what, token) in
        [("tampered", &forged_claims), ("alg none", &none), ("foreign key", &stranger), ("hs256", &hs256)]
    {
        assert!(verify_independently(app, token).await.is_none(), "{what} verified independently");
        assert!(!introspect(app, token).await.active, "{what} introspected active");
    }
    // Another audience's token is still ours, but says so.
    let other = issue(app, &up.session_token, "other-api").await.unwrap();
    assert_eq!(introspect(app, &other.access_token).await.aud, "other-api");

    // Expired after ten minutes (plus the one-minute leeway).
    app.clock.advance(TimeDelta::minutes(11) + TimeDelta::seconds(1));
    assert!(!introspect(app, &issued.access_token).await.active, "expired");
}

async fn introspection_follows_the_session(app: &TestApp) {
    let up = app.sign_up("introspect@example.com").await;
    let session = introspect(app, &up.session_token).await;
    assert!(session.active);
    assert_eq!(session.token_type, "session");
    let access = issue(app, &up.session_token, AUDIENCE).await.unwrap().access_token;
    assert!(introspect(app, &access).await.active);
    app.auth().sign_out(bearer(pb::SignOutRequest {}, &up.session_token)).await.unwrap();
    assert!(!introspect(app, &up.session_token).await.active);
    assert!(!introspect(app, &access).await.active, "an access token dies with its session");
    assert!(!introspect(app, "garbage").await.active);
    // Introspection is for services.
    let refused = tokens(app).introspect_token(pb::IntrospectTokenRequest { token: access }).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

async fn published_kids(app: &TestApp) -> Vec<String> {
    http_json(app, "/.well-known/jwks.json").await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn rotation_keeps_old_tokens_until_they_expire(app: &TestApp) {
    let token = app.sign_up("rotate@example.com").await.session_token;
    let old = issue(app, &token, AUDIENCE).await.unwrap().access_token;
    let old_kid = header_kid(&old);
    // `gatehouse keys rotate` against the same database, as an operator would run it.
    let mut config = crate::helpers::test_config(&app.db, std::env::temp_dir().as_path());
    mesh_config(&mut config);
    let rotated = rotate_offline(&config, app.clock.clone()).await;
    // The running server publishes the new key at its next check, but keeps signing with the
    // old one for the JWKS max-age (5 min) plus the check interval.
    let deadline = Instant::now() + Duration::from_secs(5);
    while published_kids(app).await.len() < 2 {
        assert!(Instant::now() < deadline, "the new key was not published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(published_kids(app).await, [old_kid.clone(), rotated.kid.clone()]);
    assert_eq!(header_kid(&issue(app, &token, AUDIENCE).await.unwrap().access_token), old_kid);
    app.clock.advance(TimeDelta::minutes(5));
    assert_eq!(header_kid(&issue(app, &token, AUDIENCE).await.unwrap().access_token), old_kid);
    app.clock.advance(TimeDelta::seconds(1));
    let new = issue(app, &token, AUDIENCE).await.unwrap().access_token;
    assert_eq!(header_kid(&new), rotated.kid);
    assert!(verify_independently(app, &old).await.is_some() && introspect(app, &old).await.active);
    assert!(verify_independently(app, &new).await.is_some() && introspect(app, &new).await.active);
    // The old key stays published for the token TTL + max-age + check interval + 60 s after
    // it stopped signing, then goes.
    app.clock.advance(TimeDelta::minutes(15));
    assert_eq!(published_kids(app).await.len(), 2);
    app.clock.advance(TimeDelta::minutes(1));
    assert_eq!(published_kids(app).await, [rotated.kid]);
    assert!(verify_independently(app, &old).await.is_none());
}

/// What `gatehouse keys rotate` does, with the test's clock (the CLI uses the system's).
async fn rotate_offline(config: &Config, clock: gatehouse::domain::ManualClock) -> gatehouse::domain::keys::Rotated {
    use gatehouse::domain::cipher::SecretCipher;
    use secrecy::ExposeSecret;
    let secret = config.load_secret().unwrap();
    let store = gatehouse::storage::connect(&config.db_options()).await.unwrap();
    let cipher = std::sync::Arc::new(SecretCipher::new(secret.expose_secret(), &[]).unwrap());
    let keys = gatehouse::startup::open_keys(config, std::sync::Arc::clone(&store), cipher, std::sync::Arc::new(clock))
        .await
        .unwrap();
    let rotated = keys.rotate().await.unwrap();
    store.close().await;
    rotated
}

/// The private half of signing key `kid`, read from the database and decrypted with the test
/// server's secret: what an attacker holding an old key, or Gatehouse itself, could sign with.
async fn private_key(app: &TestApp, kid: &str) -> ed25519_dalek::SigningKey {
    use gatehouse::domain::cipher::SecretCipher;
    use secrecy::ExposeSecret;
    let kids = app.db.query_texts("SELECT kid FROM signing_keys ORDER BY created_at, kid").await;
    let cipher_ids = app.db.query_texts("SELECT cipher_key_id FROM signing_keys ORDER BY created_at, kid").await;
    let sealed = app.db.query_blobs("SELECT private_key FROM signing_keys ORDER BY created_at, kid").await;
    let at = kids.iter().position(|k| k == kid).expect("the key is stored");
    let secret = crate::helpers::test_config(&app.db, std::env::temp_dir().as_path()).load_secret().unwrap();
    let cipher = SecretCipher::new(secret.expose_secret(), &[]).unwrap();
    let der = cipher.decrypt(&cipher_ids[at], &sealed[at], kid.as_bytes()).unwrap();
    // PKCS#8 v1 of Ed25519 (RFC 8410): a 16-byte prefix, then the 32-byte seed.
    ed25519_dalek::SigningKey::from_bytes(&der[16..48].try_into().unwrap())
}

/// A JWT with `header` and `claims`, signed by `key`.
fn sign_with(key: &ed25519_dalek::SigningKey, header: &Value, claims: &Value) -> String {
    use ed25519_dalek::Signer;
    let unsigned =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    format!("{unsigned}.{}", URL_SAFE_NO_PAD.encode(key.sign(unsigned.as_bytes()).to_bytes()))
}

/// The claims of `jwt`, re-timed to be fresh at `now`.
fn fresh_claims(jwt: &str, now: chrono::DateTime<chrono::Utc>) -> Value {
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap();
    claims["iat"] = now.timestamp().into();
    claims["nbf"] = now.timestamp().into();
    claims["exp"] = (now.timestamp() + 300).into();
    claims
}

/// Only access tokens (`typ: at+jwt`, RFC 9068) are accepted: a JWT of another type signed by
/// the current key is refused, though its signature and claims are good.
async fn tokens_of_another_type_are_refused(app: &TestApp) {
    let session = app.sign_up("typed@example.com").await.session_token;
    let issued = issue(app, &session, AUDIENCE).await.unwrap().access_token;
    let kid = header_kid(&issued);
    let key = private_key(app, &kid).await;
    let claims = fresh_claims(&issued, app.clock.now());
    let as_issued = sign_with(&key, &serde_json::json!({"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}), &claims);
    assert!(introspect(app, &as_issued).await.active, "the forgery is otherwise faithful");
    let media_type = serde_json::json!({"alg": "EdDSA", "kid": kid, "typ": "application/at+jwt"});
    assert!(introspect(app, &sign_with(&key, &media_type, &claims)).await.active, "RFC 7515 §4.1.9 long form");
    for header in [
        serde_json::json!({"alg": "EdDSA", "kid": kid, "typ": "JWT"}),
        serde_json::json!({"alg": "EdDSA", "kid": kid, "typ": "id_token+jwt"}),
        serde_json::json!({"alg": "EdDSA", "kid": kid}),
    ] {
        let token = sign_with(&key, &header, &claims);
        assert!(verify_with(&http_json(app, "/.well-known/jwks.json").await, &token).is_some(), "signed by our key");
        assert!(!introspect(app, &token).await.active, "{header} introspected active");
    }
}

/// Once a retired key is no longer published, nothing it signs is accepted, even a token whose
/// claims are fresh (a leaked old key, or one signed under a longer TTL).
async fn tokens_of_an_unpublished_key_are_refused(app: &TestApp) {
    let session = app.sign_up("unpublished@example.com").await.session_token;
    let issued = issue(app, &session, AUDIENCE).await.unwrap().access_token;
    let old_kid = header_kid(&issued);
    let old_key = private_key(app, &old_kid).await;
    let mut config = crate::helpers::test_config(&app.db, std::env::temp_dir().as_path());
    mesh_config(&mut config);
    let rotated = rotate_offline(&config, app.clock.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while published_kids(app).await.len() < 2 {
        assert!(Instant::now() < deadline, "the new key was not published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the switch and the old key's retention.
    app.clock.advance(TimeDelta::minutes(5 + 17));
    assert_eq!(published_kids(app).await, std::slice::from_ref(&rotated.kid));
    let header = |kid: &str| serde_json::json!({"alg": "EdDSA", "kid": kid, "typ": "at+jwt"});
    let claims = fresh_claims(&issued, app.clock.now());
    let current = sign_with(&private_key(app, &rotated.kid).await, &header(&rotated.kid), &claims);
    assert!(introspect(app, &current).await.active, "the same claims under the published key");
    let stale = sign_with(&old_key, &header(&old_kid), &claims);
    assert!(!introspect(app, &stale).await.active, "a token of an unpublished key introspected active");
}

fn header_kid(jwt: &str) -> String {
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').next().unwrap()).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn admin_needs_service_credentials(app: &TestApp) {
    let up = app.sign_up("managed@example.com").await;
    let user_id = up.user.unwrap().id;
    let list = pb::ListUsersRequest { page_size: 10, page_token: String::new(), email_filter: "managed".into() };
    assert_eq!(admin(app).list_users(list.clone()).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(
        admin(app).list_users(bearer(list.clone(), &up.session_token)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let mut wrong = Request::new(list.clone());
    wrong.metadata_mut().insert("x-api-key", "not-the-key".parse().unwrap());
    assert_eq!(admin(app).list_users(wrong).await.unwrap_err().code(), Code::Unauthenticated);

    let users = admin(app).list_users(with_key(list)).await.unwrap().into_inner().users;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].user.as_ref().unwrap().email, "managed@example.com");

    // A disabled user's session stops validating at once, and sign-in is refused.
    let disabled = admin(app)
        .disable_user(with_key(pb::DisableUserRequest { user_id: user_id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert!(disabled.disabled_at.is_some());
    assert_eq!(app.get_session(&up.session_token).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(app.sign_in("managed@example.com", PASSWORD).await.unwrap_err().code(), Code::Unauthenticated);
    admin(app).enable_user(with_key(pb::EnableUserRequest { user_id: user_id.clone() })).await.unwrap();
    let again = app.sign_in("managed@example.com", PASSWORD).await.unwrap().session_token;

    let revoked = admin(app)
        .revoke_user_sessions(with_key(pb::RevokeUserSessionsRequest { user_id: user_id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.revoked_count, 1);
    assert_eq!(app.get_session(&again).await.unwrap_err().code(), Code::Unauthenticated);

    let events = admin(app)
        .list_user_audit_events(with_key(pb::ListUserAuditEventsRequest {
            user_id: user_id.clone(),
            page_size: 0,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(events.iter().any(|e| e.event == "user_disabled"));
    let stored =
        app.db.query_texts("SELECT COALESCE(reason, '') FROM audit_events WHERE event = 'user_disabled'").await;
    assert_eq!(stored, ["by api-key:tests"], "admin calls carry the service's identity");

    let bad = admin(app).get_user(with_key(pb::GetUserRequest { user_id: "nope".into() })).await.unwrap_err();
    assert_eq!(violated_fields(&bad), ["user_id"]);
    admin(app).delete_user(with_key(pb::DeleteUserRequest { user_id: user_id.clone() })).await.unwrap();
    let gone = admin(app).get_user(with_key(pb::GetUserRequest { user_id })).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

/// The counters count this test's own calls exactly: the server runs as a child process, so
/// its process-wide registry holds no other test's traffic.
async fn metrics_count_the_traffic(db: &crate::helpers::TestDb) {
    use gatehouse::proto::v1::auth_service_client::AuthServiceClient;
    let server = crate::shutdown::ServerProcess::start(db, &[]).await;
    let mut auth = AuthServiceClient::new(server.channel.clone());
    let email = "metrics@example.com";
    let sign_up = pb::SignUpRequest { email: email.into(), password: PASSWORD.into(), name: "M".into(), profile: None };
    auth.sign_up(sign_up).await.unwrap();
    let wrong = pb::SignInRequest { email: email.into(), password: "not the password".into() };
    assert_eq!(auth.sign_in(wrong).await.unwrap_err().code(), Code::Unauthenticated);
    for _ in 0..2 {
        auth.sign_in(pb::SignInRequest { email: email.into(), password: PASSWORD.into() }).await.unwrap();
    }
    let body = reqwest::get(format!("http://{}/metrics", server.http_addr)).await.unwrap().text().await.unwrap();
    let value = |series: &str| -> f64 {
        body.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from\n{body}"))
    };
    let rpc = |method: &str, code: &str| {
        value(&format!(r#"gatehouse_rpc_requests_total{{method="/gatehouse.v1.AuthService/{method}",code="{code}"}}"#))
    };
    assert_eq!(rpc("SignUp", "Ok"), 1.0);
    assert_eq!(rpc("SignIn", "Ok"), 2.0);
    assert_eq!(rpc("SignIn", "Unauthenticated"), 1.0);
    assert_eq!(value("gatehouse_sign_in_failures_total"), 1.0);
    assert_eq!(value("gatehouse_password_hash_queue_depth"), 0.0);
    assert!(value("gatehouse_db_pool_max_connections") >= 1.0);
    for needle in [r#"gatehouse_rpc_duration_seconds_bucket{le="#, "gatehouse_db_pool_connections"] {
        assert!(body.contains(needle), "{needle} missing from\n{body}");
    }
}

crate::backends! {
    app:
        access_tokens_verify_offline => mesh_config,
        introspection_follows_the_session => mesh_config,
        rotation_keeps_old_tokens_until_they_expire => mesh_config,
        tokens_of_another_type_are_refused => mesh_config,
        tokens_of_an_unpublished_key_are_refused => mesh_config,
        admin_needs_service_credentials => mesh_config;
    (fixture crate::helpers::TestDb): metrics_count_the_traffic;
    own: watch_across_replicas, rotation_across_replicas, hs256_compatibility_mode;
}

crate::through_pgbouncer! {
    app:
        access_tokens_verify_offline => mesh_config,
        introspection_follows_the_session => mesh_config;
    own: watch_across_replicas;
}

/// Revocations made on one replica reach a watcher on another within a second, and a watcher
/// that reconnects resumes from its last id without losing any.
async fn watch_across_replicas(backend: Backend) {
    let Some(one) = spawn_app_with(backend, mesh_config).await else { return };
    let two = spawn_on(one.db.clone(), mesh_config).await;
    let mut sessions = Vec::new();
    one.sign_up("watched@example.com").await;
    for _ in 0..4 {
        sessions.push(one.sign_in("watched@example.com", PASSWORD).await.unwrap());
    }
    let mut stream = tokens(&one)
        .watch_revocations(with_key(pb::WatchRevocationsRequest { after_id: 0 }))
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    two.auth().sign_out(bearer(pb::SignOutRequest {}, &sessions[0].session_token)).await.unwrap();
    let first =
        tokio::time::timeout(Duration::from_secs(1), stream.next()).await.expect("within a second").unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(first.session_id, sessions[0].session.as_ref().unwrap().id);
    assert_eq!(first.reason, "sign_out");
    drop(stream);

    // While nobody watches, two more revocations happen on the other replica.
    two.auth().sign_out(bearer(pb::SignOutRequest {}, &sessions[1].session_token)).await.unwrap();
    two.auth()
        .revoke_other_sessions(bearer(pb::RevokeOtherSessionsRequest {}, &sessions[3].session_token))
        .await
        .unwrap();
    let mut resumed = tokens(&one)
        .watch_revocations(with_key(pb::WatchRevocationsRequest { after_id: first.id }))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(2), resumed.next())
            .await
            .expect("resumed events")
            .unwrap()
            .unwrap();
        seen.push(event);
    }
    assert!(seen.windows(2).all(|w| w[0].id < w[1].id), "in order");
    assert_eq!(seen[0].session_id, sessions[1].session.as_ref().unwrap().id);
    let rest: Vec<&str> = seen[1..].iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(rest, ["other_sessions", "other_sessions"]);
    // Watching needs service credentials.
    let refused = tokens(&one).watch_revocations(pb::WatchRevocationsRequest { after_id: 0 }).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut two = two;
    two.stop().await;
    one.finish().await;
}

/// What a verifier has seen: every token still unexpired, and every key set it may still hold
/// in its cache (fetched within the last max-age).
#[derive(Default)]
struct Verifier {
    tokens: Vec<(String, i64)>,
    snapshots: Vec<(i64, Value)>,
    /// (token, key set) pairs already verified: the sets repeat, and unoptimised ed25519 is slow.
    verified: std::collections::HashSet<(String, String)>,
}

const ROTATION_MAX_AGE: i64 = 60;

/// At one moment: each replica issues a token and serves its key set; then every unexpired
/// token must verify against every key set a verifier may hold, and be active on each replica.
/// Returns the kids the replicas signed with.
async fn sample(apps: &[&TestApp], session: &str, verifier: &mut Verifier, moment: &str) -> Vec<String> {
    let now = apps[0].clock.now().timestamp();
    let mut kids = Vec::new();
    for app in apps {
        let issued = issue(app, session, AUDIENCE).await.unwrap();
        kids.push(header_kid(&issued.access_token));
        verifier.tokens.push((issued.access_token, issued.expires_at.unwrap().seconds));
    }
    for app in apps {
        verifier.snapshots.push((now, http_json(app, "/.well-known/jwks.json").await));
    }
    verifier.tokens.retain(|(_, exp)| *exp > now);
    verifier.snapshots.retain(|(at, _)| now < at + ROTATION_MAX_AGE);
    for (token, _) in &verifier.tokens {
        for (at, jwks) in &verifier.snapshots {
            if !verifier.verified.insert((token.clone(), jwks.to_string())) {
                continue;
            }
            assert!(
                verify_with(jwks, token).is_some(),
                "{moment}: a token signed by {} does not verify against the set served at {at} ({} s ago): {jwks}",
                header_kid(token),
                now - at
            );
        }
    }
    // Gatehouse's own check, on the oldest and newest tokens.
    let n = verifier.tokens.len();
    for (token, _) in verifier.tokens.iter().take(2).chain(verifier.tokens.iter().skip(n.saturating_sub(2))) {
        for app in apps {
            assert!(introspect(app, token).await.active, "{moment}: {} refused by a replica", header_kid(token));
        }
    }
    kids
}

/// Rotation across two replicas on one database, through `gatehouse keys rotate`'s code path,
/// with a 200 ms key check interval and a 1 min JWKS max-age: at every sampled moment every
/// unexpired token from either replica verifies against the key set served by either
/// replica, and against any copy a verifier cached within the max-age.
async fn rotation_across_replicas(backend: Backend) {
    let check = Duration::from_millis(200);
    let tweak = move |c: &mut Config| {
        mesh_config(c);
        c.mesh.signing_key_check_interval = check;
        c.mesh.jwks_max_age = Duration::from_secs(ROTATION_MAX_AGE as u64);
    };
    let Some(one) = spawn_app_with(backend, tweak).await else { return };
    let two = spawn_on(one.db.clone(), tweak).await;
    let apps = [&one, &two];
    let session = one.sign_up("rotating@example.com").await.session_token;
    let response = reqwest::get(format!("http://{}/.well-known/jwks.json", one.http_addr)).await.unwrap();
    assert_eq!(response.headers()["cache-control"], "public, max-age=60");

    let mut verifier = Verifier::default();
    let old_kid = sample(&apps, &session, &mut verifier, "before the rotation").await[0].clone();
    let mut config = crate::helpers::test_config(&one.db, std::env::temp_dir().as_path());
    tweak(&mut config);
    let rotated = rotate_offline(&config, one.clock.clone()).await;
    let signs_from = rotated.activates_at;
    assert_eq!(signs_from - one.clock.now(), TimeDelta::milliseconds(60_200), "max-age + check interval");
    // Neither replica has re-read the keys yet.
    sample(&apps, &session, &mut verifier, "just after the rotation").await;
    let step = TimeDelta::seconds(30);
    // Through the pre-publication, the switch, and until the old key's retention has passed
    // (TTL 10 min + max-age + check interval + 60 s after the switch).
    let end = signs_from + TimeDelta::minutes(13);
    while one.clock.now() <= end {
        let now = one.clock.now();
        let t = (now - signs_from).num_milliseconds();
        // Once right after the clocks moved, once after both replicas have re-read the keys.
        for moment in ["after a step", "after a key check"] {
            let kids = sample(&apps, &session, &mut verifier, &format!("{moment}, t = {t} ms")).await;
            let expected = if now < signs_from { &old_kid } else { &rotated.kid };
            assert_eq!(kids, [expected.clone(), expected.clone()], "both replicas sign with one key at t = {t} ms");
            tokio::time::sleep(check * 2).await;
        }
        for app in apps {
            app.clock.advance(step);
        }
    }
    for app in apps {
        assert_eq!(
            published_kids(app).await,
            std::slice::from_ref(&rotated.kid),
            "the old key is gone once no token of it lives"
        );
    }
    let mut two = two;
    two.stop().await;
    one.finish().await;
}

/// HS256 compatibility: existing code that checks an HMAC with the shared secret and reads
/// `sub` keeps working.
async fn hs256_compatibility_mode(backend: Backend) {
    const SHARED: &str = "better-auth-shared-secret-0123456789";
    let Some(app) = spawn_app_with(backend, |c| {
        mesh_config(c);
        c.mesh.hs256_compat = true;
        c.mesh.better_auth_secret = Some(secrecy::SecretString::from(SHARED.to_owned()));
    })
    .await
    else {
        return;
    };
    let up = app.sign_up("legacy@example.com").await;
    let jwt = issue(&app, &up.session_token, AUDIENCE).await.unwrap().access_token;
    let (unsigned, signature) = jwt.rsplit_once('.').unwrap();
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SHARED.as_bytes()).unwrap();
    mac.update(unsigned.as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap()).expect("HMAC with the shared secret");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(unsigned.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["sub"], up.user.unwrap().id.as_str());
    assert!(introspect(&app, &jwt).await.active);
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(unsigned.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["typ"], "at+jwt");
    // The shared secret signs other JWTs too (a legacy app's own): only access tokens count.
    let other = {
        let h = URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": "HS256", "typ": "JWT"}).to_string());
        let unsigned = format!("{h}.{}", unsigned.split('.').nth(1).unwrap());
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SHARED.as_bytes()).unwrap();
        mac.update(unsigned.as_bytes());
        format!("{unsigned}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    };
    assert!(!introspect(&app, &other).await.active, "a JWT of another type is refused");
    app.finish().await;
}
