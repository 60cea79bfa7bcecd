//! Local services for the test suite: check each one and start it where the machine has it
//! installed. URLs default to the local services unless already set in the environment.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

struct Service {
    name: &'static str,
    env: &'static str,
    url: &'static str,
    addr: &'static str,
    binary: &'static str,
    start: fn() -> Result<(), String>,
}

const SERVICES: &[Service] = &[
    Service {
        name: "PostgreSQL",
        env: "DATABASE_URL",
        url: "postgres://postgres@127.0.0.1:5432/postgres",
        addr: "127.0.0.1:5432",
        binary: "/usr/bin/pg_ctlcluster",
        start: start_postgres,
    },
    Service {
        name: "RabbitMQ",
        env: "AMQP_URL",
        url: "amqp://guest:guest@127.0.0.1:5672/%2f",
        addr: "127.0.0.1:5672",
        binary: "/usr/sbin/rabbitmq-server",
        start: start_rabbitmq,
    },
    Service {
        name: "NATS",
        env: "NATS_URL",
        url: "nats://127.0.0.1:4222",
        addr: "127.0.0.1:4222",
        binary: "/usr/sbin/nats-server",
        start: start_nats,
    },
];

fn open(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .ok()
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}

fn wait_open(addr: &str, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if open(addr) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

fn sh(cmd: &str) -> Result<(), String> {
    crate::run(Command::new("sh").args(["-c", cmd]))
}

fn start_postgres() -> Result<(), String> {
    sh("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main start")
}

fn start_rabbitmq() -> Result<(), String> {
    sh("rabbitmq-server -detached")?;
    // await_startup can fail while the node boots: retry.
    for _ in 0..30 {
        if Command::new("rabbitmqctl")
            .args(["await_startup"])
            .status()
            .is_ok_and(|s| s.success())
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err("rabbitmqctl await_startup did not succeed within 30 s".into())
}

fn start_nats() -> Result<(), String> {
    sh(
        "mkdir -p /var/lib/nats-server && start-stop-daemon --start --oknodo --background \
        --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server \
        -l /var/log/nats-server.log",
    )
}

/// Make sure every service the tests use answers; returns the default URLs of the local
/// ones whose variable is unset, for the caller to pass to child processes.
pub fn ensure() -> Result<Vec<(String, String)>, String> {
    let mut env = Vec::new();
    for s in SERVICES {
        if let Ok(url) = std::env::var(s.env) {
            eprintln!("services: {} from {}={}", s.name, s.env, redact(&url));
            continue;
        }
        if !open(s.addr) {
            if std::path::Path::new(s.binary).exists() {
                eprintln!("services: {} is down on {}, starting it", s.name, s.addr);
                (s.start)()?;
                if !wait_open(s.addr, Duration::from_secs(60)) {
                    return Err(format!("{} did not come up on {}", s.name, s.addr));
                }
            } else {
                // Leave the variable unset: the test harness then tries testcontainers and
                // fails loudly, naming the variable, when no Docker engine answers.
                eprintln!(
                    "services: {} is not installed here and {} is unset; tests will try testcontainers",
                    s.name, s.env
                );
                continue;
            }
        }
        eprintln!("services: {} up on {}", s.name, s.addr);
        env.push((s.env.to_owned(), s.url.to_owned()));
    }
    Ok(env)
}

/// Hide a password in a URL for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
