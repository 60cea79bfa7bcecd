//! Loading from a file and the environment: precedence, nesting, durations, and errors
//! that name the key and its source without leaking secrets. Environment variables are
//! set inside `figment::Jail`, which serialises the tests that touch the environment and
//! restores it afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::time::Duration;

use figment::Jail;
use omnibox_settings::{
    AckSetting, BrokerKind, CompletionSetting, Loader, Settings, SettingsError,
};

fn problems(e: &SettingsError) -> Vec<(String, String, String)> {
    e.problems()
        .iter()
        .map(|p| (p.key.clone(), p.origin.clone(), p.message.clone()))
        .collect()
}

#[test]
fn file_then_database_url_then_omnibox_variables() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "relay.toml",
            r#"
broker = "nats"
[database]
url = "postgres://file@127.0.0.1/file"
[store]
schema = "billing"
completion = "delete"
[relay]
batch_size = 250
publish_timeout = "5s"
[inbox]
ack_strategy = "at_least_once_on_success"
concurrency = 8
"#,
        )?;
        jail.set_env("DATABASE_URL", "postgres://env@127.0.0.1/env");
        jail.set_env("OMNIBOX_RELAY__BATCH_SIZE", "1000");
        jail.set_env("OMNIBOX_RELAY__LEASE_TTL", "2m");
        jail.set_env("OMNIBOX_RABBITMQ__CONSUMER__PREFETCH", "64");
        jail.set_env("OMNIBOX_CONFIG", "relay.toml"); // names the file; not a setting
        let s = Loader::new()
            .file("relay.toml")
            .load()
            .map_err(|e| e.to_string())?;
        assert_eq!(s.broker, Some(BrokerKind::Nats));
        assert_eq!(
            s.database.url.as_deref(),
            Some("postgres://env@127.0.0.1/env")
        );
        assert_eq!(s.store.schema, "billing");
        assert_eq!(s.store.completion, CompletionSetting::Delete);
        assert_eq!(s.relay.batch_size, 1000, "the variable wins over the file");
        assert_eq!(s.relay.publish_timeout, Duration::from_secs(5));
        assert_eq!(s.relay.lease_ttl, Duration::from_secs(120));
        assert_eq!(s.rabbitmq.consumer.prefetch, 64);
        assert_eq!(s.inbox.ack_strategy, AckSetting::AtLeastOnceOnSuccess);
        assert_eq!(s.inbox.concurrency, 8);

        jail.set_env("OMNIBOX_DATABASE__URL", "postgres://omnibox@127.0.0.1/x");
        let s = Loader::new()
            .file("relay.toml")
            .load()
            .map_err(|e| e.to_string())?;
        assert_eq!(
            s.database.url.as_deref(),
            Some("postgres://omnibox@127.0.0.1/x")
        );
        Ok(())
    });
}

#[test]
fn unknown_keys_name_the_file_line_or_the_variable() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "relay.toml",
            "[relay]\nbatch_size = 10\n\n[relya]\nworkers = 2\n",
        )?;
        let err = Loader::new().file("relay.toml").load().unwrap_err();
        assert_eq!(problems(&err)[0].0, "relya");
        assert_eq!(problems(&err)[0].1, "relay.toml line 4");

        jail.create_file("relay.toml", "[relay]\nbatch_size = 10\nbatchsize = 20\n")?;
        let err = Loader::new().file("relay.toml").load().unwrap_err();
        let p = &problems(&err)[0];
        assert_eq!(
            (p.0.as_str(), p.1.as_str()),
            ("relay.batchsize", "relay.toml line 3")
        );
        assert!(
            p.2.contains("unknown key") && p.2.contains("batch_size"),
            "{p:?}"
        );

        jail.create_file("relay.toml", "")?;
        jail.set_env("OMNIBOX_RELAY__BATCHSIZE", "5");
        let err = Loader::new().file("relay.toml").load().unwrap_err();
        let p = &problems(&err)[0];
        assert_eq!(
            (p.0.as_str(), p.1.as_str()),
            (
                "relay.batchsize",
                "environment variable OMNIBOX_RELAY__BATCHSIZE"
            )
        );
        assert!(
            err.to_string().contains("OMNIBOX_RELAY__BATCHSIZE"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn bad_values_name_the_key_and_source() {
    Jail::expect_with(|jail| {
        jail.create_file("relay.toml", "[relay]\npublish_timeout = \"soon\"\n")?;
        let err = Loader::new().file("relay.toml").load().unwrap_err();
        let p = &problems(&err)[0];
        assert_eq!(
            (p.0.as_str(), p.1.as_str()),
            ("relay.publish_timeout", "relay.toml line 2")
        );

        jail.create_file("relay.toml", "")?;
        jail.set_env("OMNIBOX_RELAY__BATCH_SIZE", "many");
        let err = Loader::new().file("relay.toml").load().unwrap_err();
        let p = &problems(&err)[0];
        assert_eq!(
            (p.0.as_str(), p.1.as_str()),
            (
                "relay.batch_size",
                "environment variable OMNIBOX_RELAY__BATCH_SIZE"
            )
        );
        assert!(p.2.contains("many"), "{p:?}");
        Ok(())
    });
    let err = Settings::from_toml_str("[inbox]\nack_strategy = \"twice\"\n").unwrap_err();
    assert_eq!(problems(&err)[0].0, "inbox.ack_strategy");
    assert!(problems(&err)[0].2.contains("exactly_once_inbox"), "{err}");
    let err = Settings::from_toml_str("[relay]\nworkers = 0\n").unwrap_err();
    assert_eq!(problems(&err)[0].0, "relay.workers");
    let err = Settings::from_toml_str("[relay\n").unwrap_err();
    assert!(matches!(err, SettingsError::Invalid(_)), "{err}");
}

#[test]
fn secrets_never_appear_in_errors_or_debug() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "relay.toml",
            "[database]\nmax_connections = \"postgres://app:hunter2@db/app\"\n",
        )?;
        let err = Loader::new().file("relay.toml").load().unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(
            err.to_string().contains("postgres://app:***@db/app"),
            "{err}"
        );

        jail.create_file("relay.toml", "")?;
        jail.set_env("DATABASE_URL", "postgres://app:hunter2@db/app");
        jail.set_env("OMNIBOX_RABBITMQ__URL", "amqp://guest:hunter2@mq:5672/%2f");
        jail.set_env("OMNIBOX_NATS__URL", "nats://u:hunter2@n:4222");
        let s = Loader::new()
            .file("relay.toml")
            .load()
            .map_err(|e| e.to_string())?;
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("amqp://guest:***@mq:5672/%2f"), "{debug}");
        assert_eq!(s.database.display_url(), "postgres://app:***@db/app");
        Ok(())
    });
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let err = Loader::new()
        .file("/nonexistent/omnibox.toml")
        .load()
        .unwrap_err();
    assert!(matches!(err, SettingsError::Read { .. }));
    assert!(
        err.to_string().contains("/nonexistent/omnibox.toml"),
        "{err}"
    );
}
