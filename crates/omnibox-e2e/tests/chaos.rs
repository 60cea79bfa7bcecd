//! The chaos rig checks itself: a run whose handler drops effects must fail with the
//! ledger's finding and the command that replays it. (The clean runs are `cargo xtask
//! test`'s 60-second rig runs per broker.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn a_run_whose_handler_drops_effects_fails_and_prints_its_seed() {
    let out = Command::new(env!("CARGO_BIN_EXE_omnibox-chaos"))
        .args([
            "run",
            "--broker",
            "kafka",
            "--seconds",
            "12",
            "--seed",
            "5",
            "--rate",
            "50",
            "--drain-secs",
            "10",
        ])
        .env("CHAOS_SABOTAGE", "skip-effects")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("committed events never handled"),
        "{stdout}"
    );
    assert!(stdout.contains("| lost |"), "{stdout}");
    assert!(
        stdout.contains("replay: cargo xtask chaos --broker kafka --seconds 12 --seed 5"),
        "{stdout}"
    );
}
