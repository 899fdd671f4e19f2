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
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
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

/// The port of a node's address as `CLUSTER NODES` gives it (`ip:port@bus-port`).
fn port_of(address: &str) -> Option<u16> {
    address.split('@').next()?.rsplit(':').next()?.parse().ok()
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
            let tail: Vec<&str> = log.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
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
        let listing = cli(port, &["CLUSTER", "NODES"]);
        // id, address, flags, primary's id, ping, pong, epoch, link, slots…
        let nodes: Vec<Vec<&str>> =
            listing.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).filter(|f| f.len() >= 8).collect();
        let known: Vec<u16> = nodes.iter().filter_map(|f| port_of(f[1])).collect();
        for stranger in self.live_ports().into_iter().filter(|p| !known.contains(p)) {
            cli(stranger, &["CLUSTER", "MEET", "127.0.0.1", &port.to_string()]);
        }
        let is_primary = |f: &Vec<&str>| f[2].contains("master") && !f[2].contains("fail");
        let replicated = |id: &str| nodes.iter().any(|f| f[2].contains("slave") && f[3] == id);
        let orphaned = nodes.iter().filter(|f| is_primary(f) && f.len() > 8 && !replicated(f[0]));
        let idle = nodes.iter().filter(|f| is_primary(f) && f.len() == 8);
        for (primary, node) in orphaned.zip(idle) {
            if let Some(node_port) = port_of(node[1]) {
                cli(node_port, &["CLUSTER", "REPLICATE", primary[0]]);
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
        cli(port, &["CLUSTER", "NODES"])
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(|l| port_of(l.split(' ').nth(1)?))
            .collect()
    }

    /// The port of the primary that holds `key`'s slot.
    pub fn primary_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        let slot: u16 = cli(port, &["CLUSTER", "KEYSLOT", key]).trim().parse().unwrap();
        for line in cli(port, &["CLUSTER", "NODES"]).lines().filter(|l| l.contains("master") && !l.contains("fail")) {
            let fields: Vec<&str> = line.split(' ').collect();
            let holds = fields[8..].iter().any(|range| {
                let mut ends = range.split('-').filter_map(|n| n.parse::<u16>().ok());
                match (ends.next(), ends.next()) {
                    (Some(from), Some(to)) => (from..=to).contains(&slot),
                    (Some(only), None) => only == slot,
                    _ => false,
                }
            });
            if holds {
                return port_of(fields[1]).expect("a node's address has a port");
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
