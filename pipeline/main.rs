//! `ledger`: a thin binary over the library. Errors end the process with one line on stderr and code 1.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ledger::app::cli::{Cli, Command};
use ledger::config::Config;
use ledger::{app, telemetry};
use tokio_util::sync::CancellationToken;

/// mimalloc: the ingestion path allocates per log (decoded JSON, records, queue entries), and glibc's
/// malloc showed up as a fifth of the daemon's time under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` puts the whole chain on one line.
            eprintln!("ledger: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.command.is_client() {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
        return runtime.block_on(client(cli.command));
    }
    let config = Config::load(cli.config.as_deref())?;
    if let Command::CheckConfig = cli.command {
        println!("configuration is valid: {config:#?}");
        return Ok(());
    }
    if let Command::Reload { pid } = cli.command {
        let pid = app::signal_reload(&config, pid)?;
        println!("asked the daemon (pid {pid}) to reload; its log says whether the new rules are in place");
        return Ok(());
    }
    without_huge_pages();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
    // The span exporter's channel lives on the runtime, so telemetry starts inside it.
    let telemetry = {
        let _inside = runtime.enter();
        let to = match cli.command {
            Command::Serve => telemetry::LogTo::Stdout,
            _ => telemetry::LogTo::Stderr,
        };
        telemetry::init(&config.telemetry, to).map_err(anyhow::Error::msg)?
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => {
                let shutdown = CancellationToken::new();
                tokio::spawn(app::cancel_on_signal(shutdown.clone()));
                app::run(config, shutdown).await?;
            }
            Command::Migrate => {
                app::migrate(&config).await?;
                tracing::info!("migrations applied");
            }
            Command::DeadLetter(command) => app::dead_letter(&config, command).await?,
            _ => {}
        }
        Ok(())
    });
    // Flushing blocks on the exporter, whose channel runs on the runtime's workers: still alive here.
    telemetry.shutdown();
    result
}

/// Transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` is set (mimalloc's own switch:
/// `=1` keeps them). mimalloc asks for huge pages on its arenas, and a huge page stays resident as long as
/// any allocation in it lives: under batched load, with writes of 5,000 logs, the daemon's peak RSS was ~170
/// MB with them and ~125 MB without, at the same CPU per log (README, "Benchmarks"). Where the kernel
/// cannot, nothing changes.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}

/// The client's commands, against a running daemon.
async fn client(command: Command) -> anyhow::Result<()> {
    use ledger::app::client;
    match command {
        Command::Login { client: args, email, password_stdin } => client::login(&args, email, password_stdin).await,
        Command::Logout { client: args } => client::logout(&args).await,
        Command::Projects(command) => client::projects(command).await,
        Command::Keys(command) => client::keys(command).await,
        Command::Send(args) => client::send(args).await,
        Command::Query(args) => client::query(args).await,
        Command::Tail(args) => client::tail(args).await,
        Command::Errors(args) => client::errors(args).await,
        Command::Serve | Command::Migrate | Command::CheckConfig | Command::Reload { .. } | Command::DeadLetter(_) => {
            Ok(())
        }
    }
}
