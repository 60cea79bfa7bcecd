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
