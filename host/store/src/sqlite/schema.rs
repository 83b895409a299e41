//! The SQLite store's schema: one migration per entry, counted by `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

/// The schema, one migration per entry; `PRAGMA user_version` counts the applied ones.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    file TEXT NOT NULL,
    definition TEXT NOT NULL,
    digest TEXT NOT NULL,
    params TEXT NOT NULL,
    components TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    owner TEXT,
    heartbeat_ms INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    sessions INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX runs_updated ON runs(updated_ms);
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
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
    fuel_used INTEGER NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    wall_time_us INTEGER NOT NULL,
    output TEXT,
    fingerprint TEXT,
    cached INTEGER NOT NULL,
    fallback TEXT,
    error TEXT,
    error_kind TEXT,
    completed_order INTEGER,
    waiting TEXT,
    answer TEXT,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE cache (
    key TEXT PRIMARY KEY,
    output TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER
);
"#,
    // Fencing tokens for leases, and fuel charged across sessions.
    r#"
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN fuel_charged INTEGER NOT NULL DEFAULT 0;
"#,
    // Tenants: every run carries its tenant ('' is the operator's own);
    // idempotent submissions; the agents each tenant registered.
    r#"
ALTER TABLE runs ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX runs_idempotency ON runs(tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_tenant ON runs(tenant, created_ms, id);
CREATE TABLE agents (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    info TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE TABLE workflows (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    text TEXT NOT NULL,
    format TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
-- The definition (up to a megabyte) lives apart from the run's row, which
-- every journal commit updates: SQLite rewrites a whole row on update.
CREATE TABLE run_definitions (run_id TEXT PRIMARY KEY, definition TEXT NOT NULL);
INSERT INTO run_definitions (run_id, definition) SELECT id, definition FROM runs;
ALTER TABLE runs DROP COLUMN definition;
CREATE TABLE fuel_windows (
    tenant TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    charged INTEGER NOT NULL,
    PRIMARY KEY (tenant, start_ms)
) WITHOUT ROWID;
"#,
    // Webhooks: an outbox of run events per endpoint, and every attempt;
    // rate limiter state that outlives a process.
    r#"
CREATE TABLE webhook_messages (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    run_id TEXT NOT NULL,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    next_ms INTEGER
);
CREATE INDEX webhook_due ON webhook_messages(next_ms) WHERE state = 'pending';
CREATE INDEX webhook_run ON webhook_messages(tenant, run_id, created_ms);
CREATE TABLE webhook_attempts (
    message_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    status INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (message_id, attempt)
) WITHOUT ROWID;
-- Rate limiter state (GCRA's theoretical arrival time), by key.
CREATE TABLE rate_limits (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"#,
    // Model tokens each step's calls were charged.
    r#"
ALTER TABLE steps ADD COLUMN tokens_used INTEGER NOT NULL DEFAULT 0;
"#,
    // Artifacts: the runs that hold each stored artifact (the bytes are
    // files beside the database, one per digest).
    r#"
CREATE TABLE artifacts (
    run_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, digest)
) WITHOUT ROWID;
CREATE INDEX artifacts_digest ON artifacts(digest);
"#,
    // Uploaded components, by digest, for every process sharing the store.
    r#"
CREATE TABLE components (
    digest TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
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
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (key, holder)
) WITHOUT ROWID;
"#,
];

pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTADB),
            Some(format!(
                "the store has schema version {version}, newer than this corral knows ({}); upgrade corral",
                MIGRATIONS.len()
            )),
        ));
    }
    for sql in &MIGRATIONS[version..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len())?;
    tx.commit()
}
