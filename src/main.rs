//! The `gatehouse` binary: parse configuration, start telemetry, then serve, migrate, rotate
//! keys or check a running server's health.

use std::{process::ExitCode, sync::Arc, time::Duration};

use gatehouse::{
    Application, Config,
    config::{Command, KeysCommand},
    domain::{SystemClock, cipher::SecretCipher},
    startup::open_keys,
    storage, telemetry,
};
use secrecy::ExposeSecret;

/// `gatehouse keys rotate`: a successor signing key, published at once; it signs once every
/// replica has re-read the keys and every cached key set has expired (GATEHOUSE_JWKS_MAX_AGE +
/// GATEHOUSE_SIGNING_KEY_CHECK_INTERVAL from now).
async fn rotate_keys(config: &Config) -> anyhow::Result<()> {
    let secret = config.load_secret()?;
    let store = storage::connect(&config.db_options()).await?;
    let previous = config.load_previous_secrets()?;
    let previous: Vec<&[u8]> = previous.iter().map(|s| s.expose_secret()).collect();
    let cipher = Arc::new(SecretCipher::new(secret.expose_secret(), &previous)?);
    let keys = open_keys(config, Arc::clone(&store), cipher, Arc::new(SystemClock)).await?;
    let rotated = keys.rotate().await?;
    store.close().await;
    println!("new signing key: {} (published now, signs from {})", rotated.kid, rotated.activates_at.to_rfc3339());
    Ok(())
}

/// `gatehouse health`: SERVING from the running server's gRPC health service, or an error.
async fn check_health(config: &Config, addr: Option<String>, timeout: Duration) -> anyhow::Result<()> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let target = addr.unwrap_or_else(|| {
        let listen = config.server.listen;
        let ip = if listen.ip().is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { listen.ip() };
        format!("http://{}", std::net::SocketAddr::new(ip, listen.port()))
    });
    let ask = async {
        let channel = tonic::transport::Endpoint::from_shared(target.clone())?.connect().await?;
        let answer = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await?;
        anyhow::Ok(answer.into_inner().status())
    };
    match tokio::time::timeout(timeout, ask).await {
        Ok(Ok(ServingStatus::Serving)) => Ok(()),
        Ok(Ok(status)) => anyhow::bail!("{target} is {}", status.as_str_name()),
        Ok(Err(error)) => Err(error.context(format!("asking {target}"))),
        Err(_) => anyhow::bail!("{target} did not answer within {timeout:?}"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let (command, config) = Config::from_args();
    let _telemetry = match telemetry::init(&config) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("gatehouse: cannot start telemetry: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command.unwrap_or(Command::Serve) {
        Command::Keys { action: KeysCommand::Rotate } => rotate_keys(&config).await,
        Command::Health { addr, timeout } => match check_health(&config, addr, timeout).await {
            Ok(()) => return ExitCode::SUCCESS,
            Err(error) => {
                // A health check prints one line, not a log record.
                eprintln!("gatehouse health: {error:#}");
                return ExitCode::FAILURE;
            }
        },
        Command::Migrate => storage::migrate(&config.db_options())
            .await
            .map(|()| tracing::info!("migrations applied"))
            .map_err(anyhow::Error::from),
        Command::Serve => match Application::build(config, Arc::new(SystemClock)).await {
            Ok(app) => app.run_until_stopped(shutdown_signal()).await,
            Err(error) => Err(error),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("gatehouse failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
