//! The SQLite store: the behaviour suite every backend passes, and what only a file can do (reopen, upgrade an old schema, be busy or damaged).

use super::schema::MIGRATIONS;
use super::*;
use crate::Owner;
use crate::behaviour::{Fixture, behaviour_tests, new_run};

struct Sqlite {
    _dir: tempfile::TempDir,
    store: SqliteStore,
}

impl Fixture for Sqlite {
    fn store(&self) -> &dyn Store {
        &self.store
    }

    fn sql(&self, sql: &str) {
        self.store.conn.lock().unwrap().execute_batch(sql).unwrap();
    }
}

fn fresh() -> Sqlite {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    Sqlite { _dir: dir, store }
}

behaviour_tests!(fresh());

#[test]
fn reopening_keeps_data_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path(), Durability::Full).unwrap();
        store
            .create_run(&new_run("kept"), &Owner::this_process())
            .unwrap();
    }
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    assert_eq!(store.run("kept").unwrap().status, RunState::Running);
    drop(store);
    let conn = Connection::open(dir.path().join("corral.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(dir.path(), Durability::Normal)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("newer than this corral knows"),
        "{err}"
    );
}

#[test]
fn a_commit_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    let me = Owner::this_process();
    let mine = store.create_run(&new_run("r"), &me).unwrap();
    let good = Entry::new("step_started", Some("a".into()), "{}".into());
    // A trigger makes the second entry of the batch fail.
    let conn = store.conn.lock().unwrap();
    conn.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON journal WHEN NEW.kind = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END;",
    )
    .unwrap();
    drop(conn);
    let bad = Entry::new("boom", None, "{}".into());
    assert!(store.commit("r", &mine, &[good.clone(), bad]).is_err());
    assert!(store.journal("r", 0, 10).unwrap().is_empty());
    // Only the run's owner may write.
    let other = Lease {
        owner: Owner {
            token: "other".into(),
            ..me.clone()
        },
        epoch: mine.epoch,
    };
    assert!(matches!(
        store.commit("r", &other, std::slice::from_ref(&good)),
        Err(StoreError::LeaseLost(_))
    ));
    store.commit("r", &mine, &[good]).unwrap();
    assert_eq!(store.journal("r", 0, 10).unwrap().len(), 1);
}

#[test]
fn busy_and_damaged_stores_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("corral.db"), vec![0x5a; 8192]).unwrap();
    let err = SqliteStore::open(dir.path(), Durability::Normal)
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    store
        .conn
        .lock()
        .unwrap()
        .busy_timeout(Duration::ZERO)
        .unwrap();
    let other = Connection::open(dir.path().join("corral.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE;").unwrap();
    let err = store
        .create_run(&new_run("r"), &Owner::this_process())
        .unwrap_err();
    assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
}

#[test]
fn a_store_of_the_previous_schema_is_upgraded_with_its_runs_intact() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("corral.db")).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO runs (id, workflow, file, definition, digest, params, components, status, created_ms, updated_ms, epoch, fuel_charged)
             VALUES ('old', 'w', 'w.yaml', 'version: 1 # the text', 'sha256:0', '{}', '{}', 'completed', 1, 1, 3, 42)",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    let r = store.run("old").unwrap();
    assert_eq!(r.definition, "version: 1 # the text");
    assert_eq!((r.tenant.as_str(), r.fuel_charged, r.epoch), ("", 42, 3));
    // And new runs keep their definitions apart from the row.
    store
        .create_run(&new_run("new"), &Owner::this_process())
        .unwrap();
    assert_eq!(store.run("new").unwrap().definition, "version: 1");
    assert_eq!(store.runs().unwrap().len(), 2);
}
