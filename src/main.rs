//! The `keyward` binary: flags → tracing → `server::run`; or, with a
//! client subcommand, the operator CLI (`cli::run`).

use std::process::ExitCode;

use clap::Parser;
use keyward::cli::{Cli, Command};
use keyward::config::Config;
use keyward::server::{self, Options};
use tokio::net::TcpListener;
use tracing_subscriber::util::SubscriberInitExt;

/// Exit code for a bad configuration (EX_USAGE).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve_main(&cli.serve),
        Some(Command::Serve(config)) => serve_main(&config),
        Some(command) => keyward::cli::run(command),
    }
}

/// `keyward [serve] [flags]`: validate, then serve until SIGTERM/SIGINT.
fn serve_main(config: &Config) -> ExitCode {
    // RUST_LOG decides, below the caps on sled and tokio-postgres
    // (logs::CAPPED): their verbose records print stored token hashes.
    let directives = std::env::var(tracing_subscriber::EnvFilter::DEFAULT_ENV).ok();
    keyward::logs::subscriber(
        directives.as_deref(),
        std::io::stderr,
        std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::env::var_os("NO_COLOR").is_none(),
    )
    .init();
    if let Err(msg) = config.validate() {
        eprintln!("keyward: {msg}");
        return ExitCode::from(EXIT_USAGE);
    }
    let options = match Options::from_config(config) {
        Ok(options) => options,
        Err(msg) => {
            eprintln!("keyward: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyward: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(
            e @ (server::ServeError::Routes(_)
            | server::ServeError::Tls(_)
            | server::ServeError::LeakReportKeys(_)),
        ) => {
            eprintln!("keyward: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("keyward: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: &Config, options: Options) -> Result<(), server::ServeError> {
    let grpc = TcpListener::bind(config.grpc_addr).await?;
    let http = TcpListener::bind(config.http_addr).await?;
    tracing::info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, data_dir = %config.data_dir.display(), store = if config.store.is_some() { "postgres" } else { "sled" }, "keyward starting");
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<server::Ready>();
    tokio::spawn(async move {
        if let Ok(ready) = ready_rx.await {
            if let Some(root) = ready.root_token {
                // Printed once, to stdout, never through the logger.
                println!("root token: {}", root.expose());
            }
        }
    });
    server::run(options, grpc, http, shutdown_signal(), ready_tx).await
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
