//! Layering checks: dependencies point inward to core.

use std::process::Command;

/// Crates that do I/O and must never appear in omnibox-core's dependency closure.
const IO_CLIENTS: &[&str] = &[
    "sqlx",
    "rdkafka",
    "lapin",
    "async-nats",
    "tokio-postgres",
    "reqwest",
    "hyper",
];

/// Adapter crates: none may depend on another.
const ADAPTERS: &[&str] = &[
    "omnibox-postgres",
    "omnibox-kafka",
    "omnibox-rabbitmq",
    "omnibox-nats",
    "omnibox-metrics",
    "omnibox-otel",
];

fn closure(package: &str) -> Result<Vec<String>, String> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--no-dedupe",
        ])
        .output()
        .map_err(|e| format!("cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree -p {package} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// The README's tour shows the wiring of `examples/standalone` and counts its lines: the
/// block must be the file's (between its two `// wiring` marks) and the count must match.
fn readme_wiring() -> Result<(), String> {
    let root = crate::root();
    let read =
        |p: &str| std::fs::read_to_string(root.join(p)).map_err(|e| format!("reading {p}: {e}"));
    let main = read("examples/standalone/src/main.rs")?;
    let readme = read("README.md")?;
    let mut parts = main.split("    // wiring\n");
    let block = match (parts.next(), parts.next()) {
        (Some(_), Some(block)) => block,
        _ => return Err("examples/standalone/src/main.rs lost its `// wiring` marks".into()),
    };
    let lines: Vec<&str> = block
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect();
    let shown = format!("```rust,ignore\n{}\n```", lines.join("\n"));
    if !readme.contains(&shown) {
        return Err("README.md's tour does not show examples/standalone's wiring as it is".into());
    }
    let n = lines.iter().filter(|l| !l.trim().is_empty()).count();
    let heading = format!("in {} lines of wiring", n + 1);
    if !readme.contains(&heading) || !readme.contains(&format!("these {n} lines")) {
        return Err(format!(
            "README.md's tour must count {n} lines of worker wiring (+1 enqueue line)"
        ));
    }
    Ok(())
}

/// Run every check.
pub fn run() -> Result<(), String> {
    let mut problems = Vec::new();
    let core = closure("omnibox-core")?;
    for client in IO_CLIENTS {
        if core.iter().any(|c| c == client) {
            problems.push(format!(
                "omnibox-core depends (transitively) on the I/O client `{client}`"
            ));
        }
    }
    for adapter in ADAPTERS {
        let deps = closure(adapter)?;
        for other in ADAPTERS {
            if other != adapter && deps.iter().any(|d| d == other) {
                problems.push(format!("adapter `{adapter}` depends on adapter `{other}`"));
            }
        }
    }
    if let Err(e) = readme_wiring() {
        problems.push(e);
    }
    if problems.is_empty() {
        eprintln!("tidy: layering ok (omnibox-core has no I/O client; adapters are independent)");
        Ok(())
    } else {
        Err(format!("tidy failed:\n  {}", problems.join("\n  ")))
    }
}
