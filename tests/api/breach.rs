//! The breached-password check against a stand-in range API on loopback (Have I Been Pwned's
//! `GET /range/{first five hex digits of the SHA-1}`, padded): breached passwords are refused
//! at sign-up, change and reset; only the prefix leaves the server; a padding entry is no
//! breach; and an API that errors or hangs lets the password through (fail open) within the
//! timeout, counted in the metrics.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::Path, extract::State, http::StatusCode, routing::get};
use gatehouse::proto::v1 as pb;
use sha1::{Digest, Sha1};

use crate::helpers::{Backend, PASSWORD, TestApp, bearer, spawn_app_with, violated_fields};

/// A password that passes every local rule but is in the stand-in's breach corpus.
const BREACHED: &str = "velvet otter harbour 1987";

/// How the stand-in answers.
const NORMAL: u8 = 0;
const FAILING: u8 = 1;
const HANGING: u8 = 2;

#[derive(Clone)]
struct Api {
    /// (SHA-1 hex, count): count 0 is a padding entry.
    corpus: Arc<Vec<(String, u32)>>,
    asked: Arc<Mutex<Vec<String>>>,
    mode: Arc<AtomicU8>,
}

fn sha1_hex(password: &str) -> String {
    Sha1::digest(password.as_bytes()).iter().map(|b| format!("{b:02X}")).collect()
}

impl Api {
    async fn start() -> (Self, String) {
        let api = Self {
            // The suite's usual password is present only as padding: no breach.
            corpus: Arc::new(vec![(sha1_hex(BREACHED), 4211), (sha1_hex(PASSWORD), 0)]),
            asked: Arc::default(),
            mode: Arc::default(),
        };
        let app = Router::new().route("/range/{prefix}", get(range)).with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (api, url)
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

async fn range(State(api): State<Api>, Path(prefix): Path<String>) -> (StatusCode, String) {
    api.asked.lock().unwrap().push(prefix.clone());
    match api.mode.load(Ordering::SeqCst) {
        FAILING => return (StatusCode::SERVICE_UNAVAILABLE, "down".into()),
        HANGING => tokio::time::sleep(Duration::from_secs(30)).await,
        _ => {}
    }
    let mut body = String::from("00000000000000000000000000000000001:0\r\n");
    for (hash, count) in api.corpus.iter() {
        if hash.starts_with(&prefix) {
            body.push_str(&format!("{}:{count}\r\n", &hash[5..]));
        }
    }
    (StatusCode::OK, body)
}

async fn spawn_checked(backend: Backend, url: &str) -> Option<TestApp> {
    let url = url.to_owned();
    spawn_app_with(backend, move |c| {
        c.passwords.breached_passwords_api = Some(url);
        c.passwords.breached_passwords_timeout = Duration::from_millis(500);
    })
    .await
}

/// The `gatehouse_breached_password_checks_total` sample for `result` (process-wide).
async fn checks(app: &TestApp, result: &str) -> f64 {
    let body = reqwest::get(format!("http://{}/metrics", app.http_addr)).await.unwrap().text().await.unwrap();
    let needle = format!("gatehouse_breached_password_checks_total{{result=\"{result}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(needle.as_str())).map(|v| v.trim().parse().unwrap()).unwrap_or(0.0)
}

async fn breached_passwords_are_refused_at_sign_up_change_and_reset(backend: Backend) {
    let (api, url) = Api::start().await;
    let Some(app) = spawn_checked(backend, &url).await else { return };

    let refused = app.try_sign_up("breached@example.com", BREACHED).await.unwrap_err();
    assert_eq!(violated_fields(&refused), ["password"]);
    assert!(refused.message().contains("breach"), "{refused:?}");
    assert_eq!(app.db.query_texts("SELECT email FROM users").await, Vec::<String>::new(), "nothing was stored");

    // Listed only as padding (count 0): accepted.
    let up = app.sign_up("reader@example.com").await;

    let change = app
        .auth()
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: BREACHED.into(),
                revoke_other_sessions: false,
            },
            &up.session_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&change), ["new_password"]);
    app.sign_in("reader@example.com", PASSWORD).await.expect("the password is unchanged");

    app.auth()
        .request_password_reset(pb::RequestPasswordResetRequest { email: "reader@example.com".into() })
        .await
        .unwrap();
    let token = app.outbox_link("reader@example.com", "reset-password?token=").await;
    let reset = app
        .auth()
        .reset_password(pb::ResetPasswordRequest { token: token.clone(), new_password: BREACHED.into() })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&reset), ["new_password"]);
    // The refusal did not spend the link.
    app.auth()
        .reset_password(pb::ResetPasswordRequest { token, new_password: "a fresh unlisted passphrase".into() })
        .await
        .expect("the link still works with an unlisted password");

    // k-anonymity: five hex digits per lookup, never more of the hash.
    let asked = api.asked();
    assert!(asked.len() >= 5, "one lookup per new password: {asked:?}");
    for prefix in &asked {
        assert!(prefix.len() == 5 && prefix.chars().all(|c| c.is_ascii_hexdigit()), "sent {prefix:?}");
    }
    assert!(asked.contains(&sha1_hex(BREACHED)[..5].to_owned()), "{asked:?}");
    app.finish().await;
}

async fn an_api_that_fails_or_hangs_lets_the_password_through(backend: Backend) {
    let (api, url) = Api::start().await;
    let Some(app) = spawn_checked(backend, &url).await else { return };
    let failed_before = checks(&app, "failed").await;

    api.mode.store(FAILING, Ordering::SeqCst);
    app.try_sign_up("down@example.com", BREACHED).await.expect("an API answering 503 fails open");

    api.mode.store(HANGING, Ordering::SeqCst);
    let started = Instant::now();
    app.try_sign_up("slow@example.com", BREACHED).await.expect("a hanging API fails open");
    let took = started.elapsed();
    // The 500 ms lookup bound, plus a cheap hash and the inserts.
    assert!(took < Duration::from_secs(3), "a hanging API held the sign-up for {took:?}");
    eprintln!("sign-up with a hanging range API (500 ms timeout) took {took:?}");

    assert!(checks(&app, "failed").await >= failed_before + 2.0, "both failures are counted");

    // Once the API answers again, the check holds again.
    api.mode.store(NORMAL, Ordering::SeqCst);
    let refused = app.try_sign_up("back@example.com", BREACHED).await.unwrap_err();
    assert_eq!(violated_fields(&refused), ["password"]);
    assert_eq!(api.asked().len(), 3, "one lookup per sign-up");
    app.finish().await;
}

/// Without the setting (the default), no lookup is made and a listed password is accepted.
async fn the_check_is_off_by_default(backend: Backend) {
    let (api, _url) = Api::start().await;
    let Some(app) = spawn_app_with(backend, |c| assert!(c.passwords.breached_passwords_api.is_none())).await else {
        return;
    };
    app.try_sign_up("unchecked@example.com", BREACHED).await.expect("no check configured");
    assert!(api.asked().is_empty());
    app.finish().await;
}

crate::backends! {
    own:
        breached_passwords_are_refused_at_sign_up_change_and_reset,
        an_api_that_fails_or_hangs_lets_the_password_through,
        the_check_is_off_by_default;
}
