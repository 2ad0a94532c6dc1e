//! Sign-in with Google, GitHub and a generic OIDC provider, against stand-in providers on
//! loopback. The browser's part is played by following `authorization_url` without
//! redirects and reading the callback's `code` and `state` from `Location`.

use std::{sync::Arc, time::Duration};

use chrono::TimeDelta;
use gatehouse::{
    config::OidcProviderConfig,
    proto::v1::{self as pb},
};
use secrecy::SecretString;
use tonic::{Code, Request, Status};

use crate::{
    helpers::{Backend, PASSWORD, TestApp, TestDb, bearer, spawn_on, violated_fields},
    idp::{IdTokenMode, Idp, IdpUser, TokenFailure},
};

const GOOGLE_REDIRECT: &str = "https://app.example/auth/google/callback";
const GOOGLE_OTHER_REDIRECT: &str = "https://app.example/auth/google/alt";
const GITHUB_REDIRECT: &str = "https://app.example/auth/github/callback";
const ACME_REDIRECT: &str = "https://app.example/auth/acme/callback";

/// A server wired to three stand-in providers.
struct Env {
    app: TestApp,
    google: Idp,
    github: Idp,
    acme: Idp,
    browser: reqwest::Client,
}

fn person(sub: &str, email: &str, verified: bool) -> IdpUser {
    IdpUser { sub: sub.into(), email: Some(email.into()), email_verified: verified, name: "Ada Lovelace".into() }
}

impl Env {
    async fn start(backend: Backend) -> Option<Self> {
        let db = Arc::new(TestDb::create(backend).await?);
        let google = Idp::start(
            "google-client",
            "google-secret",
            &[GOOGLE_REDIRECT, GOOGLE_OTHER_REDIRECT],
            person("g-1001", "ada@example.com", true),
        )
        .await;
        let github =
            Idp::start("github-client", "github-secret", &[GITHUB_REDIRECT], person("5001", "ada@example.com", true))
                .await;
        github.with(|s| s.access_ttl = None);
        let acme =
            Idp::start("acme-client", "acme-secret", &[ACME_REDIRECT], person("acme|77", "grace@acme.example", true))
                .await;
        acme.with(|s| s.email_in_id_token = false);
        let (g, gh, a) = (google.base.clone(), github.base.clone(), acme.base.clone());
        let app = spawn_on(db, move |c| {
            c.oauth.oauth_http_timeout = Duration::from_secs(1);
            c.oauth.google.client_id = Some("google-client".into());
            c.oauth.google.client_secret = Some(SecretString::from("google-secret"));
            c.oauth.google.redirect_uris = vec![GOOGLE_REDIRECT.into(), GOOGLE_OTHER_REDIRECT.into()];
            c.oauth.google.issuer = g;
            c.oauth.github.client_id = Some("github-client".into());
            c.oauth.github.client_secret = Some(SecretString::from("github-secret"));
            c.oauth.github.redirect_uris = vec![GITHUB_REDIRECT.into()];
            c.oauth.github.authorize_url = format!("{gh}/authorize");
            c.oauth.github.token_url = format!("{gh}/token");
            c.oauth.github.api_url = gh;
            c.oauth.oidc = vec![OidcProviderConfig {
                name: "acme".into(),
                issuer: a,
                client_id: "acme-client".into(),
                client_secret: SecretString::from("acme-secret"),
                redirect_uris: vec![ACME_REDIRECT.into()],
                scopes: vec!["openid".into(), "email".into()],
                algorithms: vec!["RS256".into()],
            }];
        })
        .await;
        for idp in [&google, &github, &acme] {
            idp.with(|s| s.clock = Some(app.clock.clone()));
        }
        let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Some(Self { app, google, github, acme, browser })
    }

    async fn finish(self) {
        self.app.finish().await;
    }

    fn redirect_for(provider: &str) -> &'static str {
        match provider {
            "google" => GOOGLE_REDIRECT,
            "github" => GITHUB_REDIRECT,
            _ => ACME_REDIRECT,
        }
    }

    async fn start_flow(
        &self,
        provider: &str,
        redirect_uri: &str,
        token: Option<&str>,
    ) -> Result<pb::StartOAuthResponse, Status> {
        let msg = pb::StartOAuthRequest { provider: provider.into(), redirect_uri: redirect_uri.into() };
        let req = match token {
            Some(t) => bearer(msg, t),
            None => Request::new(msg),
        };
        self.app.auth().start_o_auth(req).await.map(tonic::Response::into_inner)
    }

    /// Plays the browser: GET the authorization URL and read the callback parameters.
    async fn authorize(&self, url: &str) -> (String, String) {
        let res = self.browser.get(url).send().await.unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER, "{url}");
        let location = res.headers()["location"].to_str().unwrap();
        let callback = reqwest::Url::parse(location).unwrap();
        let get = |k: &str| {
            callback
                .query_pairs()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| panic!("no {k} in {location}"))
        };
        (get("code"), get("state"))
    }

    async fn complete(
        &self,
        provider: &str,
        code: &str,
        state: &str,
        redirect_uri: &str,
        token: Option<&str>,
    ) -> Result<pb::CompleteOAuthResponse, Status> {
        let msg = pb::CompleteOAuthRequest {
            provider: provider.into(),
            code: code.into(),
            state: state.into(),
            redirect_uri: redirect_uri.into(),
        };
        let mut req = match token {
            Some(t) => bearer(msg, t),
            None => Request::new(msg),
        };
        req.metadata_mut().insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
        req.metadata_mut().insert("x-forwarded-user-agent", "TestBrowser/1.0".parse().unwrap());
        self.app.auth().complete_o_auth(req).await.map(tonic::Response::into_inner)
    }

    /// A whole sign-in with `provider`.
    async fn sign_in(&self, provider: &str) -> Result<pb::CompleteOAuthResponse, Status> {
        self.flow(provider, None).await
    }

    async fn flow(&self, provider: &str, token: Option<&str>) -> Result<pb::CompleteOAuthResponse, Status> {
        let redirect = Self::redirect_for(provider);
        let started = self.start_flow(provider, redirect, token).await?;
        let (code, state) = self.authorize(&started.authorization_url).await;
        assert_eq!(state, started.state);
        self.complete(provider, &code, &state, redirect, token).await
    }

    async fn accounts(&self, token: &str) -> Vec<pb::LinkedAccount> {
        self.app.auth().list_accounts(bearer(pb::ListAccountsRequest {}, token)).await.unwrap().into_inner().accounts
    }

    async fn unlink(&self, token: &str, provider: &str, account_id: &str) -> Result<(), Status> {
        self.app
            .auth()
            .unlink_account(bearer(
                pb::UnlinkAccountRequest { provider: provider.into(), account_id: account_id.into() },
                token,
            ))
            .await
            .map(|_| ())
    }

    async fn provider_token(&self, token: &str, provider: &str) -> Result<pb::GetProviderAccessTokenResponse, Status> {
        self.app
            .auth()
            .get_provider_access_token(bearer(
                pb::GetProviderAccessTokenRequest { provider: provider.into(), account_id: String::new() },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }
}

impl crate::helpers::Fixture for Env {
    async fn start(backend: Backend, _tweak: fn(&mut gatehouse::Config)) -> Option<Self> {
        Env::start(backend).await
    }

    async fn finish(self) {
        Env::finish(self).await;
    }
}

crate::backends! {
    (fixture Env):
    google_sign_in_creates_a_verified_user,
    returning_user_signs_in_to_the_same_account,
    github_uses_the_primary_verified_email,
    generic_oidc_provider_reads_userinfo,
    links_by_verified_email,
    refuses_to_link_an_unverified_email,
    unverified_provider_email_creates_no_account,
    links_from_a_signed_in_session,
    unlink_keeps_the_last_way_to_sign_in,
    state_cannot_be_replayed,
    state_expires,
    state_is_bound_to_its_provider,
    redirect_uri_must_match_exactly,
    pkce_mismatch_is_rejected_by_the_provider,
    tampered_id_tokens_are_rejected,
    provider_errors_and_outages,
    provider_access_token_is_refreshed,
    database_holds_no_plaintext_provider_token,
    unknown_provider_and_missing_fields,
    delete_account_erases_linked_accounts,
    linking_to_an_unverified_account_is_refused,
    owners_reset_removes_pre_proof_links_sessions_and_password,
    owners_verification_removes_pre_proof_links,
    classic_federated_merge_waits_for_the_owners_proof,
    asserted_links_survive_the_owners_reset,
    linking_tells_the_owner,
    provider_only_accounts_reauthenticate_by_a_recent_sign_in,
    a_refresh_against_an_unavailable_provider_is_unavailable,
    a_provider_sign_in_asks_for_the_second_factor;
}

async fn google_sign_in_creates_a_verified_user(env: &Env) {
    let started = env.start_flow("google", GOOGLE_REDIRECT, None).await.unwrap();
    let url = reqwest::Url::parse(&started.authorization_url).unwrap();
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert!(started.authorization_url.starts_with(&env.google.base));
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], GOOGLE_REDIRECT);
    assert_eq!(q["state"], started.state);
    assert!(q["nonce"].len() >= 43);
    assert!(started.state.len() >= 43);

    let (code, state) = env.authorize(&started.authorization_url).await;
    let done = env.complete("google", &code, &state, GOOGLE_REDIRECT, None).await.unwrap();
    assert!(done.is_new_user);
    let user = done.user.unwrap();
    assert_eq!(user.email, "ada@example.com");
    assert!(user.email_verified);
    assert_eq!(user.name, "Ada Lovelace");
    assert!(done.session_token.starts_with("gate_"));
    let session = env.app.get_session(&done.session_token).await.unwrap();
    assert_eq!(session.user.unwrap().id, user.id);
    let s = session.session.unwrap();
    assert_eq!(s.ip_address, "203.0.113.7");
    assert_eq!(s.user_agent, "TestBrowser/1.0");

    // Minimal scopes, and a fresh S256 verifier of 43-128 characters.
    env.google.with(|s| {
        assert_eq!(s.requested_scopes, ["openid", "email", "profile"]);
        assert_eq!(s.verifiers.len(), 1);
        assert!((43..=128).contains(&s.verifiers[0].len()));
    });
    let accounts = env.accounts(&done.session_token).await;
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].provider, "google");
    assert_eq!(accounts[0].account_id, "g-1001");
    assert_eq!(accounts[0].email, "ada@example.com");
    assert!(accounts[0].email_verified);

    // The password sign-in does not work for a provider-only user.
    let err = env.app.sign_in("ada@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

async fn returning_user_signs_in_to_the_same_account(env: &Env) {
    let first = env.sign_in("google").await.unwrap();
    let second = env.sign_in("google").await.unwrap();
    assert!(!second.is_new_user);
    assert_eq!(second.user.unwrap().id, first.user.unwrap().id);
    assert_ne!(second.session_token, first.session_token);
    assert_eq!(env.app.db.count("users").await, 1);
    assert_eq!(env.app.db.count("accounts").await, 1);
    assert_eq!(env.app.db.count("sessions").await, 2);
}

async fn github_uses_the_primary_verified_email(env: &Env) {
    env.github.with(|s| s.user = person("5001", "octo@example.com", true));
    let done = env.sign_in("github").await.unwrap();
    assert!(done.is_new_user);
    let user = done.user.unwrap();
    assert_eq!(user.email, "octo@example.com");
    assert!(user.email_verified);
    assert_eq!(user.image.as_deref(), Some("https://avatars.example/5001"));
    let accounts = env.accounts(&done.session_token).await;
    assert_eq!(accounts[0].provider, "github");
    assert_eq!(accounts[0].account_id, "5001");
    env.github.with(|s| {
        assert_eq!(s.requested_scopes, ["read:user", "user:email"]);
    });
}

async fn generic_oidc_provider_reads_userinfo(env: &Env) {
    // The acme stand-in leaves the email out of its ID tokens.
    let done = env.sign_in("acme").await.unwrap();
    assert!(done.is_new_user);
    let user = done.user.unwrap();
    assert_eq!(user.email, "grace@acme.example");
    assert!(user.email_verified);
    let accounts = env.accounts(&done.session_token).await;
    assert_eq!(accounts[0].provider, "acme");
    assert_eq!(accounts[0].account_id, "acme|77");
}

async fn links_by_verified_email(env: &Env) {
    // Google vouches for ada@example.com; GitHub does too: one user, two accounts.
    let google = env.sign_in("google").await.unwrap();
    let github = env.sign_in("github").await.unwrap();
    assert!(!github.is_new_user);
    let id = google.user.unwrap().id;
    assert_eq!(github.user.unwrap().id, id);
    assert_eq!(env.app.db.count("users").await, 1);
    let accounts = env.accounts(&github.session_token).await;
    let mut providers: Vec<_> = accounts.iter().map(|a| a.provider.as_str()).collect();
    providers.sort_unstable();
    assert_eq!(providers, ["github", "google"]);

    // A password user whose email Gatehouse has verified is linked too.
    let up = env.app.sign_up("grace@acme.example").await;
    env.app.db.execute("UPDATE users SET email_verified = true WHERE email = 'grace@acme.example'").await;
    let acme = env.sign_in("acme").await.unwrap();
    assert!(!acme.is_new_user);
    assert_eq!(acme.user.unwrap().id, up.user.unwrap().id);
}

async fn refuses_to_link_an_unverified_email(env: &Env) {
    // The local account's email is not verified: no link, whatever the provider says.
    let up = env.app.sign_up("ada@example.com").await;
    let err = env.sign_in("google").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("link"), "{}", err.message());
    assert_eq!(env.app.db.count("accounts").await, 0);
    assert_eq!(env.app.db.count("users").await, 1);
    // The existing account is untouched and still works.
    assert!(env.app.get_session(&up.session_token).await.is_ok());

    // The provider does not vouch for the email, though the local one is verified.
    env.app.db.execute("UPDATE users SET email_verified = true").await;
    env.github.with(|s| s.user = person("5002", "ada@example.com", false));
    let err = env.sign_in("github").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(env.app.db.count("accounts").await, 0);
    assert_eq!(env.app.db.count("users").await, 1);
}

/// Pre-account hijacking, non-verifying IdP: an address the provider did not verify creates no
/// account that the real owner would later collide with.
async fn unverified_provider_email_creates_no_account(env: &Env) {
    env.google.with(|s| s.user = person("g-2002", "new@example.com", false));
    let err = env.sign_in("google").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("has not verified this email address"), "{err:?}");
    assert_eq!(env.app.db.count("users").await, 0);
    assert_eq!(env.app.db.count("accounts").await, 0);
    // The owner signs up with the address as usual.
    env.app.sign_up("new@example.com").await;
}

async fn links_from_a_signed_in_session(env: &Env) {
    let up = env.app.sign_up_verified("reader@example.com").await;
    let token = up.session_token.clone();
    // The provider's email differs: linking from a session does not depend on it.
    let linked = env.flow("google", Some(&token)).await.unwrap();
    assert!(!linked.is_new_user);
    assert!(linked.session_token.is_empty(), "a link creates no session");
    assert_eq!(linked.user.unwrap().id, up.user.clone().unwrap().id);
    let accounts = env.accounts(&token).await;
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].email, "ada@example.com");
    // Signing in with Google now reaches the same user.
    let again = env.sign_in("google").await.unwrap();
    assert_eq!(again.user.unwrap().id, up.user.clone().unwrap().id);

    // The link and the sign-in are in the user's security history.
    let history = env
        .app
        .auth()
        .list_audit_events(bearer(pb::ListAuditEventsRequest { page_size: 50, page_token: String::new() }, &token))
        .await
        .unwrap()
        .into_inner()
        .events;
    let linked = history.iter().find(|e| e.event == "oauth_linked").expect("oauth_linked audited");
    assert_eq!(linked.ip_address, "203.0.113.7");
    assert_eq!(linked.user_agent, "TestBrowser/1.0");
    assert!(history.iter().any(|e| e.event == "sign_in" && e.outcome == "success" && e.ip_address == "203.0.113.7"));

    // A link flow must be finished by the user who started it.
    let started = env.start_flow("github", GITHUB_REDIRECT, Some(&token)).await.unwrap();
    let (code, state) = env.authorize(&started.authorization_url).await;
    let err = env.complete("github", &code, &state, GITHUB_REDIRECT, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(env.app.db.count("accounts").await, 1);

    // A provider account linked to someone else cannot be linked again.
    let other = env.app.sign_up_verified("other@example.com").await;
    let err = env.flow("google", Some(&other.session_token)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(env.accounts(&other.session_token).await.is_empty());

    // An invalid bearer token is refused rather than ignored.
    let err = env.start_flow("google", GOOGLE_REDIRECT, Some("gate_not-a-token")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

async fn unlink_keeps_the_last_way_to_sign_in(env: &Env) {
    let google = env.sign_in("google").await.unwrap();
    let token = google.session_token.clone();
    let err = env.unlink(&token, "google", "g-1001").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(env.app.db.count("accounts").await, 1);

    let github = env.flow("github", Some(&token)).await.unwrap();
    assert!(github.session_token.is_empty());
    assert_eq!(env.accounts(&token).await.len(), 2);
    env.unlink(&token, "google", "g-1001").await.unwrap();
    let left = env.accounts(&token).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].provider, "github");
    let err = env.unlink(&token, "github", "5001").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = env.unlink(&token, "google", "g-1001").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // A user with a password may unlink their only account.
    let up = env.app.sign_up_verified("reader@example.com").await;
    env.acme.with(|s| s.user = person("acme|88", "x@acme.example", true));
    env.flow("acme", Some(&up.session_token)).await.unwrap();
    env.unlink(&up.session_token, "acme", "acme|88").await.unwrap();
    assert!(env.accounts(&up.session_token).await.is_empty());
}

async fn state_cannot_be_replayed(env: &Env) {
    let started = env.start_flow("google", GOOGLE_REDIRECT, None).await.unwrap();
    let (code, state) = env.authorize(&started.authorization_url).await;
    env.complete("google", &code, &state, GOOGLE_REDIRECT, None).await.unwrap();
    let err = env.complete("google", &code, &state, GOOGLE_REDIRECT, None).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["state"]);

    // An altered or invented state is refused, and the provider is never asked.
    let before = env.google.with(|s| s.verifiers.len());
    let started = env.start_flow("google", GOOGLE_REDIRECT, None).await.unwrap();
    let (code, state) = env.authorize(&started.authorization_url).await;
    let last = if state.ends_with('A') { 'B' } else { 'A' };
    let altered = format!("{}{last}", &state[..state.len() - 1]);
    let err = env.complete("google", &code, &altered, GOOGLE_REDIRECT, None).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["state"]);
    assert_eq!(env.google.with(|s| s.verifiers.len()), before);
    assert_eq!(env.app.db.count("users").await, 1);
    assert_eq!(env.app.db.count("sessions").await, 1);
}

async fn state_expires(env: &Env) {
    let started = env.start_flow("google", GOOGLE_REDIRECT, None).await.unwrap();
    let (code, state) = env.authorize(&started.authorization_url).await;
    env.app.clock.advance(TimeDelta::minutes(10));
    let err = env.complete("google", &code, &state, GOOGLE_REDIRECT, None).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["state"]);
    assert_eq!(env.app.db.count("users").await, 0);

    // Just inside the window it works.
    let started = env.start_flow("google", GOOGLE_REDIRECT, None).await.unwrap();
    let (code, state) = env.authorize(&started.authorization_url).await;
    env.app.clock.advance(TimeDelta::minutes(10) - TimeDelta::seconds(1));
    env.complete("google", &code, &state, GOOGLE_REDIRECT, None).await.unwrap();
}

async fn state_is_bound_to_its_provider(env: &Env) {
    let started = env.start_flow("google", GOOGLE_REDIRECT, None).await.unwrap();
    let (code, state) = env.authorize(&started.authorization_url).await;
    let err = env.complete("github", &code, &state, GITHUB_REDIRECT, None).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["state"]);
    // The state was spent by the mix-up attempt.
    let err = env.complete("google", &code, &state, GOOGLE_REDIRECT, None).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["state"]);
    assert_eq!(env.app.db.count("users").await, 0);
    assert_eq!(env.app.db.count("accounts").await, 0);
}

async fn redirect_uri_must_match_exactly(env: &Env) {
    for bad in [
        "https://app.example/auth/google/callback/../../evil",
        "https://app.example/auth/google/callback?next=https://evil.example",
        "https://app.example/auth/google/callbackx",
        "https://APP.example/auth/google/callback",
        "https://evil.example/",
        GITHUB_REDIRECT,
        "",
    ] {
        let err = env.start_flow("google", bad, None).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["redirect_uri"], "{bad}");
    }
    // Completing with another registered URI than the flow started with is refused.
    let started = env.start_flow("google", GOOGLE_REDIRECT, None).await.unwrap();
    let (code, state) = env.authorize(&started.authorization_url).await;
    let err = env.complete("google", &code, &state, GOOGLE_OTHER_REDIRECT, None).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["state"]);
    assert_eq!(env.app.db.count("oauth_states").await, 1);
}

async fn pkce_mismatch_is_rejected_by_the_provider(env: &Env) {
    let started = env.start_flow("google", GOOGLE_REDIRECT, None).await.unwrap();
    // An attacker swaps in their own challenge: the verifier Gatehouse holds no longer fits.
    let mut url = reqwest::Url::parse(&started.authorization_url).unwrap();
    let pairs: Vec<(String, String)> =
        url.query_pairs()
            .into_owned()
            .map(|(k, v)| {
                if k == "code_challenge" {
                    (k, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned())
                } else {
                    (k, v)
                }
            })
            .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let (code, state) = env.authorize(url.as_str()).await;
    let err = env.complete("google", &code, &state, GOOGLE_REDIRECT, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("rejected"), "{}", err.message());
    assert_eq!(env.app.db.count("users").await, 0);
}

async fn tampered_id_tokens_are_rejected(env: &Env) {
    for mode in [
        IdTokenMode::BadSignature,
        IdTokenMode::WrongAudience,
        IdTokenMode::WrongNonce,
        IdTokenMode::Expired,
        IdTokenMode::WrongIssuer,
        IdTokenMode::AlgNone,
    ] {
        env.google.with(|s| s.id_token_mode = mode);
        let err = env.sign_in("google").await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{mode:?}: {err:?}");
        assert_eq!(err.message(), "the identity provider's ID token is invalid", "{mode:?}");
    }
    assert_eq!(env.app.db.count("users").await, 0);
    assert_eq!(env.app.db.count("accounts").await, 0);
    env.google.with(|s| s.id_token_mode = IdTokenMode::Valid);
    env.sign_in("google").await.unwrap();
}

async fn provider_errors_and_outages(env: &Env) {
    // The provider rejects a code it never issued.
    let started = env.start_flow("google", GOOGLE_REDIRECT, None).await.unwrap();
    let err = env.complete("google", "made-up-code", &started.state, GOOGLE_REDIRECT, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // The token endpoint fails, then hangs past the timeout.
    // A 503 whose body is an OAuth error is still the provider being down, not a refusal.
    for failure in [TokenFailure::ServerError, TokenFailure::Slow, TokenFailure::TemporarilyUnavailable] {
        env.google.with(|s| s.token_failure = Some(failure));
        let err = env.sign_in("google").await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{failure:?}: {err:?}");
        assert!(!err.message().contains("127.0.0.1"), "{}", err.message());
    }
    env.google.with(|s| s.token_failure = None);

    // A provider that is down (acme has not been reached yet, so nothing is cached).
    env.acme.stop_now().await;
    let err = env.start_flow("acme", ACME_REDIRECT, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // Our client credentials are refused: a configuration error, answered generically.
    env.github.with(|s| s.client_secret = "rotated".into());
    let err = env.sign_in("github").await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(!err.message().contains("secret"));
    assert_eq!(env.app.db.count("users").await, 0);
}

async fn provider_access_token_is_refreshed(env: &Env) {
    let done = env.sign_in("google").await.unwrap();
    let token = done.session_token;
    let first = env.provider_token(&token, "google").await.unwrap();
    let issued = env.google.with(|s| s.issued.clone());
    assert!(issued.contains(&first.access_token));
    assert!(first.access_token.starts_with("idp-at-"));
    assert_eq!(first.scopes, ["openid", "email", "profile"]);
    // Still valid: the same token, no refresh.
    let again = env.provider_token(&token, "google").await.unwrap();
    assert_eq!(again.access_token, first.access_token);
    assert_eq!(env.google.with(|s| s.refreshes), 0);

    env.app.clock.advance(TimeDelta::hours(2));
    let refreshed = env.provider_token(&token, "google").await.unwrap();
    assert_ne!(refreshed.access_token, first.access_token);
    assert_eq!(env.google.with(|s| s.refreshes), 1);
    assert!(env.google.with(|s| s.issued.contains(&refreshed.access_token)));
    // The refreshed token was stored: asking again does not refresh again.
    let stored = env.provider_token(&token, "google").await.unwrap();
    assert_eq!(stored.access_token, refreshed.access_token);
    assert_eq!(env.google.with(|s| s.refreshes), 1);

    // GitHub's tokens do not expire here; no account at a provider is NOT_FOUND.
    let err = env.provider_token(&token, "acme").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    env.flow("github", Some(&token)).await.unwrap();
    let gh = env.provider_token(&token, "github").await.unwrap();
    assert!(gh.expires_at.is_none());

    // An expired token without a refresh token cannot be renewed.
    let up = env.app.sign_up_verified("reader@example.com").await;
    env.acme.with(|s| {
        s.user = person("acme|99", "r@acme.example", true);
        s.access_ttl = Some(60);
        s.issue_refresh_tokens = false;
    });
    env.flow("acme", Some(&up.session_token)).await.unwrap();

    env.app.clock.advance(TimeDelta::minutes(5));
    let err = env.provider_token(&up.session_token, "acme").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Without a session, nothing.
    let err = env
        .app
        .auth()
        .get_provider_access_token(pb::GetProviderAccessTokenRequest {
            provider: "google".into(),
            account_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

async fn database_holds_no_plaintext_provider_token(env: &Env) {
    let done = env.sign_in("google").await.unwrap();
    env.flow("github", Some(&done.session_token)).await.unwrap();
    env.app.clock.advance(TimeDelta::hours(2));
    env.provider_token(&done.session_token, "google").await.unwrap();
    // A started, unfinished flow keeps its verifier too.
    env.start_flow("google", GOOGLE_REDIRECT, None).await.unwrap();

    let mut secrets: Vec<String> = env.google.with(|s| s.issued.clone());
    secrets.extend(env.github.with(|s| s.issued.clone()));
    secrets.extend(env.google.with(|s| s.verifiers.clone()));
    assert!(secrets.len() >= 6);
    let db = &env.app.db;
    let mut stored: Vec<Vec<u8>> = Vec::new();
    for sql in [
        "SELECT access_token_enc FROM accounts",
        "SELECT refresh_token_enc FROM accounts WHERE refresh_token_enc IS NOT NULL",
        "SELECT id_token_enc FROM accounts WHERE id_token_enc IS NOT NULL",
        "SELECT pkce_verifier_enc FROM oauth_states",
    ] {
        stored.extend(db.query_blobs(sql).await);
    }
    assert!(stored.len() >= 5);
    stored.extend(
        db.query_texts("SELECT scopes || token_key_id || COALESCE(email, '') FROM accounts")
            .await
            .into_iter()
            .map(String::into_bytes),
    );
    if let TestDb::Sqlite { path, .. } = db.as_ref() {
        for file in [path.clone(), path.with_extension("db-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                stored.push(bytes);
            }
        }
    }
    for secret in &secrets {
        // Every secret carries a distinctive stretch well over 16 bytes.
        let probe = &secret.as_bytes()[secret.len().saturating_sub(24)..];
        for blob in &stored {
            assert!(!blob.windows(probe.len()).any(|w| w == probe), "a provider secret is stored in the clear");
        }
    }
    // The ciphertexts name their key.
    let kids = db.query_texts("SELECT token_key_id FROM accounts").await;
    assert!(kids.iter().all(|k| k.starts_with("k1-")));
}

async fn unknown_provider_and_missing_fields(env: &Env) {
    let err = env.start_flow("myspace", GOOGLE_REDIRECT, None).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["provider"]);
    let err = env.complete("google", "", "", "", None).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["code", "state", "redirect_uri"]);
    let err = env.app.auth().list_accounts(pb::ListAccountsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

async fn delete_account_erases_linked_accounts(env: &Env) {
    let up = env.app.sign_up_verified("reader@example.com").await;
    env.flow("google", Some(&up.session_token)).await.unwrap();
    env.start_flow("github", GITHUB_REDIRECT, Some(&up.session_token)).await.unwrap();
    assert_eq!(env.app.db.count("accounts").await, 1);
    env.app
        .auth()
        .delete_account(bearer(pb::DeleteAccountRequest { password: PASSWORD.into() }, &up.session_token))
        .await
        .unwrap();
    assert_eq!(env.app.db.count("accounts").await, 0);
    assert_eq!(env.app.db.count("oauth_states").await, 0);
    assert_eq!(env.app.db.count("users").await, 0);
}

const VICTIM: &str = "victim@example.com";

/// The attacker's own GitHub account (verified, but for the attacker's address).
fn mallory() -> IdpUser {
    person("6666", "mallory@evil.example", true)
}

/// Pre-account hijacking: the attacker signs up with the victim's address (and gets a session)
/// and tries to add a way in that would outlive the owner's recovery.
async fn linking_to_an_unverified_account_is_refused(env: &Env) {
    let attacker = env.app.sign_up(VICTIM).await;
    env.github.with(|s| s.user = mallory());
    let err = env.flow("github", Some(&attacker.session_token)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("verify this account's email address"), "{err:?}");
    assert_eq!(env.app.db.count("accounts").await, 0);
}

/// What the earlier code let an attacker leave behind: a password, a live session and a
/// GitHub link on an account with the victim's unverified address. (Linking is refused now,
/// so the link is made while verified and then marked as made before any proof, as an
/// upgraded database would hold it.)
async fn pre_hijacked(env: &Env) -> pb::AuthResponse {
    let attacker = env.app.sign_up(VICTIM).await;
    env.app.db.execute("UPDATE users SET email_verified = true").await;
    env.github.with(|s| s.user = mallory());
    env.flow("github", Some(&attacker.session_token)).await.unwrap();
    env.app.db.execute("UPDATE users SET email_verified = false").await;
    env.app.db.execute("UPDATE accounts SET proven = false").await;
    let via_github = env.sign_in("github").await.unwrap();
    assert_eq!(via_github.user.unwrap().id, attacker.user.as_ref().unwrap().id, "the hijack works before the proof");
    attacker
}

/// Classic-federated and unexpired-session variants: the owner's reset by link leaves the
/// attacker no way in: not the password, not the session, not the provider link.
async fn owners_reset_removes_pre_proof_links_sessions_and_password(env: &Env) {
    let attacker = pre_hijacked(env).await;
    env.app.auth().request_password_reset(pb::RequestPasswordResetRequest { email: VICTIM.into() }).await.unwrap();
    let token = env.app.outbox_link(VICTIM, "reset-password?token=").await;
    let owners = "the owner's own passphrase";
    env.app.auth().reset_password(pb::ResetPasswordRequest { token, new_password: owners.into() }).await.unwrap();

    assert!(env.app.get_session(&attacker.session_token).await.is_err(), "the attacker's session ended");
    assert!(env.app.sign_in(VICTIM, PASSWORD).await.is_err(), "the attacker's password is gone");
    let owner = env.app.sign_in(VICTIM, owners).await.unwrap();
    assert!(owner.user.as_ref().unwrap().email_verified, "a reset by link proves the address");
    assert!(env.accounts(&owner.session_token).await.is_empty(), "the attacker's link is gone");
    // The attacker's GitHub now signs in to the attacker's own (new) account, not the owner's.
    let via_github = env.sign_in("github").await.unwrap();
    assert_ne!(via_github.user.as_ref().unwrap().id, owner.user.as_ref().unwrap().id);
    assert_eq!(via_github.user.unwrap().email, "mallory@evil.example");
    assert_eq!(env.app.outbox_count(VICTIM, "were removed").await, 1, "the owner is told what was removed");
    assert_eq!(env.app.outbox_count(VICTIM, "- github").await, 1);
}

/// The owner verifying the address also removes links made before that proof.
async fn owners_verification_removes_pre_proof_links(env: &Env) {
    let attacker = pre_hijacked(env).await;
    let token = env.app.outbox_link(VICTIM, "verify-email?token=").await;
    env.app.auth().verify_email(pb::VerifyEmailRequest { token }).await.unwrap();
    assert!(env.accounts(&attacker.session_token).await.is_empty());
    let via_github = env.sign_in("github").await.unwrap();
    assert_ne!(via_github.user.unwrap().id, attacker.user.unwrap().id);
    assert_eq!(env.app.outbox_count(VICTIM, "were removed").await, 1);
}

/// Classic-federated merge: the attacker's unverified password account is not merged with the
/// owner's verified Google identity; once the owner recovers the address, Google links to it
/// and the attacker's password is gone.
async fn classic_federated_merge_waits_for_the_owners_proof(env: &Env) {
    let attacker = env.app.sign_up(VICTIM).await;
    env.google.with(|s| s.user = person("g-victim", VICTIM, true));
    let err = env.sign_in("google").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(env.app.db.count("accounts").await, 0, "no merge into an unproven account");

    env.app.auth().request_password_reset(pb::RequestPasswordResetRequest { email: VICTIM.into() }).await.unwrap();
    let token = env.app.outbox_link(VICTIM, "reset-password?token=").await;
    env.app
        .auth()
        .reset_password(pb::ResetPasswordRequest { token, new_password: "recovered by the owner".into() })
        .await
        .unwrap();
    let owner = env.sign_in("google").await.unwrap();
    assert_eq!(owner.user.unwrap().id, attacker.user.unwrap().id, "linked by the verified address now");
    assert!(env.app.sign_in(VICTIM, PASSWORD).await.is_err());
    assert!(env.app.get_session(&attacker.session_token).await.is_err());
}

/// A link the provider made by asserting the same verified address is the owner's: it stays.
async fn asserted_links_survive_the_owners_reset(env: &Env) {
    env.google.with(|s| s.user = person("g-victim", VICTIM, true));
    let first = env.sign_in("google").await.unwrap();
    env.app.auth().request_password_reset(pb::RequestPasswordResetRequest { email: VICTIM.into() }).await.unwrap();
    let token = env.app.outbox_link(VICTIM, "reset-password?token=").await;
    env.app
        .auth()
        .reset_password(pb::ResetPasswordRequest { token, new_password: "a password as well now".into() })
        .await
        .unwrap();
    let again = env.sign_in("google").await.unwrap();
    assert_eq!(again.user.unwrap().id, first.user.unwrap().id);
    assert_eq!(env.accounts(&again.session_token).await.len(), 1);
    assert_eq!(env.app.outbox_count(VICTIM, "were removed").await, 0);
}

/// The account_linked mail: an automatic link by verified email and a manual link both tell
/// the address's owner.
async fn linking_tells_the_owner(env: &Env) {
    env.sign_in("google").await.unwrap();
    assert_eq!(env.app.outbox_count("ada@example.com", "A new sign-in method was added").await, 0);
    let github = env.sign_in("github").await.unwrap();
    assert_eq!(env.app.outbox_count("ada@example.com", "github can now be used").await, 1, "automatic link");
    env.acme.with(|s| s.user = person("acme|5", "someone@acme.example", true));
    env.flow("acme", Some(&github.session_token)).await.unwrap();
    assert_eq!(env.app.outbox_count("ada@example.com", "acme can now be used").await, 1, "manual link");
}

/// An account made through a provider has no password: a recent sign-in stands in for it.
async fn provider_only_accounts_reauthenticate_by_a_recent_sign_in(env: &Env) {
    let done = env.sign_in("google").await.unwrap();
    let change =
        pb::RequestEmailChangeRequest { new_email: "ada.new@example.com".into(), current_password: String::new() };
    env.app.auth().request_email_change(bearer(change.clone(), &done.session_token)).await.expect("fresh sign-in");

    env.app.clock.advance(TimeDelta::minutes(11));
    let stale = env.app.auth().request_email_change(bearer(change.clone(), &done.session_token)).await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    assert!(stale.message().contains("sign in again"), "{stale:?}");
    let delete = pb::DeleteAccountRequest { password: String::new() };
    let stale = env.app.auth().delete_account(bearer(delete.clone(), &done.session_token)).await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);

    let fresh = env.sign_in("google").await.unwrap();
    env.app.auth().delete_account(bearer(delete, &fresh.session_token)).await.expect("fresh sign-in deletes");
    assert_eq!(env.app.db.count("users").await, 0);

    // An account with a password still needs it.
    let up = env.app.sign_up("pw@example.com").await;
    let refused = env
        .app
        .auth()
        .delete_account(bearer(pb::DeleteAccountRequest { password: String::new() }, &up.session_token))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&refused), ["password"]);
}

/// RFC 9700 mix-up defence: one redirect URI for two providers is a configuration error at
/// start (a configuration check: the same on either backend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_uri_shared_by_two_providers_is_refused_at_start() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(&db, dir.path());
    config.oauth.google.client_id = Some("google-client".into());
    config.oauth.google.client_secret = Some(SecretString::from("google-secret"));
    config.oauth.google.redirect_uris = vec![GOOGLE_REDIRECT.into()];
    config.oauth.github.client_id = Some("github-client".into());
    config.oauth.github.client_secret = Some(SecretString::from("github-secret"));
    config.oauth.github.redirect_uris = vec![GITHUB_REDIRECT.into(), GOOGLE_REDIRECT.into()];
    let build = |c: gatehouse::Config| async move {
        gatehouse::Application::build(c, Arc::new(gatehouse::domain::SystemClock)).await.map(|_| ())
    };
    let refused = build(config.clone()).await.unwrap_err();
    let message = format!("{refused:#}");
    assert!(message.contains(GOOGLE_REDIRECT) && message.contains("google") && message.contains("github"), "{message}");
    config.oauth.github.redirect_uris = vec![GITHUB_REDIRECT.into()];
    build(config).await.expect("distinct redirect URIs start");
}

/// Refresh goes through the same token-error mapping: a 503 is UNAVAILABLE, and the stored
/// tokens are kept for the next try.
async fn a_refresh_against_an_unavailable_provider_is_unavailable(env: &Env) {
    let done = env.sign_in("google").await.unwrap();
    env.app.clock.advance(TimeDelta::hours(2));
    env.google.with(|s| s.token_failure = Some(TokenFailure::TemporarilyUnavailable));
    let err = env.provider_token(&done.session_token, "google").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    env.google.with(|s| s.token_failure = None);
    let refreshed =
        env.provider_token(&done.session_token, "google").await.expect("refreshed once the provider is back");
    assert!(refreshed.access_token.starts_with("idp-at-"));
}

/// A provider vouches for the first factor only: a user with an authenticator app still
/// answers its code, and the session says both.
async fn a_provider_sign_in_asks_for_the_second_factor(env: &Env) {
    use gatehouse::proto::v1::factor_service_client::FactorServiceClient;
    let first = env.sign_in("google").await.unwrap();
    assert_eq!(first.session.as_ref().unwrap().amr, ["oauth"]);
    let mut factors = FactorServiceClient::new(env.app.channel.clone());
    let start = factors
        .start_totp_enrollment(bearer(pb::StartTotpEnrollmentRequest::default(), &first.session_token))
        .await
        .unwrap()
        .into_inner();
    let totp =
        totp_rs::Builder::new().with_secret(totp_rs::Secret::try_from_base32(&start.secret).unwrap()).build().unwrap();
    let at = |steps: i64| {
        let now = gatehouse::domain::Clock::now(&env.app.clock).timestamp() + 30 * steps;
        totp.generate(u64::try_from(now).unwrap()).to_string()
    };
    factors
        .confirm_totp_enrollment(bearer(pb::ConfirmTotpEnrollmentRequest { code: at(0) }, &first.session_token))
        .await
        .unwrap();
    let again = env.sign_in("google").await.unwrap();
    assert!(again.session.is_none() && again.session_token.is_empty(), "no session before the code");
    assert!(again.user.is_none(), "nothing of the account before the code");
    let required = again.second_factor_required.unwrap();
    use pb::complete_second_factor_request::Proof;
    let done = env
        .app
        .auth()
        .complete_second_factor(pb::CompleteSecondFactorRequest {
            challenge_token: required.challenge_token,
            proof: Some(Proof::TotpCode(at(1))),
        })
        .await
        .unwrap()
        .into_inner();
    let session = done.session.unwrap();
    assert_eq!((session.aal, session.amr), (2, vec!["oauth".to_owned(), "otp".to_owned(), "mfa".to_owned()]));
}
