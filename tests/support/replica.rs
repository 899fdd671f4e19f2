//! A PostgreSQL primary and its streaming replica for tests: a fresh cluster (`initdb`) on a free loopback
//! port, and a replica made from it with `pg_basebackup -R` on another, both in a temporary directory.
//! Stopped (immediate shutdown) and removed when dropped. As root, the servers run as the `postgres` user.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PgReplicaPair {
    pub primary_port: u16,
    pub replica_port: u16,
    servers: Vec<Child>,
    dir: tempfile::TempDir,
}

/// The directory of PostgreSQL's server programs: `pg_config --bindir`, else Debian's newest
/// `/usr/lib/postgresql/<version>/bin`.
fn bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("postgres").exists() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server programs (Debian: apt-get install postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    versions.sort_by_key(|bin| bin.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0));
    versions.pop().expect("a /usr/lib/postgresql/<version>/bin with postgres in it")
}

/// uid and gid to run the servers as: `postgres` when we are root (PostgreSQL refuses root), else ourselves.
fn run_as() -> Option<(u32, u32)> {
    let me = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").arg(flag).arg("postgres").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("a postgres user")
    };
    Some((id("-u"), id("-g")))
}

use super::free_port;

fn command(program: &str) -> Command {
    let mut command = Command::new(bindir().join(program));
    if let Some((uid, gid)) = run_as() {
        command.uid(uid).gid(gid);
    }
    command.env("LC_ALL", "C");
    command
}

fn run(mut command: Command, what: &str) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_server(data: &Path, socket_dir: &Path, port: u16, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(socket_dir, Some(uid), Some(gid)).unwrap();
    }
    command("postgres")
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", socket_dir.display()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("postgres starts")
}

fn wait_ready(port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(bindir().join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL on port {port} not ready within 30 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl PgReplicaPair {
    /// Starts a primary, copies it with `pg_basebackup` and starts the copy as its streaming replica.
    pub fn start() -> PgReplicaPair {
        let dir = tempfile::tempdir().unwrap();
        if let Some((uid, gid)) = run_as() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let (primary, replica) = (dir.path().join("primary"), dir.path().join("replica"));
        let mut initdb = command("initdb");
        initdb.arg("-D").arg(&primary).args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        run(initdb, "initdb");
        let primary_port = free_port();
        let mut servers = vec![start_server(&primary, dir.path(), primary_port, &dir.path().join("primary.log"))];
        wait_ready(primary_port, &dir.path().join("primary.log"));

        let mut backup = command("pg_basebackup");
        backup.args(["-h", "127.0.0.1", "-p", &primary_port.to_string(), "-U", "postgres", "-R", "-X", "stream"]);
        backup.arg("-D").arg(&replica);
        run(backup, "pg_basebackup");
        let replica_port = free_port();
        servers.push(start_server(&replica, dir.path(), replica_port, &dir.path().join("replica.log")));
        wait_ready(replica_port, &dir.path().join("replica.log"));
        PgReplicaPair { primary_port, replica_port, servers, dir }
    }

    /// `postgres://postgres@127.0.0.1:<primary>`: append `/<database>`.
    pub fn primary_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.primary_port)
    }

    pub fn replica_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.replica_port)
    }

    /// The servers' logs, for a failure report.
    pub fn logs(&self) -> String {
        ["primary.log", "replica.log"]
            .iter()
            .map(|f| format!("--- {f}\n{}", std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default()))
            .collect()
    }
}

impl Drop for PgReplicaPair {
    fn drop(&mut self) {
        for server in &mut self.servers {
            // SIGQUIT: PostgreSQL's immediate shutdown, which also ends its child processes.
            if let Ok(pid) = i32::try_from(server.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGQUIT);
            }
            let _ = server.wait();
        }
    }
}
