//! Every admin subcommand, run as the real binary against real PostgreSQL: what it prints
//! (tables and exact JSON), what it changes, that `--dry-run` changes nothing, that
//! destructive commands ask, and the exit codes scripts rely on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Schema, json_of, omnibox, stderr, stdout};
use omnibox_core::WorkerId;
use omnibox_core::store::{ClaimEvents, ClaimRequest};

#[tokio::test(flavor = "multi_thread")]
async fn migrate_dry_run_prints_sql_and_creates_nothing_then_migrate_creates_the_tables() {
    let s = Schema::new().await;
    let out = omnibox(&s.url)
        .args(["--schema", &s.name, "migrate", "--dry-run"])
        .assert()
        .success();
    let sql = stdout(&out);
    assert!(
        sql.contains("CREATE TABLE") && sql.contains(&s.name),
        "{sql}"
    );
    assert!(!s.exists().await, "--dry-run created the schema");

    let out = omnibox(&s.url)
        .args(["--schema", &s.name, "migrate"])
        .assert()
        .success();
    assert!(
        stdout(&out).contains("8 migrations applied"),
        "{}",
        stdout(&out)
    );
    assert_eq!(s.count("true").await, 0);
    let out = omnibox(&s.url)
        .args(["--schema", &s.name, "--json", "migrate"])
        .assert()
        .success();
    assert_eq!(
        json_of(&out)["applied"].as_array().unwrap().len(),
        0,
        "second run is a no-op"
    );

    let p = Schema::new().await;
    omnibox(&p.url)
        .args(["--schema", &p.name, "migrate", "--partitioned"])
        .assert()
        .success();
    let t: String = omnibox_postgres::sqlx::query_scalar(
        "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = 'outbox_events_partitioned'",
    )
    .bind(&p.name)
    .fetch_one(&p.pool)
    .await
    .unwrap();
    assert_eq!(t, "p", "a partitioned table");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_events_cancel_dead_letters_replay_discard_and_requeue() {
    let s = Schema::new().await;
    let run = |args: &[&str]| {
        let mut c = omnibox(&s.url);
        c.args(["--schema", s.name.as_str()]).args(args);
        c
    };
    run(&["migrate"]).assert().success();
    let a = s.enqueue("orders", 3).await;
    let b = s.enqueue("payments", 2).await;

    // status: totals and per topic, as a table and as JSON.
    let out = run(&["status"]).assert().success();
    let text = stdout(&out);
    assert!(text.lines().next().unwrap().starts_with("table"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("outbox_events") && l.split_whitespace().nth(1) == Some("5")),
        "{text}"
    );
    let v = json_of(&run(&["--json", "status", "--by-topic"]).assert().success());
    assert_eq!(v["outbox"]["totals"]["pending"], 5);
    assert_eq!(v["outbox"]["totals"]["claimable"], 5);
    assert_eq!(v["outbox"]["topics"]["orders"]["pending"], 3);
    assert_eq!(v["outbox"]["topics"]["payments"]["pending"], 2);
    assert!(
        v["outbox"]["totals"]["oldest_claimable_age_seconds"]
            .as_f64()
            .unwrap()
            >= 0.0
    );

    // events show.
    let v = json_of(
        &run(&["--json", "events", "show", &a[0].to_string()])
            .assert()
            .success(),
    );
    assert_eq!(v["id"], a[0].to_string());
    assert_eq!(v["topic"], "orders");
    assert!(
        stdout(
            &run(&["events", "show", &a[1].to_string()])
                .assert()
                .success()
        )
        .contains("orders")
    );
    let missing = uuid::Uuid::new_v4().to_string();
    run(&["events", "show", &missing]).assert().code(3);

    // events cancel: dry run changes nothing, no answer aborts, --yes cancels.
    let out = run(&[
        "events",
        "cancel",
        "--topic",
        "payments",
        "--reason",
        "bad batch",
        "--dry-run",
    ])
    .assert()
    .success();
    assert!(stdout(&out).contains("would cancel 2"), "{}", stdout(&out));
    assert_eq!(s.count("status = 'pending'").await, 5);
    let out = run(&[
        "events",
        "cancel",
        "--topic",
        "payments",
        "--reason",
        "bad batch",
    ])
    .write_stdin("")
    .assert()
    .code(4);
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(s.count("status = 'pending'").await, 5);
    run(&["events", "cancel", "--reason", "x"]).assert().code(2); // no filter, no --all
    let v = json_of(
        &run(&[
            "--json",
            "events",
            "cancel",
            "--topic",
            "payments",
            "--reason",
            "bad batch",
            "--yes",
        ])
        .assert()
        .success(),
    );
    assert_eq!(v["cancelled"], 2);
    assert_eq!(s.count("status = 'failed' AND topic = 'payments'").await, 2);

    // dead letters: list, groups, show.
    let letters = json_of(&run(&["--json", "dead-letters", "list"]).assert().success());
    assert_eq!(letters.as_array().unwrap().len(), 2);
    let letter_id = letters[0]["id"].as_str().unwrap().to_owned();
    let groups = json_of(
        &run(&["--json", "dead-letters", "groups"])
            .assert()
            .success(),
    );
    assert_eq!(groups.as_array().unwrap().len(), 1);
    assert_eq!(groups[0]["count"], 2);
    assert!(
        groups[0]["sample_error"]
            .as_str()
            .unwrap()
            .contains("cancelled by operator: bad batch")
    );
    let fp = groups[0]["fingerprint"].as_str().unwrap().to_owned();
    let text = stdout(&run(&["dead-letters", "groups"]).assert().success());
    assert!(text.contains(&fp), "{text}");
    let v = json_of(
        &run(&["--json", "dead-letters", "show", &letter_id])
            .assert()
            .success(),
    );
    assert_eq!(v["id"], letter_id.as_str());
    run(&["dead-letters", "show", &missing]).assert().code(3);

    // replay by group: dry run changes nothing; --yes brings both back.
    let out = run(&["dead-letters", "replay", "--group", &fp, "--dry-run"])
        .assert()
        .success();
    assert!(stdout(&out).contains("would replay 2"), "{}", stdout(&out));
    assert_eq!(s.count("status = 'failed'").await, 2);
    let v = json_of(
        &run(&["--json", "dead-letters", "replay", "--group", &fp, "--yes"])
            .assert()
            .success(),
    );
    assert_eq!(v["changed"], 2);
    assert_eq!(s.count("status = 'pending'").await, 5);
    let v = json_of(&run(&["--json", "status"]).assert().success());
    assert_eq!(v["outbox"]["totals"]["dead_letters"], 0);

    // replay by filter (event type, route), then discard --all.
    run(&[
        "events", "cancel", "--topic", "payments", "--reason", "again", "--yes",
    ])
    .assert()
    .success();
    let v = json_of(
        &run(&[
            "--json",
            "dead-letters",
            "replay",
            "--route",
            "payments",
            "--event-type",
            "order.placed",
            "--dry-run",
        ])
        .assert()
        .success(),
    );
    assert_eq!(v["would_change"], 2);
    run(&["dead-letters", "discard", "--id", &letter_id, "--all"])
        .assert()
        .code(2); // two selections
    let out = run(&["dead-letters", "discard", "--all", "--dry-run"])
        .assert()
        .success();
    assert!(stdout(&out).contains("would discard 2"), "{}", stdout(&out));
    run(&["dead-letters", "discard", "--all"])
        .write_stdin("n\n")
        .assert()
        .code(4);
    let v = json_of(
        &run(&["--json", "dead-letters", "discard", "--all", "--yes"])
            .assert()
            .success(),
    );
    assert_eq!(v["changed"], 2);
    assert_eq!(
        s.count("status = 'failed'").await,
        2,
        "discarding letters leaves the events failed"
    );

    // requeue: a failed event comes back; a pending one is exit 3.
    let out = run(&["requeue", &b[0].to_string()]).assert().success();
    assert!(stdout(&out).contains("pending again"));
    assert_eq!(
        s.count(&format!(
            "id = '{}' AND status = 'pending' AND attempts_made = 0",
            b[0]
        ))
        .await,
        1
    );
    run(&["requeue", &b[0].to_string()]).assert().code(3);
}

#[tokio::test(flavor = "multi_thread")]
async fn force_unlock_releases_a_lease_and_the_event_is_claimable_again() {
    let s = Schema::new().await;
    omnibox(&s.url)
        .args(["--schema", &s.name, "migrate"])
        .assert()
        .success();
    let ids = s.enqueue("orders", 1).await;
    let store = s.outbox();
    let mut conn = s.pool.acquire().await.unwrap();
    let claimed = store
        .claim(
            &mut conn,
            &ClaimRequest::new(WorkerId::new("stuck-relay").unwrap(), 10),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let id = ids[0].to_string();
    let run = |args: &[&str]| {
        let mut c = omnibox(&s.url);
        c.args(["--schema", s.name.as_str()]).args(args);
        c
    };
    let v = json_of(&run(&["--json", "status"]).assert().success());
    assert_eq!(v["outbox"]["totals"]["leased"], 1);
    run(&["events", "force-unlock", &id])
        .write_stdin("")
        .assert()
        .code(4);
    let out = run(&[
        "events",
        "force-unlock",
        &id,
        "--reason",
        "relay host lost",
        "--yes",
    ])
    .assert()
    .success();
    assert!(stdout(&out).contains("stuck-relay"), "{}", stdout(&out));
    let v = json_of(&run(&["--json", "events", "show", &id]).assert().success());
    assert!(v["locked_by"].is_null());
    assert_eq!(
        v["last_error"],
        "Administrative force unlock: relay host lost"
    );
    run(&["events", "force-unlock", &id, "--yes"])
        .assert()
        .code(3);
    let again = store
        .claim(
            &mut conn,
            &ClaimRequest::new(WorkerId::new("other").unwrap(), 10),
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "claimable again");
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_adopts_event_tables_created_by_omni_box_and_adds_the_rest() {
    use omnibox_postgres::sqlx;
    let s = Schema::new().await;
    // The tables as omni-box's own migrations leave them: the event tables, no history, no
    // dead letters (its DDL is column-for-column our version 1).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{}\"", s.name)))
        .execute(&s.pool)
        .await
        .unwrap();
    for m in omnibox_postgres::migration_sql(&s.config())
        .unwrap()
        .iter()
        .filter(|m| m.version == 1)
    {
        sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql.clone()))
            .execute(&s.pool)
            .await
            .unwrap();
    }
    let v = json_of(
        &omnibox(&s.url)
            .args(["--schema", &s.name, "--json", "migrate"])
            .assert()
            .success(),
    );
    let applied: Vec<i64> = v["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_i64().unwrap())
        .collect();
    assert_eq!(applied, vec![2, 2, 3, 3, 4, 4], "{v}");
    let ids = s.enqueue("orders", 1).await;
    omnibox(&s.url)
        .args(["--schema", &s.name, "events", "show", &ids[0].to_string()])
        .assert()
        .success();

    // A table of that name without the event columns is not adopted.
    let t = Schema::new().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA \"{0}\"; CREATE TABLE \"{0}\".outbox_events (x int)",
        t.name
    )))
    .execute(&t.pool)
    .await
    .unwrap();
    let out = omnibox(&t.url)
        .args(["--schema", &t.name, "migrate"])
        .assert()
        .code(1);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn large_replays_run_in_batches_with_progress_and_watch_repeats_the_status() {
    let s = Schema::new().await;
    let run = |args: &[&str]| {
        let mut c = omnibox(&s.url);
        c.args(["--schema", s.name.as_str()]).args(args);
        c
    };
    run(&["migrate"]).assert().success();
    s.enqueue("bulk", 1200).await;
    run(&["events", "cancel", "--all", "--reason", "bulk", "--yes"])
        .assert()
        .success();
    let out = run(&["dead-letters", "replay", "--route", "bulk", "--yes"])
        .assert()
        .success();
    let progress = stderr(&out);
    assert!(
        progress.contains("replay: 500/1200 (1 of 3 batches)"),
        "{progress}"
    );
    assert!(
        progress.contains("replay: 1200/1200 (3 of 3 batches)"),
        "{progress}"
    );
    assert!(stdout(&out).contains("replayed 1200"), "{}", stdout(&out));
    assert_eq!(s.count("status = 'pending'").await, 1200);

    // --watch prints a fresh table every interval until interrupted.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_omnibox"))
        .env("DATABASE_URL", &s.url)
        .args(["--schema", &s.name, "status", "--watch", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.matches("outbox_events").count() >= 2, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_example_settings_file_loads() {
    let s = Schema::new().await;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/relay.example.toml");
    let out = omnibox(&s.url)
        .args([
            "--config",
            example,
            "--schema",
            &s.name,
            "migrate",
            "--dry-run",
        ])
        .assert()
        .success();
    assert!(stdout(&out).contains("CREATE TABLE"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_and_unreachable_services_give_one_clear_line_and_a_nonzero_exit() {
    let s = Schema::new().await;
    let dir = std::env::temp_dir().join(omnibox_testing::unique_name("cli_cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("omnibox.toml");
    std::fs::write(&cfg, "[store]\nschema = \"x\"\n\n[relay]\nbatchsize = 5\n").unwrap();
    let out = omnibox(&s.url)
        .args(["--config", cfg.to_str().unwrap(), "status"])
        .assert()
        .code(2);
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("relay.batchsize") && err.contains("omnibox.toml line 5"),
        "{err}"
    );

    let out = omnibox(&s.url)
        .env("OMNIBOX_RELAY__BATCH_SIZE", "lots")
        .args(["status"])
        .assert()
        .code(2);
    assert!(
        stderr(&out).contains("OMNIBOX_RELAY__BATCH_SIZE"),
        "{}",
        stderr(&out)
    );

    let out = omnibox(&s.url)
        .args([
            "--database-url",
            "postgres://app:hunter2@127.0.0.1:1/app",
            "status",
        ])
        .assert()
        .code(1);
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot connect to PostgreSQL") && err.contains("app:***@"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    let out = omnibox(&s.url)
        .env_remove("DATABASE_URL")
        .args(["status"])
        .assert()
        .code(2);
    assert!(stderr(&out).contains("DATABASE_URL"), "{}", stderr(&out));

    let out = omnibox(&s.url)
        .args(["--schema", "x; DROP TABLE y", "status"])
        .assert()
        .code(2);
    assert!(
        stderr(&out).to_lowercase().contains("identifier"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
