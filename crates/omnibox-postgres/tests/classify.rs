//! Error classification against real SQLSTATEs raised by PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use omnibox_core::FailureKind;
use omnibox_core::error::StoreError;
use omnibox_postgres::classify;
use sqlx::postgres::PgPoolOptions;

async fn raise(pool: &sqlx::PgPool, code: &str) -> StoreError {
    let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'provoked' USING ERRCODE = '{code}'; END $$");
    let err = sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await
        .expect_err("the statement raises");
    classify("probe", err)
}

#[tokio::test]
async fn bug20_store_errors_are_classified_from_real_sqlstates() {
    let url = omnibox_testing::postgres_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    for code in ["40001", "40P01", "55P03"] {
        let e = raise(&pool, code).await;
        assert!(matches!(e, StoreError::Contention { .. }), "{code}: {e:?}");
        assert_eq!(e.kind(), FailureKind::Transient, "{code}");
    }
    let e = raise(&pool, "53300").await;
    assert!(matches!(e, StoreError::Connection { .. }), "{e:?}");
    assert_eq!(e.kind(), FailureKind::Transient);
    let e = raise(&pool, "57014").await;
    assert!(matches!(e, StoreError::Timeout { .. }), "{e:?}");
    let e = raise(&pool, "23505").await;
    assert!(matches!(e, StoreError::Integrity { .. }), "{e:?}");
    assert_eq!(e.kind(), FailureKind::Permanent);
    let e = raise(&pool, "42601").await;
    assert!(matches!(e, StoreError::Other { .. }), "{e:?}");
    assert_eq!(e.kind(), FailureKind::Permanent);
}

#[tokio::test]
async fn refused_values_are_permanent_data_errors_and_outages_stay_transient() {
    let url = omnibox_testing::postgres_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    // What PostgreSQL itself raises for the poison inputs of issue 9.
    let nul_jsonb = sqlx::query("SELECT $1::text::jsonb")
        .bind(r#"{"a":"\u0000"}"#)
        .execute(&pool)
        .await
        .expect_err("jsonb refuses \\u0000");
    let e = classify("insert", nul_jsonb);
    assert!(matches!(e, StoreError::Data { .. }), "{e:?}");
    assert!(e.to_string().contains("22P05"), "{e}");
    assert_eq!(e.kind(), FailureKind::Permanent);
    let nul_text = sqlx::query("SELECT $1::text")
        .bind("a\0b")
        .execute(&pool)
        .await
        .expect_err("text refuses a NUL byte");
    let e = classify("insert", nul_text);
    assert!(matches!(e, StoreError::Data { .. }), "{e:?}");
    assert_eq!(e.kind(), FailureKind::Permanent);
    for code in ["22001", "22P02", "23502", "23514"] {
        let e = raise(&pool, code).await;
        assert!(matches!(e, StoreError::Data { .. }), "{code}: {e:?}");
        assert_eq!(e.kind(), FailureKind::Permanent, "{code}");
    }
    // Unique violations stay a dedup/integrity matter; outages stay transient.
    let e = raise(&pool, "23505").await;
    assert!(matches!(e, StoreError::Integrity { .. }), "{e:?}");
    for code in ["08006", "57P01", "53300"] {
        let e = raise(&pool, code).await;
        assert!(matches!(e, StoreError::Connection { .. }), "{code}: {e:?}");
        assert_eq!(e.kind(), FailureKind::Transient, "{code}");
    }
}
