//! Runs every example binary against the local services and checks that it exits 0 by
//! itself in time and prints its closing line.
//!
//! `cargo test -p omnibox-examples` builds the examples next to this test binary
//! (`target/<profile>/examples/`); when one is missing (e.g. `--test run_examples` alone),
//! the test builds it with `cargo build --example` first.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Each example must finish within this.
const PER_EXAMPLE: Duration = Duration::from_secs(30);

fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/run_examples-<hash> → target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile dir");
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "omnibox-examples", "--example", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    bin
}

fn run_example(name: &str, closing_line: &str) {
    run_example_with(name, closing_line, &[]);
}

fn run_example_with(name: &str, closing_line: &str, env: &[(&str, &str)]) {
    let bin = example_binary(name);
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    loop {
        if child.try_wait().expect("wait for the example").is_some() {
            break;
        }
        if started.elapsed() > PER_EXAMPLE {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "example {name} still running after {PER_EXAMPLE:?}; stdout:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("collect output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "example {name} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.lines().any(|l| l.starts_with(closing_line)),
        "example {name} did not print `{closing_line}`:\n{stdout}"
    );
    assert!(
        stdout.contains("[cleanup]"),
        "example {name} did not clean up:\n{stdout}"
    );
}

#[test]
fn quickstart_applies_the_effect_once_despite_a_redelivery() {
    run_example(
        "quickstart",
        "quickstart finished: the effect was applied once despite the redelivery",
    );
}

#[test]
fn axum_example_serves_http_beside_the_workers_under_one_shutdown() {
    run_example(
        "axum",
        "axum example finished: two orders over HTTP, credited once each, one shutdown",
    );
}

#[test]
fn dashboard_preview_driver_runs_its_faults_and_cleans_up() {
    // The traffic generator behind dashboards/omnibox-preview.png, for 8 s instead of 180.
    run_example_with(
        "dashboard_preview",
        "dashboard preview finished",
        &[
            ("PREVIEW_SECONDS", "8"),
            ("PREVIEW_METRICS_ADDR", "127.0.0.1:0"),
        ],
    );
}

#[test]
fn rabbitmq_example_relays_and_consumes() {
    run_example("rabbitmq", "rabbitmq example finished");
}

#[test]
fn nats_example_relays_and_consumes() {
    run_example("nats", "nats example finished");
}

#[test]
fn kafka_example_relays_and_consumes() {
    run_example("kafka", "kafka example finished");
}

#[test]
fn custom_step_example_filters_and_caps() {
    run_example("custom_step", "custom_step example finished");
}

#[test]
fn router_example_routes_with_state_and_skips_unmatched() {
    run_example("router", "router example finished");
}

#[test]
fn partitioned_example_creates_and_drops_partitions() {
    run_example("partitioned", "partitioned example finished");
}

#[test]
fn observability_example_serves_metrics_and_exports_spans() {
    run_example("observability", "observability example finished");
}
