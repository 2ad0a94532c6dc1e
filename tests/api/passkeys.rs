//! Passkeys through the real server with a software authenticator: registration, the
//! passwordless sign-in and the second-factor step, and the attacker's paths (another origin,
//! another RP id, a replayed challenge, a cloned authenticator's counter, no user verification,
//! someone else's user handle).
//!
//! The authenticator is written here on p256 rather than taken from a crate, so that each test
//! can make it lie in exactly one way: webauthn-rs's soft passkey keeps its counter at zero and
//! has no knob for a wrong origin or RP id. It speaks what a browser would send: the WebAuthn
//! JSON serialisation, a `none` attestation and ES256 signatures.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use gatehouse::proto::v1::{self as pb, factor_service_client::FactorServiceClient};
use p256::ecdsa::{Signature, SigningKey, signature::Signer};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tonic::{Code, transport::Channel};

use crate::{
    backends,
    helpers::{PASSWORD, TestApp, bearer, violated_fields},
    mesh::{admin, mesh_config, with_key},
};

backends! {
    app:
    register_then_sign_in_without_a_password,
    a_passkey_answers_the_second_factor_step,
    another_origin_or_rp_id_is_refused,
    a_challenge_is_answered_once,
    a_cloned_authenticator_is_refused_by_its_counter,
    one_counter_value_signs_in_once_under_a_burst,
    user_verification_is_required,
    a_credential_signs_in_only_its_own_user,
    a_disabled_user_cannot_sign_in_with_a_passkey => mesh_config;
}

crate::through_pgbouncer! {
    app:
    register_then_sign_in_without_a_password,
    a_cloned_authenticator_is_refused_by_its_counter;
}

/// The front end's origin in the default configuration.
const ORIGIN: &str = "http://localhost:8000";
const RP_ID: &str = "localhost";

/// What the authenticator does wrong, if anything.
#[derive(Clone, Copy, Default)]
struct Lie {
    /// The browser's origin in clientDataJSON.
    origin: Option<&'static str>,
    /// The RP id whose hash goes into the authenticator data.
    rp_id: Option<&'static str>,
    /// Leave the user-verified flag off.
    no_user_verification: bool,
}

/// A discoverable ES256 credential.
#[derive(Clone)]
struct SoftPasskey {
    key: SigningKey,
    credential_id: Vec<u8>,
    user_handle: Vec<u8>,
    /// The signature counter; `None` for an authenticator without one (as synced passkeys).
    counter: Option<u32>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &Value) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text.as_str().expect("a base64url string")).expect("base64url")
}

/// Minimal CBOR (RFC 8949) for the attestation object: unsigned and negative integers, byte
/// and text strings, maps.
enum Cbor {
    Int(i64),
    Bytes(Vec<u8>),
    Text(&'static str),
    Map(Vec<(Cbor, Cbor)>),
}

impl Cbor {
    fn encode(&self, out: &mut Vec<u8>) {
        fn head(out: &mut Vec<u8>, major: u8, n: u64) {
            let major = major << 5;
            match n {
                0..=23 => out.push(major | n as u8),
                24..=0xff => out.extend([major | 24, n as u8]),
                0x100..=0xffff => {
                    out.push(major | 25);
                    out.extend((n as u16).to_be_bytes());
                }
                _ => {
                    out.push(major | 26);
                    out.extend((n as u32).to_be_bytes());
                }
            }
        }
        match self {
            Cbor::Int(n) if *n >= 0 => head(out, 0, *n as u64),
            Cbor::Int(n) => head(out, 1, (-1 - n) as u64),
            Cbor::Bytes(b) => {
                head(out, 2, b.len() as u64);
                out.extend(b);
            }
            Cbor::Text(t) => {
                head(out, 3, t.len() as u64);
                out.extend(t.as_bytes());
            }
            Cbor::Map(entries) => {
                head(out, 5, entries.len() as u64);
                for (k, v) in entries {
                    k.encode(out);
                    v.encode(out);
                }
            }
        }
    }
}

fn client_data(kind: &str, challenge: &Value, origin: &str) -> Vec<u8> {
    json!({ "type": kind, "challenge": challenge, "origin": origin, "crossOrigin": false }).to_string().into_bytes()
}

/// Authenticator data: RP id hash, flags (user present, and verified unless told not to),
/// counter, and for a registration the attested credential.
fn authenticator_data(rp_id: &str, lie: Lie, counter: u32, attested: Option<Vec<u8>>) -> Vec<u8> {
    let mut data = Sha256::digest(rp_id.as_bytes()).to_vec();
    let mut flags = 0x01;
    if !lie.no_user_verification {
        flags |= 0x04;
    }
    if attested.is_some() {
        flags |= 0x40;
    }
    data.push(flags);
    data.extend(counter.to_be_bytes());
    if let Some(attested) = attested {
        data.extend(attested);
    }
    data
}

impl SoftPasskey {
    /// Answers `navigator.credentials.create` for `options` (PublicKeyCredentialCreationOptionsJSON)
    /// with a new key.
    fn register(options: &str, counter: bool, lie: Lie) -> (Self, String) {
        let parsed: Value = serde_json::from_str(options).unwrap();
        let mut credential_id = vec![0u8; 16];
        getrandom::fill(&mut credential_id).unwrap();
        let passkey = SoftPasskey {
            key: SigningKey::random(&mut rand_core::OsRng),
            credential_id,
            user_handle: unb64(&parsed["user"]["id"]),
            counter: counter.then_some(0),
        };
        let response = passkey.attest(options, lie);
        (passkey, response)
    }

    /// A registration response for this key (a `none` attestation).
    fn attest(&self, options: &str, lie: Lie) -> String {
        let options: Value = serde_json::from_str(options).unwrap();
        assert_eq!(options["rp"]["id"], RP_ID);
        let point = self.key.verifying_key().to_encoded_point(false);
        let mut cose = Vec::new();
        Cbor::Map(vec![
            (Cbor::Int(1), Cbor::Int(2)),
            (Cbor::Int(3), Cbor::Int(-7)),
            (Cbor::Int(-1), Cbor::Int(1)),
            (Cbor::Int(-2), Cbor::Bytes(point.x().unwrap().to_vec())),
            (Cbor::Int(-3), Cbor::Bytes(point.y().unwrap().to_vec())),
        ])
        .encode(&mut cose);
        let mut attested = vec![0u8; 16];
        attested.extend((self.credential_id.len() as u16).to_be_bytes());
        attested.extend(&self.credential_id);
        attested.extend(cose);
        let auth_data = authenticator_data(lie.rp_id.unwrap_or(RP_ID), lie, 0, Some(attested));
        let mut attestation = Vec::new();
        Cbor::Map(vec![
            (Cbor::Text("fmt"), Cbor::Text("none")),
            (Cbor::Text("attStmt"), Cbor::Map(vec![])),
            (Cbor::Text("authData"), Cbor::Bytes(auth_data)),
        ])
        .encode(&mut attestation);
        let client = client_data("webauthn.create", &options["challenge"], lie.origin.unwrap_or(ORIGIN));
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&client),
                "attestationObject": b64(&attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        })
        .to_string()
    }

    /// Answers `navigator.credentials.get` for `options` (PublicKeyCredentialRequestOptionsJSON).
    fn assert(&mut self, options: &str, lie: Lie) -> String {
        let options: Value = serde_json::from_str(options).unwrap();
        if let Some(counter) = self.counter.as_mut() {
            *counter += 1;
        }
        let auth_data = authenticator_data(lie.rp_id.unwrap_or(RP_ID), lie, self.counter.unwrap_or(0), None);
        let client = client_data("webauthn.get", &options["challenge"], lie.origin.unwrap_or(ORIGIN));
        let mut signed = auth_data.clone();
        signed.extend(Sha256::digest(&client));
        let signature: Signature = self.key.sign(&signed);
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&client),
                "authenticatorData": b64(&auth_data),
                "signature": b64(signature.to_der().as_bytes()),
                "userHandle": b64(&self.user_handle),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        })
        .to_string()
    }
}

fn factors(app: &TestApp) -> FactorServiceClient<Channel> {
    FactorServiceClient::new(app.channel.clone())
}

async fn start_registration(app: &TestApp, token: &str) -> String {
    factors(app)
        .start_passkey_registration(bearer(pb::StartPasskeyRegistrationRequest { name: "Laptop".into() }, token))
        .await
        .unwrap()
        .into_inner()
        .options_json
}

async fn finish_registration(
    app: &TestApp,
    token: &str,
    credential_json: String,
) -> Result<pb::FinishPasskeyRegistrationResponse, tonic::Status> {
    factors(app)
        .finish_passkey_registration(bearer(pb::FinishPasskeyRegistrationRequest { credential_json }, token))
        .await
        .map(tonic::Response::into_inner)
}

/// Signs up `email` and registers a passkey; returns the session and the authenticator.
async fn registered(app: &TestApp, email: &str, counter: bool) -> (String, SoftPasskey) {
    let token = app.sign_up(email).await.session_token;
    let options = start_registration(app, &token).await;
    let (passkey, credential) = SoftPasskey::register(&options, counter, Lie::default());
    finish_registration(app, &token, credential).await.unwrap();
    (token, passkey)
}

async fn start_sign_in(app: &TestApp) -> pb::StartPasskeySignInResponse {
    app.auth().start_passkey_sign_in(pb::StartPasskeySignInRequest {}).await.unwrap().into_inner()
}

async fn finish_sign_in(
    app: &TestApp,
    challenge_id: &str,
    credential_json: String,
) -> Result<pb::AuthResponse, tonic::Status> {
    app.auth()
        .finish_passkey_sign_in(pb::FinishPasskeySignInRequest { challenge_id: challenge_id.into(), credential_json })
        .await
        .map(tonic::Response::into_inner)
}

async fn passkey_sign_in(
    app: &TestApp,
    passkey: &mut SoftPasskey,
    lie: Lie,
) -> Result<pb::AuthResponse, tonic::Status> {
    let start = start_sign_in(app).await;
    let assertion = passkey.assert(&start.options_json, lie);
    finish_sign_in(app, &start.challenge_id, assertion).await
}

async fn register_then_sign_in_without_a_password(app: &TestApp) {
    let token = app.sign_up("pk@example.com").await.session_token;
    let options = start_registration(app, &token).await;
    let parsed: Value = serde_json::from_str(&options).unwrap();
    assert_eq!(parsed["authenticatorSelection"]["residentKey"], "required", "{parsed}");
    assert_eq!(parsed["authenticatorSelection"]["userVerification"], "required");
    assert_eq!(parsed["rp"]["name"], "Gatehouse");
    assert_eq!(parsed["user"]["name"], "pk@example.com");
    let (mut passkey, credential) = SoftPasskey::register(&options, true, Lie::default());
    let done = finish_registration(app, &token, credential.clone()).await.unwrap();
    let factor = done.factor.unwrap();
    assert_eq!((factor.kind.as_str(), factor.name.as_str()), ("passkey", "Laptop"));
    assert_eq!(done.recovery_codes.len(), 10, "the first second factor brings the recovery codes");
    assert_eq!(app.outbox_count("pk@example.com", "A passkey (\"Laptop\") was just added").await, 1);
    // The registration is spent.
    let again = finish_registration(app, &token, credential).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    let start = start_sign_in(app).await;
    let request: Value = serde_json::from_str(&start.options_json).unwrap();
    assert_eq!(request["rpId"], RP_ID);
    assert_eq!(request["userVerification"], "required");
    let signed_in =
        finish_sign_in(app, &start.challenge_id, passkey.assert(&start.options_json, Lie::default())).await.unwrap();
    assert_eq!(signed_in.user.unwrap().email, "pk@example.com");
    let session = signed_in.session.unwrap();
    assert_eq!((session.aal, session.amr), (2, vec!["hwk".to_owned(), "mfa".to_owned()]));
    assert!(app.get_session(&signed_in.session_token).await.is_ok());
    let listed = factors(app)
        .list_factors(bearer(pb::ListFactorsRequest {}, &signed_in.session_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.factors.len(), 1);
    assert!(listed.factors[0].last_used_at.is_some());
    assert!(!listed.factors[0].backup_eligible);

    // The existing passkey is excluded; a client that ignores that and registers the same
    // credential again is refused (webauthn-rs checks the exclusion list).
    let options = start_registration(app, &signed_in.session_token).await;
    let excluded = &serde_json::from_str::<Value>(&options).unwrap()["excludeCredentials"];
    assert_eq!(excluded[0]["id"], b64(&passkey.credential_id), "{excluded}");
    let twice = finish_registration(app, &signed_in.session_token, passkey.attest(&options, Lie::default())).await;
    let twice = twice.unwrap_err();
    assert_eq!((twice.code(), violated_fields(&twice)), (Code::InvalidArgument, vec!["credential_json".to_owned()]));
}

async fn a_passkey_answers_the_second_factor_step(app: &TestApp) {
    let (_, mut passkey) = registered(app, "second@example.com", true).await;
    let answer = app.sign_in("second@example.com", PASSWORD).await.unwrap();
    let required = answer.second_factor_required.unwrap();
    assert_eq!(required.methods, ["passkey", "recovery_code"]);
    let options: Value = serde_json::from_str(&required.passkey_options_json).unwrap();
    assert_eq!(options["allowCredentials"][0]["id"], b64(&passkey.credential_id));
    use pb::complete_second_factor_request::Proof;
    let done = app
        .auth()
        .complete_second_factor(pb::CompleteSecondFactorRequest {
            challenge_token: required.challenge_token.clone(),
            proof: Some(Proof::PasskeyCredentialJson(passkey.assert(&required.passkey_options_json, Lie::default()))),
        })
        .await
        .unwrap()
        .into_inner();
    let session = done.session.unwrap();
    assert_eq!((session.aal, session.amr), (2, vec!["pwd".into(), "hwk".into(), "mfa".into()]));
    // A wrong-origin assertion on a fresh challenge is a wrong code.
    let required = app.sign_in("second@example.com", PASSWORD).await.unwrap().second_factor_required.unwrap();
    let lie = Lie { origin: Some("https://evil.example"), ..Lie::default() };
    let refused = app
        .auth()
        .complete_second_factor(pb::CompleteSecondFactorRequest {
            challenge_token: required.challenge_token,
            proof: Some(Proof::PasskeyCredentialJson(passkey.assert(&required.passkey_options_json, lie))),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

async fn another_origin_or_rp_id_is_refused(app: &TestApp) {
    let token = app.sign_up("origin@example.com").await.session_token;
    for lie in [
        Lie { origin: Some("https://evil.example"), ..Lie::default() },
        Lie { origin: Some("http://localhost:8001"), ..Lie::default() },
        Lie { rp_id: Some("evil.example"), ..Lie::default() },
    ] {
        let options = start_registration(app, &token).await;
        let (_, credential) = SoftPasskey::register(&options, true, lie);
        let refused = finish_registration(app, &token, credential).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_eq!(violated_fields(&refused), ["credential_json"]);
    }
    let (_, mut passkey) = registered(app, "origin2@example.com", true).await;
    for lie in [
        Lie { origin: Some("https://evil.example"), ..Lie::default() },
        Lie { rp_id: Some("evil.example"), ..Lie::default() },
    ] {
        assert_eq!(passkey_sign_in(app, &mut passkey, lie).await.unwrap_err().code(), Code::Unauthenticated);
    }
    assert!(passkey_sign_in(app, &mut passkey, Lie::default()).await.is_ok());
    // Garbage is a field error, not a crash.
    let start = start_sign_in(app).await;
    let bad = finish_sign_in(app, &start.challenge_id, "{}".into()).await.unwrap_err();
    assert_eq!((bad.code(), violated_fields(&bad)), (Code::InvalidArgument, vec!["credential_json".to_owned()]));
}

async fn a_challenge_is_answered_once(app: &TestApp) {
    let (_, mut passkey) = registered(app, "replay@example.com", false).await;
    let start = start_sign_in(app).await;
    let assertion = passkey.assert(&start.options_json, Lie::default());
    assert!(finish_sign_in(app, &start.challenge_id, assertion.clone()).await.is_ok());
    // The same ceremony again, and the same assertion on a new ceremony.
    assert_eq!(
        finish_sign_in(app, &start.challenge_id, assertion.clone()).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let other = start_sign_in(app).await;
    assert_eq!(finish_sign_in(app, &other.challenge_id, assertion).await.unwrap_err().code(), Code::Unauthenticated);
    // The refusal spent that ceremony too.
    let late = passkey.assert(&other.options_json, Lie::default());
    assert_eq!(finish_sign_in(app, &other.challenge_id, late).await.unwrap_err().code(), Code::Unauthenticated);
    // A ceremony lapses after 5 minutes.
    let start = start_sign_in(app).await;
    app.clock.advance(chrono::TimeDelta::minutes(5) + chrono::TimeDelta::seconds(1));
    let assertion = passkey.assert(&start.options_json, Lie::default());
    assert_eq!(finish_sign_in(app, &start.challenge_id, assertion).await.unwrap_err().code(), Code::Unauthenticated);
}

async fn a_cloned_authenticator_is_refused_by_its_counter(app: &TestApp) {
    let (token, mut passkey) = registered(app, "clone@example.com", true).await;
    let user: uuid::Uuid = app.get_session(&token).await.unwrap().user.unwrap().id.parse().unwrap();
    let mut clone = passkey.clone();
    assert!(passkey_sign_in(app, &mut passkey, Lie::default()).await.is_ok(), "counter 1");
    assert!(passkey_sign_in(app, &mut passkey, Lie::default()).await.is_ok(), "counter 2");
    // The copy's counter (1, then 2) is not past the stored 2.
    assert_eq!(passkey_sign_in(app, &mut clone, Lie::default()).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(passkey_sign_in(app, &mut clone, Lie::default()).await.unwrap_err().code(), Code::Unauthenticated);
    assert!(passkey_sign_in(app, &mut passkey, Lie::default()).await.is_ok(), "the original goes on at 3");
    let rejected = app
        .db
        .count_for(
            "SELECT COUNT(*) FROM audit_events WHERE user_id = $1 AND event = 'sign_in' AND reason = 'passkey_rejected'",
            user,
        )
        .await;
    assert_eq!(rejected, 2);
}

async fn user_verification_is_required(app: &TestApp) {
    let token = app.sign_up("uv@example.com").await.session_token;
    let options = start_registration(app, &token).await;
    let (_, credential) = SoftPasskey::register(&options, true, Lie { no_user_verification: true, ..Lie::default() });
    assert_eq!(finish_registration(app, &token, credential).await.unwrap_err().code(), Code::InvalidArgument);
    let (_, mut passkey) = registered(app, "uv2@example.com", true).await;
    let lie = Lie { no_user_verification: true, ..Lie::default() };
    assert_eq!(passkey_sign_in(app, &mut passkey, lie).await.unwrap_err().code(), Code::Unauthenticated);
}

async fn a_credential_signs_in_only_its_own_user(app: &TestApp) {
    let (mallory_token, mut mallory) = registered(app, "mallory-pk@example.com", true).await;
    let (victim_token, mut victim_key) = registered(app, "victim-pk@example.com", true).await;
    let victim = app.get_session(&victim_token).await.unwrap().user.unwrap();
    // Mallory cannot claim the victim's credential id for a key of her own.
    let strong = passkey_sign_in(app, &mut mallory, Lie::default()).await.unwrap().session_token;
    let options = start_registration(app, &strong).await;
    let (mut squatter, _) = SoftPasskey::register(&options, true, Lie::default());
    squatter.credential_id = victim_key.credential_id.clone();
    let taken = finish_registration(app, &strong, squatter.attest(&options, Lie::default())).await.unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    drop(mallory_token);
    assert!(passkey_sign_in(app, &mut victim_key, Lie::default()).await.is_ok());
    // Mallory's key, presented under the victim's user handle.
    mallory.user_handle = uuid::Uuid::parse_str(&victim.id).unwrap().as_bytes().to_vec();
    assert_eq!(passkey_sign_in(app, &mut mallory, Lie::default()).await.unwrap_err().code(), Code::Unauthenticated);
}

async fn a_disabled_user_cannot_sign_in_with_a_passkey(app: &TestApp) {
    let (token, mut passkey) = registered(app, "off-pk@example.com", true).await;
    let user_id = app.get_session(&token).await.unwrap().user.unwrap().id;
    admin(app).disable_user(with_key(pb::DisableUserRequest { user_id })).await.unwrap();
    assert_eq!(passkey_sign_in(app, &mut passkey, Lie::default()).await.unwrap_err().code(), Code::Unauthenticated);
}

/// Twelve copies of one authenticator assert the same counter value at once, each on a ceremony
/// of its own: every assertion verifies against the stored counter, and the compare-and-swap on
/// it lets exactly one sign in.
async fn one_counter_value_signs_in_once_under_a_burst(app: &TestApp) {
    let (_, passkey) = registered(app, "burst-pk@example.com", true).await;
    let mut attempts = Vec::new();
    for _ in 0..12 {
        let mut copy = passkey.clone();
        let start = start_sign_in(app).await;
        let assertion = copy.assert(&start.options_json, Lie::default());
        let channel = app.channel.clone();
        attempts.push(tokio::spawn(async move {
            gatehouse::proto::v1::auth_service_client::AuthServiceClient::new(channel)
                .finish_passkey_sign_in(pb::FinishPasskeySignInRequest {
                    challenge_id: start.challenge_id,
                    credential_json: assertion,
                })
                .await
        }));
    }
    let mut signed_in = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => signed_in += 1,
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated),
        }
    }
    assert_eq!(signed_in, 1, "one counter value, one sign-in");
}
