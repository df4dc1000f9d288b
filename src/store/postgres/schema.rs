//! The PostgreSQL schema and its migrations: embedded in the binary,
//! applied at open under an advisory lock, so that instances starting
//! together do not race, and never against a schema newer than this build.

use tokio_postgres::Client;

use super::{Pg, Res};
use crate::store::StoreError;

/// Each migration runs once, in order; `hookwire_schema` records which ran.
pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_waiting_on_key.sql"),
    include_str!("migrations/0003_body_compression.sql"),
    include_str!("migrations/0004_steps.sql"),
];

/// The advisory lock key the migrations are run under: "hookwire" in ASCII.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_7769_7265;

/// Applies the migrations this database lacks, in one transaction holding
/// the migration lock: a second instance starting meanwhile waits, then
/// finds the schema current. A schema newer than this build is refused.
pub async fn migrate(client: &mut Client) -> Res<()> {
    let tx = client.transaction().await.pg()?;
    // A migration of a big table may take long; the limit every connection
    // has is for requests, not for this.
    tx.batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .pg()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .pg()?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS hookwire_schema (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .pg()?;
    let version: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM hookwire_schema", &[])
        .await
        .pg()?
        .get(0);
    let done = crate::store::migrations_done(version.into(), MIGRATIONS.len())?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Database(format!(
                "database migration {} failed: {}",
                i + 1,
                super::DriverError(e)
            ))
        })?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO hookwire_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .pg()?;
        tracing::info!(migration = i + 1, "database migrated");
    }
    tx.commit().await.pg()
}
