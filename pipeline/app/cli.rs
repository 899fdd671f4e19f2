//! The command line: `ledger serve`, `ledger migrate`, `ledger check-config`, `ledger dead-letter`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Ledger: a log ingestion and query daemon.
///
/// Configuration comes from config.toml (or --config), overridden by LEDGER__SECTION__KEY environment
/// variables, e.g. LEDGER__SERVER__HTTP_ADDR=127.0.0.1:18000.
#[derive(Debug, Parser)]
#[command(name = "ledger", version, propagate_version = true)]
pub struct Cli {
    /// The configuration file. Default: ./config.toml when it exists, else built-in defaults.
    #[arg(long, short, global = true, env = "LEDGER_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: REST and gRPC fronts and the roles of [roles]. Stops gracefully on SIGTERM.
    Serve,
    /// Create the databases when missing, apply the migrations in schema/, and exit.
    Migrate,
    /// Check the configuration (file and environment) and print the effective one, secrets hidden.
    CheckConfig,
    /// Queue entries that could not be written (shared backend): list them, put them back, or discard them.
    #[command(subcommand)]
    DeadLetter(DeadLetterCommand),
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters, oldest first: id, shard, project, logs, reason, when, and what went wrong.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on the queue, to be written again (after the cause is fixed).
    Replay {
        /// The dead letters to replay (ids from `list`); all of them when none is given.
        ids: Vec<i64>,
    },
    /// Delete dead letters for good.
    Discard {
        /// The dead letters to delete (ids from `list`).
        #[arg(required = true)]
        ids: Vec<i64>,
    },
}
