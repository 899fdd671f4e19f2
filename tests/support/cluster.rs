//! A local Redis Cluster for tests and benches: three primaries with a replica each, `redis-server
//! --cluster-enabled yes` on free loopback ports, joined by `redis-cli --cluster create`. Killed (and its
//! files removed) when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

/// A port that is free, and whose cluster bus port (+10,000) is free too.
fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// `redis-cli -p <port> <args>`'s output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args).output().expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A node as `CLUSTER NODES` lists it.
struct Listed {
    id: String,
    port: Option<u16>,
    flags: String,
    /// The id of the primary it replicates (`-` for a primary).
    primary_id: String,
    /// Slot ranges (`0-5460`) or single slots.
    slots: Vec<String>,
}

impl Listed {
    /// A primary not flagged as failing (or possibly failing).
    fn is_primary(&self) -> bool {
        self.flags.contains("master") && !self.flags.contains("fail")
    }
}

/// `CLUSTER NODES` as the node on `port` sees it: id, address (`ip:port@bus-port`), flags, primary's id,
/// ping, pong, epoch, link, slots….
fn listing(port: u16) -> Vec<Listed> {
    let nodes = cli(port, &["CLUSTER", "NODES"]);
    let listed = |line: &str| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() >= 8).then(|| Listed {
            id: fields[0].to_owned(),
            port: fields[1].split('@').next().and_then(|a| a.rsplit(':').next()).and_then(|p| p.parse().ok()),
            flags: fields[2].to_owned(),
            primary_id: fields[3].to_owned(),
            slots: fields[8..].iter().map(|s| (*s).to_owned()).collect(),
        })
    };
    nodes.lines().filter_map(listed).collect()
}

fn until(within: Duration, what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("not within {within:?}: {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

impl RedisCluster {
    /// Starts six nodes and makes them a cluster of three primaries with a replica each; returns once every
    /// node says the cluster is ok and every primary has its replica attached. A try that does not get there
    /// (a node that could not take its port, a cluster that does not form) is torn down and made again on
    /// other ports, three times at most.
    pub fn start() -> RedisCluster {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match RedisCluster::try_start() {
                Ok(cluster) => return cluster,
                Err(failure) => {
                    eprintln!("the Redis Cluster did not form; again on other ports: {failure}");
                    failures.push(failure);
                }
            }
        }
        panic!("the Redis Cluster did not form in three tries:\n{}", failures.join("\n---\n"));
    }

    fn try_start() -> Result<RedisCluster, String> {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"])
                .args(["--appendonly", "no", "--save", "", "--protected-mode", "no", "--logfile", "redis.log"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs (Debian: apt-get install redis-server)");
            nodes.push(Node { port, child: Some(child) });
        }
        // From here on, dropping `cluster` stops the nodes.
        let mut cluster = RedisCluster { nodes, dir };
        match cluster.form() {
            Ok(()) => Ok(cluster),
            Err(failure) => Err(failure + &cluster.describe()),
        }
    }

    /// Joins the started nodes into a cluster and waits until it is whole.
    fn form(&mut self) -> Result<(), String> {
        for port in self.live_ports() {
            until(Duration::from_secs(10), "every node answers", || cli(port, &["PING"]).trim() == "PONG")?;
        }
        // A node that could not take its port (or its bus port) has exited; another process may answer there.
        for node in &mut self.nodes {
            if let Some(status) = node.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("redis-server on port {} exited: {status}", node.port));
            }
        }
        let addresses: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        if !created.status.success() {
            return Err(format!("redis-cli --cluster create: {}", String::from_utf8_lossy(&created.stdout)));
        }
        self.wait_healthy()
    }

    /// Each node's view of the cluster and the end of its log: what a failure to form shows.
    fn describe(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let log = std::fs::read_to_string(self.dir.path().join(node.port.to_string()).join("redis.log"));
            let log = log.unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(8)..];
            out += &format!(
                "\nnode {}: CLUSTER NODES\n{}its log's end:\n{}\n",
                node.port,
                cli(node.port, &["CLUSTER", "NODES"]),
                tail.join("\n")
            );
        }
        out
    }

    /// Waits until every node says the cluster is ok and each primary has a replica attached.
    ///
    /// On a loaded machine `redis-cli --cluster create` can leave a node out: a `CLUSTER MEET` handshake that
    /// outlasts the node timeout is dropped, or a replica that does not know its primary's id yet refuses
    /// `CLUSTER REPLICATE`, which redis-cli only prints; either way a primary has no replica (CI has shown a
    /// cluster of five nodes). Such a node is met again and told again to replicate a primary that has none.
    fn wait_healthy(&self) -> Result<(), String> {
        for port in self.live_ports() {
            until(Duration::from_secs(30), "cluster_state:ok on every node", || {
                // A node left out of the cluster knows no slots: it is only ok once it has been met again.
                self.repair_replicas();
                cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            })?;
        }
        until(Duration::from_secs(60), "every primary has its replica attached", || {
            self.repair_replicas();
            let primaries = self.primaries();
            primaries.len() == 3
                && primaries.iter().all(|p| {
                    let info = cli(*p, &["INFO", "replication"]);
                    info.contains("connected_slaves:1") && info.contains("state=online")
                })
        })
    }

    /// Tells a node of ours that the first node does not know to meet it again, and a node that is a primary
    /// without slots to replicate a primary with slots and no replica, if there are both (see `wait_healthy`).
    /// Errors are left to the next try.
    fn repair_replicas(&self) {
        let Some(port) = self.live_ports().first().copied() else { return };
        let nodes = listing(port);
        for stranger in self.live_ports().into_iter().filter(|p| !nodes.iter().any(|n| n.port == Some(*p))) {
            cli(stranger, &["CLUSTER", "MEET", "127.0.0.1", &port.to_string()]);
        }
        let replicated = |id: &str| nodes.iter().any(|n| n.flags.contains("slave") && n.primary_id == id);
        let orphaned = nodes.iter().filter(|n| n.is_primary() && !n.slots.is_empty() && !replicated(&n.id));
        let idle = nodes.iter().filter(|n| n.is_primary() && n.slots.is_empty());
        for (primary, node) in orphaned.zip(idle) {
            if let Some(node_port) = node.port {
                cli(node_port, &["CLUSTER", "REPLICATE", &primary.id]);
            }
        }
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.port).collect()
    }

    /// Every node, comma-separated: what `redis.url` takes.
    pub fn url(&self) -> String {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    /// The ports of the primaries, as a live node sees them.
    pub fn primaries(&self) -> Vec<u16> {
        let Some(port) = self.live_ports().first().copied() else { return Vec::new() };
        listing(port).into_iter().filter(Listed::is_primary).filter_map(|n| n.port).collect()
    }

    /// The port of the primary that holds `key`'s slot.
    pub fn primary_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        let slot: u16 = cli(port, &["CLUSTER", "KEYSLOT", key]).trim().parse().unwrap();
        for node in listing(port).into_iter().filter(Listed::is_primary) {
            let holds = node.slots.iter().any(|range| {
                let mut ends = range.split('-').filter_map(|n| n.parse::<u16>().ok());
                match (ends.next(), ends.next()) {
                    (Some(from), Some(to)) => (from..=to).contains(&slot),
                    (Some(only), None) => only == slot,
                    _ => false,
                }
            });
            if holds {
                return node.port.expect("a node's address has a port");
            }
        }
        panic!("no primary holds slot {slot}");
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every key starting with `prefix`, on every live primary.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let pattern = format!("{prefix}*");
        self.primaries()
            .into_iter()
            .flat_map(|p| cli(p, &["KEYS", &pattern]).lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|k| !k.is_empty())
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
