//! The `gatehouse` binary: parse configuration, start telemetry, then serve, migrate or rotate
//! keys.

use std::{process::ExitCode, sync::Arc};

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
