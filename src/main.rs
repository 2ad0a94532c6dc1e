//! The `gatehouse` binary: parse configuration, start telemetry, then serve or migrate.

use std::{process::ExitCode, sync::Arc};

use gatehouse::{Application, Config, config::Command, domain::SystemClock, storage, telemetry};

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
