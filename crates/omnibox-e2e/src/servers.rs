//! Throwaway servers of a test's own — a PostgreSQL cluster, a RabbitMQ node, a NATS
//! server — on free ports with their own data directories, so that restart faults never
//! touch the shared services. Each is stopped and its directory removed on drop, even when
//! the test fails. Every function blocks (call it from `spawn_blocking` inside a runtime).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A free TCP port on the loopback interface.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("find a free port: {e}"))
}

/// A fresh directory under the system temporary directory.
pub fn scratch_dir(prefix: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(omnibox_testing::unique_name(prefix));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn chown(owner: &str, dir: &Path) -> Result<(), String> {
    let status = Command::new("chown")
        .args(["-R", owner])
        .arg(dir)
        .status()
        .map_err(|e| format!("run chown: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("chown {owner} {}: {status}", dir.display()))
    }
}

fn output(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Poll `ready` every `period` until it holds or [`START_LIMIT`] passes.
fn wait_for(what: &str, period: Duration, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + START_LIMIT;
    while !ready() {
        if Instant::now() > deadline {
            return Err(format!("{what}: not ready after {START_LIMIT:?}"));
        }
        std::thread::sleep(period);
    }
    Ok(())
}

/// Send signal `sig` (a name `kill -s` takes: `STOP`, `CONT`, `KILL`, …) to process `pid`.
pub fn signal(pid: u32, sig: &str) -> Result<(), String> {
    output(
        Command::new("kill").args(["-s", sig, &pid.to_string()]),
        &format!("kill -s {sig} {pid}"),
    )
    .map(drop)
}

/// A private PostgreSQL cluster (`initdb` as the `postgres` user, own port, `fsync=off`).
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

fn run_as_postgres(args: &[&str]) -> Result<String, String> {
    output(
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args),
        &format!("{args:?}"),
    )
}

impl PgCluster {
    /// Create and start a cluster.
    pub fn create() -> Result<Self, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("PostgreSQL server binaries under /usr/lib/postgresql: {e}"))?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .ok_or("no initdb under /usr/lib/postgresql/*/bin")?;
        let dir = scratch_dir("omnibox_pg")?;
        chown("postgres:postgres", &dir)?;
        let c = Self {
            bin,
            dir,
            port: free_port()?,
        };
        run_as_postgres(&[
            c.tool("initdb").as_str(),
            "-D",
            c.data().as_str(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ])?;
        c.start()?;
        Ok(c)
    }

    fn tool(&self, name: &str) -> String {
        self.bin.join(name).to_string_lossy().into_owned()
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    /// The cluster's URL (database `postgres`, user `postgres`, trust auth).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Start the server and wait until it accepts connections.
    pub fn start(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        run_as_postgres(&[
            self.tool("pg_ctl").as_str(),
            "-D",
            self.data().as_str(),
            "-l",
            log.to_string_lossy().as_ref(),
            "-o",
            opts.as_str(),
            "-w",
            "-t",
            "30",
            "start",
        ])
        .map(drop)
    }

    /// Stop the server (`mode`: `smart`, `fast` or `immediate`).
    pub fn stop(&self, mode: &str) -> Result<(), String> {
        run_as_postgres(&[
            self.tool("pg_ctl").as_str(),
            "-D",
            self.data().as_str(),
            "-m",
            mode,
            "-w",
            "-t",
            "30",
            "stop",
        ])
        .map(drop)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run `rabbitmqctl` (on `node`, or the default node) and return its output.
pub fn rabbitmqctl(node: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("rabbitmqctl");
    if let Some(node) = node {
        cmd.args(["-n", node]);
    }
    output(cmd.args(args), &format!("rabbitmqctl {args:?}"))
}

/// Close (broker side) every connection whose client properties contain
/// `connection_name`; returns how many were closed.
pub fn close_connections(node: Option<&str>, connection_name: &str) -> Result<usize, String> {
    let list = rabbitmqctl(
        node,
        &["-q", "list_connections", "pid", "client_properties"],
    )?;
    let pids: Vec<&str> = list
        .lines()
        .filter(|l| l.contains(connection_name))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for pid in &pids {
        // A connection may close by itself between the listing and the close.
        let _ = rabbitmqctl(node, &["close_connection", pid, "omnibox fault injection"]);
    }
    Ok(pids.len())
}

/// A RabbitMQ node of a test's own (own node name, ports and data directory).
#[derive(Debug)]
pub struct RabbitNode {
    node: String,
    dir: PathBuf,
    port: u16,
}

impl RabbitNode {
    /// Start a node and wait until it has booted.
    pub fn start() -> Result<Self, String> {
        let guard = Self {
            node: format!("{}@localhost", omnibox_testing::unique_name("omnibox_rmq")),
            port: free_port()?,
            dir: scratch_dir("omnibox_rmq")?,
        };
        let dist = free_port()?;
        let d = &guard.dir;
        std::fs::write(
            d.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.1 = 127.0.0.1:{}\nloopback_users = none\n",
                guard.port
            ),
        )
        .map_err(|e| format!("write rabbitmq.conf: {e}"))?;
        std::fs::write(d.join("plugins"), "[].\n").map_err(|e| format!("write plugins: {e}"))?;
        // `rabbitmq-server` drops to the `rabbitmq` user when started as root.
        let _ = chown("rabbitmq:rabbitmq", d);
        output(
            Command::new("rabbitmq-server")
                .arg("-detached")
                .env("RABBITMQ_NODENAME", &guard.node)
                .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
                .env("RABBITMQ_DIST_PORT", dist.to_string())
                .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", d.join("log"))
                .env("RABBITMQ_PID_FILE", d.join("pid"))
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("plugins")),
            "rabbitmq-server -detached",
        )?;
        // `await_startup` right after `-detached` can fail while the node boots: retry.
        wait_for(
            "throwaway RabbitMQ node",
            Duration::from_millis(500),
            || {
                guard
                    .ctl(&["-q", "await_startup", "--timeout", "10"])
                    .is_ok()
            },
        )?;
        Ok(guard)
    }

    /// The node's AMQP URL (guest/guest, default vhost).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The node's AMQP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's name (`rabbitmqctl -n`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Run `rabbitmqctl` against this node.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        rabbitmqctl(Some(&self.node), args)
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `nats-server -js` child process of a test's own (own port and store directory).
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Start a server and wait until it accepts TCP connections.
    pub fn start() -> Result<Self, String> {
        let mut nats = Self {
            port: free_port()?,
            dir: scratch_dir("omnibox_nats")?,
            child: None,
        };
        nats.restart()?;
        Ok(nats)
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)start the server on the same port and store directory.
    pub fn restart(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err("nats-server is already running".into());
        }
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start nats-server: {e}"))?;
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for("throwaway nats-server", Duration::from_millis(50), || {
            std::net::TcpStream::connect(&addr).is_ok()
        })
    }

    /// SIGKILL the server and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
