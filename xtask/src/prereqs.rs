//! Build prerequisites: the Kafka crate builds the bundled librdkafka with cmake and needs
//! libcurl's headers. On a Debian-like machine where we are root, install what is missing;
//! anywhere else, fail loudly naming the packages.

use std::path::Path;
use std::process::Command;

fn has_cmake() -> bool {
    Command::new("cmake")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn has_curl_headers() -> bool {
    [
        "/usr/include/curl/curl.h",
        "/usr/include/x86_64-linux-gnu/curl/curl.h",
        "/usr/include/aarch64-linux-gnu/curl/curl.h",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Make sure cmake, the libcurl headers and PgBouncer (started by the PgBouncer tests) are
/// there.
pub fn ensure() -> Result<(), String> {
    let mut missing = Vec::new();
    if !["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        missing.push("pgbouncer");
    }
    if !has_cmake() {
        missing.push("cmake");
    }
    if !has_curl_headers() {
        missing.push("libcurl4-openssl-dev");
    }
    if missing.is_empty() {
        return Ok(());
    }
    if Path::new("/usr/bin/apt-get").exists() && is_root() {
        eprintln!("prerequisites: installing {}", missing.join(" "));
        crate::run(Command::new("apt-get").args(["update", "-qq"]))?;
        crate::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        return Ok(());
    }
    Err(format!(
        "missing build prerequisites for the Kafka crate (bundled librdkafka): {} — install them \
         with your package manager (Debian/Ubuntu: apt-get install {})",
        missing.join(", "),
        missing.join(" ")
    ))
}
