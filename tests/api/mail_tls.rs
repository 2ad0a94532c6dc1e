//! Mail through an internal relay whose certificate a private CA signed
//! (GATEHOUSE_SMTP_CA_FILE), over STARTTLS and implicit TLS: delivered when the bundle holds
//! that CA, refused when it does not or when only the public roots are trusted, and a bundle
//! that holds no certificate stops the start.

use std::{path::PathBuf, sync::Arc, time::Duration};

use chrono::{TimeZone, Utc};
use gatehouse::{Application, Config, domain::ManualClock, mail::SmtpTls};

use crate::{
    helpers::{Backend, TestDb, spawn_app_with, test_config, use_smtp},
    smtp::{RelayTls, SmtpServer},
    tls::{Ca, write},
};

/// A relay on loopback presenting a certificate for `localhost` signed by `ca`.
async fn relay(mode: RelayTls, ca: &Ca) -> SmtpServer {
    let (cert, key) = ca.leaf("localhost", &["localhost"]);
    SmtpServer::start_tls(mode, &cert, &key).await
}

/// Mail to `smtp` over `mode`, trusting the bundle at `ca_file` (or the public roots).
fn point_at(config: &mut Config, smtp: &SmtpServer, mode: RelayTls, ca_file: Option<PathBuf>) {
    use_smtp(config, smtp);
    // The certificate names the host, as an internal relay's would.
    config.mail.smtp_host = Some("localhost".into());
    config.mail.smtp_tls = match mode {
        RelayTls::Starttls => SmtpTls::Starttls,
        RelayTls::Implicit => SmtpTls::Tls,
    };
    config.mail.smtp_ca_file = ca_file;
    config.mail.smtp_timeout = Duration::from_secs(2);
}

async fn delivered_through_a_private_ca(backend: Backend, mode: RelayTls) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Internal mail CA");
    let bundle = write(dir.path(), "mail-ca.pem", &ca.pem());
    let mut smtp = relay(mode, &ca).await;
    let Some(app) = spawn_app_with(backend, |c| point_at(c, &smtp, mode, Some(bundle))).await else {
        return;
    };
    app.sign_up("reader@example.com").await;
    let mail = smtp.next_to("reader@example.com", "Confirm").await;
    assert!(mail.token().starts_with("gatelink_"), "the verification link arrived over {mode:?}");
    app.finish().await;
}

/// The relay's certificate chains to neither the public roots nor the configured bundle:
/// nothing is delivered, though the relay was reached.
async fn refused_unless_the_bundle_holds_the_relays_ca(backend: Backend, mode: RelayTls) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Internal mail CA");
    let other = write(dir.path(), "other-ca.pem", &Ca::new("Someone else's CA").pem());
    for bundle in [None, Some(other)] {
        let mut smtp = relay(mode, &ca).await;
        let trusted = format!("{bundle:?}");
        let Some(app) = spawn_app_with(backend, |c| {
            point_at(c, &smtp, mode, bundle);
            c.mail.mail_attempts = 1;
        })
        .await
        else {
            return;
        };
        app.sign_up("reader@example.com").await;
        smtp.wait_for_connections(1).await;
        smtp.assert_quiet(Duration::from_millis(1500)).await;
        eprintln!("{mode:?} relay refused with bundle {trusted}");
        app.finish().await;
    }
}

/// A bundle that holds no certificate (a key, a wrong file) is a configuration error at start,
/// not a silent failure of every delivery.
async fn a_bundle_without_certificates_stops_the_start(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start().await;
    let not_a_bundle =
        write(dir.path(), "mail-ca.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    for (mode, file) in
        [(RelayTls::Starttls, not_a_bundle.clone()), (RelayTls::Implicit, dir.path().join("missing.pem"))]
    {
        let mut config = test_config(&db, dir.path());
        point_at(&mut config, &smtp, mode, Some(file));
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap());
        let Err(error) = Application::build(config, Arc::new(clock)).await else {
            panic!("a {mode:?} relay with an unusable CA bundle was accepted");
        };
        let message = format!("{error:#}");
        assert!(message.contains("GATEHOUSE_SMTP_CA_FILE"), "{message}");
    }
    db.drop_database().await;
}

async fn starttls_through_a_private_ca(backend: Backend) {
    delivered_through_a_private_ca(backend, RelayTls::Starttls).await;
}

async fn implicit_tls_through_a_private_ca(backend: Backend) {
    delivered_through_a_private_ca(backend, RelayTls::Implicit).await;
}

async fn starttls_refused_without_the_relays_ca(backend: Backend) {
    refused_unless_the_bundle_holds_the_relays_ca(backend, RelayTls::Starttls).await;
}

async fn implicit_tls_refused_without_the_relays_ca(backend: Backend) {
    refused_unless_the_bundle_holds_the_relays_ca(backend, RelayTls::Implicit).await;
}

crate::backends! {
    own:
        starttls_through_a_private_ca,
        implicit_tls_through_a_private_ca,
        starttls_refused_without_the_relays_ca,
        implicit_tls_refused_without_the_relays_ca,
        a_bundle_without_certificates_stops_the_start;
}
