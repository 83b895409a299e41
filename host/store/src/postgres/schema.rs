//! The PostgreSQL store's schema: numbered migrations, applied at start under an advisory lock so that processes starting together apply each once.

use tokio_postgres::Client;

/// The schema, one migration per entry; `corral_schema.version` counts the applied ones.
/// Times are milliseconds since the Unix epoch by the database's clock.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    file TEXT NOT NULL,
    digest TEXT NOT NULL,
    params TEXT NOT NULL,
    components TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    owner TEXT,
    heartbeat_ms BIGINT,
    cancel_requested SMALLINT NOT NULL DEFAULT 0,
    sessions INTEGER NOT NULL DEFAULT 1,
    epoch BIGINT NOT NULL DEFAULT 0,
    fuel_charged BIGINT NOT NULL DEFAULT 0,
    tenant TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT
);
CREATE INDEX runs_updated ON runs(updated_ms);
CREATE UNIQUE INDEX runs_idempotency ON runs(tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_tenant ON runs(tenant, created_ms, id);
CREATE INDEX runs_tenant_running ON runs(tenant) WHERE status = 'running';
CREATE TABLE run_definitions (run_id TEXT PRIMARY KEY, definition TEXT NOT NULL);
CREATE TABLE journal (
    seq BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    step TEXT,
    data TEXT NOT NULL,
    blob TEXT
);
CREATE INDEX journal_run ON journal(run_id, seq);
CREATE INDEX journal_blob ON journal(blob) WHERE blob IS NOT NULL;
CREATE TABLE steps (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    fuel_used BIGINT NOT NULL,
    peak_memory_bytes BIGINT NOT NULL,
    wall_time_us BIGINT NOT NULL,
    output TEXT,
    fingerprint TEXT,
    cached BOOLEAN NOT NULL,
    fallback TEXT,
    error TEXT,
    error_kind TEXT,
    completed_order BIGINT,
    waiting TEXT,
    answer TEXT,
    tokens_used BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    data BYTEA NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE cache (
    key TEXT PRIMARY KEY,
    output TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT
);
CREATE TABLE agents (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    info TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE workflows (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    text TEXT NOT NULL,
    format TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE fuel_windows (
    tenant TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    charged BIGINT NOT NULL,
    PRIMARY KEY (tenant, start_ms)
);
CREATE TABLE webhook_messages (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    run_id TEXT NOT NULL,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    next_ms BIGINT
);
CREATE INDEX webhook_due ON webhook_messages(next_ms) WHERE state = 'pending';
CREATE INDEX webhook_run ON webhook_messages(tenant, run_id, created_ms);
CREATE TABLE webhook_attempts (
    message_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at_ms BIGINT NOT NULL,
    status INTEGER,
    error TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (message_id, attempt)
);
CREATE TABLE rate_limits (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
-- Which runs hold which artifacts; the bytes are chunks in the database,
-- one copy per digest, so that every machine reads the same ones.
CREATE TABLE artifacts (
    run_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (run_id, digest)
);
CREATE INDEX artifacts_digest ON artifacts(digest);
CREATE TABLE artifact_chunks (
    digest TEXT NOT NULL,
    idx INTEGER NOT NULL,
    data BYTEA NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (digest, idx)
);
"#,
    // Uploaded components, by digest: every server and worker loads them
    // from here, whatever machine received the upload.
    r#"
CREATE TABLE components (
    digest TEXT PRIMARY KEY,
    data BYTEA NOT NULL,
    created_ms BIGINT NOT NULL
);
"#,
    // Slots of a limit shared by processes (a tenant's concurrent calls):
    // what each holder holds, until its hold expires unrenewed; and the
    // runs a process may claim, oldest first, found without a scan.
    r#"
CREATE INDEX runs_claimable ON runs(created_ms, id) WHERE status = 'running' AND tenant != '';
CREATE TABLE slot_holds (
    key TEXT NOT NULL,
    holder TEXT NOT NULL,
    held INTEGER NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (key, holder)
);
"#,
];

/// Any key would do; this one is corral's, so that no other application's
/// advisory lock is taken by mistake.
const MIGRATION_LOCK: i64 = 0x636f_7272_616c_0001;

/// The database's clock, in milliseconds since the Unix epoch.
pub(super) const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Brings the schema up to date; a database whose schema is newer than this
/// corral knows is refused (`Err` says so).
pub(super) async fn migrate(client: &mut Client) -> Result<(), Refusal> {
    let tx = client.transaction().await?;
    // Held to the end of the transaction: starters wait for each other.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS corral_schema (version INTEGER NOT NULL)")
        .await?;
    let row = tx
        .query_opt("SELECT version FROM corral_schema", &[])
        .await?;
    let version = match row {
        Some(r) => r.get::<_, i32>(0).max(0) as usize,
        None => {
            tx.execute("INSERT INTO corral_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    if version > MIGRATIONS.len() {
        return Err(Refusal::Newer(version));
    }
    for sql in &MIGRATIONS[version..] {
        tx.batch_execute(sql).await?;
    }
    tx.execute(
        "UPDATE corral_schema SET version = $1",
        &[&(MIGRATIONS.len() as i32)],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Why the schema could not be brought up to date.
#[derive(Debug)]
pub(super) enum Refusal {
    /// The database has this schema version, newer than this corral's.
    Newer(usize),
    Sql(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Refusal {
    fn from(e: tokio_postgres::Error) -> Self {
        Refusal::Sql(e)
    }
}
