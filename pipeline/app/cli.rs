//! The command line: the daemon's commands (`serve`, `migrate`, `check-config`, `dead-letter`) and the
//! client's (`login`, `projects`, `keys`, `send`, `query`, `tail`, `errors`), which talk to a running daemon
//! over its REST API.

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
    /// Run the daemon: its fronts (REST, gRPC, OTLP, Loki, Elasticsearch, syslog) and the roles of [roles].
    /// Stops gracefully on SIGTERM.
    Serve,
    /// Create the databases when missing, apply the migrations in schema/, and exit.
    Migrate,
    /// Check the configuration (file and environment) and print the effective one, secrets hidden.
    CheckConfig,
    /// Make a running daemon re-read its configuration and apply its parse, redact and sample rules (sends
    /// it SIGHUP). The configuration is checked here first: one that does not load is refused, naming why.
    Reload {
        /// The daemon's process id. Default: the one `ledger serve` wrote to `backend.data_dir`/ledger.pid.
        #[arg(long)]
        pid: Option<i32>,
    },
    /// Queue entries that could not be written (shared backend): list them, put them back, or discard them.
    #[command(subcommand)]
    DeadLetter(DeadLetterCommand),
    /// Sign in to a daemon; the session is kept in the user's config directory (mode 0600) for an hour.
    Login {
        #[command(flatten)]
        client: ClientArgs,
        /// The account's e-mail (asked when not given).
        #[arg(long, env = "LEDGER_EMAIL")]
        email: Option<String>,
        /// Read the password from the first line of standard input instead of asking for it.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Sign out: the session is ended on the daemon and forgotten here.
    Logout {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Your projects (needs `ledger login`).
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// A project's API keys (needs `ledger login`).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Send logs from standard input or files: one log per line, plain text or JSON objects.
    Send(SendArgs),
    /// Search a project's logs, newest first (every filter of GET /v1/logs).
    Query(QueryArgs),
    /// Watch a project's logs as they are stored; reconnects and resumes by itself.
    Tail(TailArgs),
    /// A project's most frequent errors.
    Errors(ErrorsArgs),
}

impl Command {
    /// Whether this is a client command (it talks to a running daemon and needs no configuration).
    pub fn is_client(&self) -> bool {
        !matches!(
            self,
            Command::Serve | Command::Migrate | Command::CheckConfig | Command::Reload { .. } | Command::DeadLetter(_)
        )
    }
}

/// Where the daemon is and who is asking.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The daemon's REST address. Default: the one `ledger login` used, else http://127.0.0.1:8000.
    #[arg(long, env = "LEDGER_URL")]
    pub url: Option<String>,
    /// An API key (`ledger_…`): `ingest` scope to send, `query` to read. Without one, reads use the
    /// session of `ledger login` and need --project.
    #[arg(long, env = "LEDGER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// One JSON document.
    Json,
    /// One JSON object per line.
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// List your projects.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// Create a project; prints its id.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
    /// Delete a project: its keys stop working and its logs can no longer be read.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// The project's id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Show a project's settings, or change them with --set.
    Settings {
        #[command(flatten)]
        client: ClientArgs,
        /// The project's id.
        id: String,
        /// A setting to change, e.g. --set daily_quota=5000000 (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints the key itself, which is shown this once.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, env = "LEDGER_PROJECT")]
        project: String,
        #[arg(long)]
        name: Option<String>,
        /// `ingest` and/or `query` (repeatable); default ingest.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
    },
    /// List a project's keys (never the keys themselves).
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, env = "LEDGER_PROJECT")]
        project: String,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// Revoke a key: refused from the next request on, on every instance.
    Revoke {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, env = "LEDGER_PROJECT")]
        project: String,
        /// The key's id (from `keys list`).
        key_id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Files to send, one log per line; standard input when none is given (or `-`).
    pub files: Vec<PathBuf>,
    /// Each line is a JSON log object (the fields of POST /v1/logs), not plain text.
    #[arg(long)]
    pub json: bool,
    /// The service of every log that does not name one.
    #[arg(long)]
    pub service: Option<String>,
    /// The level of every log that does not have one.
    #[arg(long)]
    pub level: Option<String>,
    /// The environment of every log that does not name one.
    #[arg(long)]
    pub environment: Option<String>,
    /// An attribute for every log, e.g. --attr pod=api-7 (repeatable).
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    pub attrs: Vec<String>,
    /// Logs per request (1 to 1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
    /// Tries per batch while the daemon answers 429 or 503 or cannot be reached (waiting as it says).
    #[arg(long, default_value_t = 10)]
    pub retries: u32,
}

/// The filters of GET /v1/logs, shared by `query` and `tail`.
#[derive(Debug, Clone, clap::Args)]
pub struct Filters {
    /// The project (with a session from `ledger login`; an API key names its own).
    #[arg(long, env = "LEDGER_PROJECT")]
    pub project: Option<String>,
    /// Levels, comma-separated (DEBUG, INFO, WARNING, ERROR, CRITICAL).
    #[arg(long)]
    pub level: Option<String>,
    /// This level or higher.
    #[arg(long)]
    pub min_level: Option<String>,
    /// Services, comma-separated.
    #[arg(long)]
    pub service: Option<String>,
    #[arg(long)]
    pub environment: Option<String>,
    /// Full text: every word must occur; "a phrase" in quotes as a phrase.
    #[arg(long, short)]
    pub q: Option<String>,
    #[arg(long)]
    pub fingerprint: Option<String>,
    #[arg(long)]
    pub trace_id: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub filters: Filters,
    /// How far back: 30s, 15m, 1h, 7d … (ignored with --from).
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Start of the range, RFC 3339.
    #[arg(long)]
    pub from: Option<String>,
    /// End of the range, RFC 3339 (default now).
    #[arg(long)]
    pub to: Option<String>,
    /// Logs at most, fetched page by page.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub filters: Filters,
    /// One JSON object per line instead of coloured text.
    #[arg(long)]
    pub jsonl: bool,
}

#[derive(Debug, clap::Args)]
pub struct ErrorsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The project (with a session from `ledger login`).
    #[arg(long, env = "LEDGER_PROJECT")]
    pub project: Option<String>,
    /// How far back: 1h, 24h, 7d …
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Errors at most (1 to 100).
    #[arg(long, default_value_t = 10)]
    pub limit: u32,
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: Output,
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
