//! Project automation, as plain Rust (`cargo xtask <command>`).
//!
//! - `ci`: `lint`, then `test`.
//! - `lint`: fmt check, clippy (-D warnings), tidy, docs (-D warnings), cargo-deny.
//! - `test`: make sure the local services run, then run every test (nextest + doctests).
//! - `tidy`: layering checks (omnibox-core's dependency closure has no I/O client).
//! - `bench`: the criterion benchmarks, then the end-to-end suite (`omnibox-e2e/benches/suite.rs`).
//! - `services`: check (and start, where installed) PostgreSQL, RabbitMQ and NATS.
//! - `example <name>`: services, then `cargo run` the example.
//! - `chaos [--broker B] [--minutes N] [--seconds N] [--seed S] …`: the chaos rig (faults
//!   under load, then a ledger; see `crates/omnibox-e2e/src/chaos`).

mod prereqs;
mod services;
mod tidy;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("lint") => lint(),
        Some("test") => test(&args[1..]),
        Some("tidy") => tidy::run(),
        Some("bench") => bench(&args[1..]),
        Some("services") => services::ensure().map(|_| ()),
        Some("example") => example(&args[1..]),
        Some("chaos") => chaos(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|lint|test|tidy|bench|services|example NAME|chaos [ARGS]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run a command, failing loudly with its name.
pub(crate) fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

/// The workspace root (xtask lives one level below it).
pub(crate) fn root() -> std::path::PathBuf {
    let xtask = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn has_cargo_subcommand(name: &str) -> bool {
    cargo()
        .args([name, "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn ci() -> Result<(), String> {
    lint()?;
    test(&[])
}

fn lint() -> Result<(), String> {
    prereqs::ensure()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    let standalone = root().join("examples/standalone/Cargo.toml");
    run(cargo()
        .args(["fmt", "--manifest-path"])
        .arg(&standalone)
        .args(["--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    tidy::run()?;
    run(cargo()
        .args(["doc", "--workspace", "--no-deps", "--all-features"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    deny()
}

fn deny() -> Result<(), String> {
    if !has_cargo_subcommand("deny") {
        eprintln!("cargo-deny is missing: installing it (cargo install cargo-deny --locked)");
        run(cargo().args(["install", "cargo-deny", "--locked"]))?;
    }
    // Advisories need the advisory database from the network; bans, licenses and sources
    // work offline. Set OMNIBOX_DENY_ADVISORIES=1 where the database can be fetched.
    // `--offline` reads `cargo metadata --offline`, which needs every crate of every target
    // platform downloaded: fetch them first (crates.io is reachable where CI runs).
    run(cargo().args(["fetch", "--quiet"]))?;
    let mut checks = vec!["bans", "licenses", "sources"];
    let online = std::env::var("OMNIBOX_DENY_ADVISORIES").is_ok_and(|v| v == "1");
    if online {
        checks.push("advisories");
    }
    let mut cmd = cargo();
    cmd.arg("deny");
    if !online {
        cmd.arg("--offline");
    }
    cmd.arg("check").args(checks);
    run(&mut cmd)
}

fn test(extra: &[String]) -> Result<(), String> {
    prereqs::ensure()?;
    let env = services::ensure()?;
    if has_cargo_subcommand("nextest") {
        run(cargo()
            .args([
                "nextest",
                "run",
                "--workspace",
                "--all-features",
                "--no-fail-fast",
            ])
            .args(extra)
            .envs(env.iter().cloned()))?;
    } else {
        run(cargo()
            .args(["test", "--workspace", "--all-features", "--no-fail-fast"])
            .args(extra)
            .envs(env.iter().cloned()))?;
    }
    // nextest does not run doctests.
    run(cargo()
        .args(["test", "--workspace", "--all-features", "--doc"])
        .envs(env.iter().cloned()))?;
    standalone(&env)?;
    // The chaos rig, 60 s per broker (NATS on partitioned tables), on fixed seeds (a
    // failure replays with its seed; `OMNIBOX_CHAOS_SEED` and `OMNIBOX_CHAOS_SECONDS`
    // override).
    let seconds = std::env::var("OMNIBOX_CHAOS_SECONDS").unwrap_or_else(|_| "60".into());
    for (broker, seed, partitioned) in [
        ("rabbitmq", "1001", false),
        ("nats", "1002", true),
        ("kafka", "1003", false),
    ] {
        let seed = std::env::var("OMNIBOX_CHAOS_SEED").unwrap_or_else(|_| seed.into());
        let mut args: Vec<String> = vec![
            "--broker".into(),
            broker.into(),
            "--seconds".into(),
            seconds.clone(),
            "--seed".into(),
            seed,
        ];
        if partitioned {
            args.push("--partitioned".into());
        }
        run(chaos_command(&args).envs(env.iter().cloned()))?;
    }
    Ok(())
}

/// The service outside the workspace (`examples/standalone`): a fresh crate depending on
/// the facade with `["postgres", "kafka"]`, built from a copy of the workspace's lock file
/// (cargo prunes what the crate does not use and keeps every version) and run end to end
/// (typed event → Kafka → typed inbox handler).
fn standalone(env: &[(String, String)]) -> Result<(), String> {
    let dir = root().join("examples/standalone");
    std::fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock"))
        .map_err(|e| format!("copying Cargo.lock into examples/standalone: {e}"))?;
    let manifest = dir.join("Cargo.toml");
    let manifest = manifest.to_string_lossy().into_owned();
    run(cargo()
        .args(["run", "-q", "--manifest-path", &manifest])
        .envs(env.iter().cloned()))
}

fn chaos_command(args: &[String]) -> Command {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "-q",
        "-p",
        "omnibox-e2e",
        "--bin",
        "omnibox-chaos",
        "--",
        "run",
    ])
    .args(args);
    cmd
}

fn chaos(args: &[String]) -> Result<(), String> {
    prereqs::ensure()?;
    run(&mut chaos_command(args))
}

fn bench(extra: &[String]) -> Result<(), String> {
    prereqs::ensure()?;
    let env = services::ensure()?;
    run(cargo().args(["bench", "--workspace"]).args(extra).envs(env))
}

fn example(args: &[String]) -> Result<(), String> {
    let name = args.first().ok_or("usage: cargo xtask example <name>")?;
    prereqs::ensure()?;
    let env = services::ensure()?;
    run(cargo()
        .args(["run", "-p", "omnibox-examples", "--example", name])
        .args(&args[1..])
        .envs(env))
}
