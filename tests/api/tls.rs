//! TLS and mutual TLS on the gRPC port, with certificates generated in the test, and reloading
//! of changed certificate files without a restart.

use std::{path::Path, time::Duration};

use gatehouse::{
    Config,
    proto::v1::{self as pb, admin_service_client::AdminServiceClient},
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::{Backend, TestApp, spawn_app_with};

/// A certificate authority for the test (also signs the stand-in SMTP relay's certificate).
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate (PEM cert, PEM key) for `names`, with `cn` as subject.
    pub(crate) fn leaf(&self, cn: &str, names: &[&str]) -> (String, String) {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

pub(crate) fn write(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    // Write then rename, as certificate managers do, so the server never reads half a file.
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

async fn connect(
    app: &TestApp,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{}", app.addr)).unwrap().tls_config(tls)?.connect().await
}

async fn healthy(channel: Result<Channel, tonic::transport::Error>) -> bool {
    match channel {
        Ok(channel) => HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.is_ok(),
        Err(_) => false,
    }
}

async fn mutual_tls(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Gatehouse test CA");
    let (cert, key) = ca.leaf("localhost", &["localhost"]);
    let client = ca.leaf("books-api", &["books-api.mesh.internal"]);
    let stranger = ca.leaf("intruder", &["intruder.mesh.internal"]);
    let other_ca = Ca::new("Someone else's CA");
    let foreign = other_ca.leaf("books-api", &["books-api.mesh.internal"]);
    let (cert_path, key_path, ca_path) = (
        write(dir.path(), "cert.pem", &cert),
        write(dir.path(), "key.pem", &key),
        write(dir.path(), "ca.pem", &ca.pem()),
    );
    let Some(app) = spawn_app_with(backend, move |c: &mut Config| {
        c.tls.tls_cert = Some(cert_path);
        c.tls.tls_key = Some(key_path);
        c.tls.tls_client_ca = Some(ca_path);
        c.mesh.admin_client_names = vec!["books-api".into()];
    })
    .await
    else {
        return;
    };
    assert!(healthy(connect(&app, &ca.pem(), Some(&client)).await).await, "a client with a certificate gets in");
    assert!(!healthy(connect(&app, &ca.pem(), None).await).await, "no certificate: refused under mTLS");
    assert!(!healthy(connect(&app, &ca.pem(), Some(&foreign)).await).await, "another CA's certificate: refused");
    let plaintext = Channel::from_shared(format!("http://{}", app.addr)).unwrap().connect().await;
    assert!(!healthy(plaintext).await, "plaintext: refused");

    // The certificate is the service's identity for the admin API: no key needed.
    let channel = connect(&app, &ca.pem(), Some(&client)).await.unwrap();
    let list = pb::ListUsersRequest { page_size: 5, page_token: String::new(), email_filter: String::new() };
    AdminServiceClient::new(channel).list_users(list.clone()).await.expect("an allowed certificate");
    let channel = connect(&app, &ca.pem(), Some(&stranger)).await.unwrap();
    let refused = AdminServiceClient::new(channel).list_users(list).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    app.finish().await;
}

async fn certificates_reload_without_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new("Old CA"), Ca::new("New CA"));
    let (cert, key) = old_ca.leaf("localhost", &["localhost"]);
    let (cert_path, key_path) = (write(dir.path(), "cert.pem", &cert), write(dir.path(), "key.pem", &key));
    let (c, k) = (cert_path.clone(), key_path.clone());
    let Some(app) = spawn_app_with(backend, move |config: &mut Config| {
        config.tls.tls_cert = Some(c);
        config.tls.tls_key = Some(k);
        config.tls.tls_reload_interval = Duration::from_millis(100);
    })
    .await
    else {
        return;
    };
    assert!(healthy(connect(&app, &old_ca.pem(), None).await).await);
    assert!(!healthy(connect(&app, &new_ca.pem(), None).await).await);

    // Replace the files; new connections get the new certificate without a restart.
    let (cert, key) = new_ca.leaf("localhost", &["localhost"]);
    write(dir.path(), "key.pem", &key);
    write(dir.path(), "cert.pem", &cert);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !healthy(connect(&app, &new_ca.pem(), None).await).await {
        assert!(std::time::Instant::now() < deadline, "the new certificate was not loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!healthy(connect(&app, &old_ca.pem(), None).await).await);
    app.finish().await;
}

crate::backends! { own: mutual_tls, certificates_reload_without_restart }

/// Production mode refuses plaintext, except on loopback behind a sidecar when allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_plaintext() {
    use gatehouse::config::Environment;
    let db = crate::helpers::TestDb::create(Backend::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(&db, dir.path());
    config.server.environment = Environment::Production;
    let build = |c: Config| async move {
        gatehouse::Application::build(c, std::sync::Arc::new(gatehouse::domain::SystemClock)).await.map(|_| ())
    };
    let refused = build(config.clone()).await.unwrap_err();
    assert!(format!("{refused:#}").contains("plaintext"), "{refused:#}");
    config.tls.allow_plaintext = true;
    assert!(build(config.clone()).await.is_ok(), "loopback behind a sidecar, explicitly allowed");
    config.server.listen = "0.0.0.0:0".parse().unwrap();
    assert!(build(config).await.is_err(), "never plaintext off loopback");
}
