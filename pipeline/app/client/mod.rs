//! The command-line client: `ledger login|logout|projects|keys|send|query|tail|errors` against a running
//! daemon's REST API (API.md), as any other client would.
//!
//! Data goes to stdout, and nothing else does: messages, progress and errors go to stderr. A failure is one
//! line (`ledger: …`) and exit code 1. The session of `ledger login` is kept in
//! `$LEDGER_CONFIG_DIR` (default `$XDG_CONFIG_HOME/ledger`, else `~/.config/ledger`), file `session.json`,
//! mode 0600.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::cli::{ClientArgs, ErrorsArgs, KeysCommand, ProjectsCommand, QueryArgs};

mod output;
mod send;
mod tail;

pub use send::send;
pub use tail::tail;

const DEFAULT_URL: &str = "http://127.0.0.1:8000";

/// What `ledger login` keeps.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    url: String,
    email: String,
    token: String,
}

fn config_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LEDGER_CONFIG_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("ledger"))
}

fn session_file() -> anyhow::Result<PathBuf> {
    Ok(config_dir().ok_or_else(|| anyhow!("no config directory: set LEDGER_CONFIG_DIR or HOME"))?.join("session.json"))
}

fn saved() -> Option<Saved> {
    let text = std::fs::read_to_string(session_file().ok()?).ok()?;
    serde_json::from_str(&text).ok()
}

fn save(session: &Saved) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = session_file()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // A file that existed before keeps its mode otherwise.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(serde_json::to_string_pretty(session)?.as_bytes())?;
    Ok(path)
}

/// A connection to one daemon with one credential.
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// An API key, else the saved session token.
    credential: Option<String>,
    key: bool,
}

impl Client {
    /// From the arguments: `--api-key` wins over the session; `--url` over the session's URL.
    pub(crate) fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let saved = saved();
        let base = args
            .url
            .clone()
            .or_else(|| saved.as_ref().map(|s| s.url.clone()))
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let base = base.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base).map_err(|e| anyhow!("bad --url {base:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("bad --url {base:?}: it must start with http:// or https://");
        }
        let key = args.api_key.clone().filter(|k| !k.is_empty());
        let (credential, is_key) = match key {
            Some(k) => (Some(k), true),
            None => (saved.filter(|s| s.url == base).map(|s| s.token), false),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("ledger-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client { http, base, credential, key: is_key })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.credential {
            Some(c) => request.bearer_auth(c),
            None => request,
        }
    }

    fn session_required(&self) -> anyhow::Result<()> {
        if self.key || self.credential.is_none() {
            bail!(
                "this needs a session: run `ledger login` first (API keys are not accepted for accounts and projects)"
            );
        }
        Ok(())
    }

    /// Sends `request` and returns its JSON body (null for 204), or the daemon's error as one line.
    async fn send_json(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await.map_err(|e| unreachable_error(&self.base, &e))?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() { Ok(body) } else { Err(api_error(status, &body)) }
    }

    pub(crate) async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.send_json(self.request(Method::GET, path).query(query)).await
    }

    pub(crate) async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send_json(request).await
    }

    /// The project a read is for: the key's own (none needed), or `--project` with a session.
    fn read_project(&self, project: Option<&str>) -> anyhow::Result<Vec<(&'static str, String)>> {
        match (self.key, project) {
            (true, _) => Ok(Vec::new()),
            (false, Some(p)) => {
                self.session_required()?;
                Ok(vec![("project_id", p.to_owned())])
            }
            (false, None) => bail!(
                "give an API key with the query scope (--api-key or LEDGER_API_KEY), or --project after `ledger login`"
            ),
        }
    }
}

/// "cannot reach …" with the cause, one line.
fn unreachable_error(base: &str, error: &reqwest::Error) -> anyhow::Error {
    let mut cause = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    anyhow!("cannot reach the daemon at {base}: {cause}")
}

/// The daemon's error body as one line: status, code, message, and the fields' problems.
fn api_error(status: StatusCode, body: &Value) -> anyhow::Error {
    let error = &body["error"];
    let code = error["code"].as_str().unwrap_or("error");
    let message = error["message"].as_str().unwrap_or_else(|| status.canonical_reason().unwrap_or("failed"));
    let details: Vec<String> = error["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .take(5)
                .map(|p| {
                    let at = p["index"].as_u64().map(|i| format!("[{i}] ")).unwrap_or_default();
                    format!("{at}{}: {}", p["field"].as_str().unwrap_or("?"), p["reason"].as_str().unwrap_or("?"))
                })
                .collect()
        })
        .unwrap_or_default();
    let hint = if status == StatusCode::UNAUTHORIZED { " (check the key, or run `ledger login`)" } else { "" };
    let details = if details.is_empty() { String::new() } else { format!(" — {}", details.join("; ")) };
    anyhow!("{} {code}: {message}{details}{hint}", status.as_u16())
}

/// A duration like `90s`, `15m`, `1h`, `7d`.
pub(crate) fn parse_since(text: &str) -> anyhow::Result<chrono::Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().map_err(|_| anyhow!("bad duration {text:?}: use 30s, 15m, 1h or 7d"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" | "" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("bad duration {text:?}: use 30s, 15m, 1h or 7d"),
    };
    Ok(chrono::Duration::seconds(seconds))
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub async fn login(args: &ClientArgs, email: Option<String>, password_stdin: bool) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let email = match email {
        Some(e) => e,
        None => {
            eprint!("E-mail: ");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim().to_owned()
        }
    };
    let password = if password_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        rpassword::prompt_password("Password: ")?
    };
    let body = client
        .send_json(client.http.post(client.url("/v1/login")).json(&json!({"email": email, "password": password})))
        .await?;
    let token = body["token"].as_str().ok_or_else(|| anyhow!("the daemon answered without a token"))?;
    let path = save(&Saved { url: client.base.clone(), email: email.clone(), token: token.to_owned() })?;
    eprintln!("signed in to {} as {email}; the session (1 hour) is in {}", client.base, path.display());
    Ok(())
}

pub async fn logout(args: &ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(&ClientArgs { api_key: None, ..args.clone() })?;
    if client.credential.is_some() {
        // An expired session is already over: forget it all the same.
        if let Err(e) = client.call(Method::POST, "/v1/logout", None).await {
            eprintln!("ledger: the daemon did not end the session ({e:#}); forgetting it here anyway");
        }
    }
    let path = session_file()?;
    match std::fs::remove_file(&path) {
        Ok(()) => eprintln!("signed out"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => eprintln!("not signed in"),
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    Ok(())
}

pub async fn projects(command: ProjectsCommand) -> anyhow::Result<()> {
    match command {
        ProjectsCommand::List { client, output } => {
            let client = Client::new(&client)?;
            client.session_required()?;
            let body = client.get("/v1/projects", &[]).await?;
            let projects = body["projects"].as_array().cloned().unwrap_or_default();
            output::items(output, &projects, &[("ID", "id"), ("NAME", "name"), ("CREATED", "created_at")])
        }
        ProjectsCommand::Create { client, name } => {
            let client = Client::new(&client)?;
            client.session_required()?;
            let project = client.call(Method::POST, "/v1/projects", Some(json!({"name": name}))).await?;
            println!("{}", project["id"].as_str().unwrap_or_default());
            Ok(())
        }
        ProjectsCommand::Delete { client, id, yes } => {
            let client = Client::new(&client)?;
            client.session_required()?;
            if !yes {
                if !std::io::stdin().is_terminal() {
                    bail!("deleting a project needs --yes when not asked at a terminal");
                }
                eprint!("Delete project {id}? Its keys stop working and its logs can no longer be read. [y/N] ");
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                if !matches!(line.trim(), "y" | "Y" | "yes") {
                    bail!("not deleted");
                }
            }
            client.call(Method::DELETE, &format!("/v1/projects/{id}"), None).await?;
            eprintln!("deleted project {id}");
            Ok(())
        }
        ProjectsCommand::Settings { client, id, set, name } => {
            let client = Client::new(&client)?;
            client.session_required()?;
            let path = format!("/v1/projects/{id}");
            let project = if set.is_empty() && name.is_none() {
                client.get(&path, &[]).await?
            } else {
                let mut settings = serde_json::Map::new();
                for pair in &set {
                    let (k, v) = pair.split_once('=').ok_or_else(|| anyhow!("--set takes NAME=VALUE, not {pair:?}"))?;
                    let v: u64 = v.trim().parse().map_err(|_| anyhow!("--set {k}: {v:?} is not a whole number"))?;
                    settings.insert(k.trim().to_owned(), json!(v));
                }
                let mut body = json!({ "settings": settings });
                if let Some(name) = name {
                    body["name"] = json!(name);
                }
                client.call(Method::PATCH, &path, Some(body)).await?
            };
            println!("{}", serde_json::to_string_pretty(&project)?);
            Ok(())
        }
    }
}

pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { client, project, name, scopes } => {
            let client = Client::new(&client)?;
            client.session_required()?;
            let mut body = json!({});
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            if !scopes.is_empty() {
                body["scopes"] = json!(scopes);
            }
            let key = client.call(Method::POST, &format!("/v1/projects/{project}/keys"), Some(body)).await?;
            eprintln!("key {} created; it is shown this once:", key["id"].as_str().unwrap_or_default());
            println!("{}", key["key"].as_str().unwrap_or_default());
            Ok(())
        }
        KeysCommand::List { client, project, output } => {
            let client = Client::new(&client)?;
            client.session_required()?;
            let body = client.get(&format!("/v1/projects/{project}/keys"), &[]).await?;
            let keys = body["keys"].as_array().cloned().unwrap_or_default();
            let columns = [
                ("ID", "id"),
                ("NAME", "name"),
                ("PREFIX", "prefix"),
                ("SCOPES", "scopes"),
                ("LAST USED", "last_used_at"),
                ("REVOKED", "revoked_at"),
            ];
            output::items(output, &keys, &columns)
        }
        KeysCommand::Revoke { client, project, key_id } => {
            let client = Client::new(&client)?;
            client.session_required()?;
            client.call(Method::DELETE, &format!("/v1/projects/{project}/keys/{key_id}"), None).await?;
            eprintln!("revoked key {key_id}");
            Ok(())
        }
    }
}

/// `query`'s parameters: the filters and the range.
fn filter_params(filters: &super::cli::Filters) -> Vec<(&'static str, String)> {
    let pairs = [
        ("level", &filters.level),
        ("min_level", &filters.min_level),
        ("service", &filters.service),
        ("environment", &filters.environment),
        ("q", &filters.q),
        ("fingerprint", &filters.fingerprint),
        ("trace_id", &filters.trace_id),
    ];
    pairs.into_iter().filter_map(|(k, v)| v.clone().map(|v| (k, v))).collect()
}

pub async fn query(args: QueryArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let mut params = client.read_project(args.filters.project.as_deref())?;
    params.extend(filter_params(&args.filters));
    let to = args.to.clone().unwrap_or_else(|| rfc3339(chrono::Utc::now()));
    let from = match &args.from {
        Some(from) => from.clone(),
        None => rfc3339(chrono::Utc::now() - parse_since(&args.since)?),
    };
    params.push(("from", from));
    params.push(("to", to));
    // Printed as they come: only how many is kept (`--limit 0`: every page).
    let mut printed = 0usize;
    let mut cursor: Option<String> = None;
    let mut out = output::Sink::new(args.output);
    let wanted = |printed: usize| args.limit == 0 || printed < args.limit;
    while wanted(printed) {
        let page = if args.limit == 0 { 1000 } else { (args.limit - printed).min(1000) };
        let mut query = params.clone();
        query.push(("limit", page.to_string()));
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let body = client.get("/v1/logs", &query).await?;
        for log in body["logs"].as_array().map(Vec::as_slice).unwrap_or_default() {
            out.log(log)?;
            printed += 1;
        }
        match body["next_cursor"].as_str() {
            Some(next) if wanted(printed) => cursor = Some(next.to_owned()),
            _ => break,
        }
    }
    out.finish()
}

pub async fn errors(args: ErrorsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let mut params = client.read_project(args.project.as_deref())?;
    params.push(("from", rfc3339(chrono::Utc::now() - parse_since(&args.since)?)));
    params.push(("limit", args.limit.to_string()));
    let body = client.get("/v1/metrics/top-errors", &params).await?;
    let errors = body["errors"].as_array().cloned().unwrap_or_default();
    let columns = [
        ("COUNT", "count"),
        ("STATUS", "status"),
        ("LEVEL", "level"),
        ("SERVICE", "service"),
        ("LAST SEEN", "last_seen"),
        ("FINGERPRINT", "fingerprint"),
        ("ERROR", "sample_message"),
    ];
    output::items(args.output, &errors, &columns)
}
