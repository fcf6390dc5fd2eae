//! cnet's embedded store: every object, its pending intent, and a schema
//! version, in one redb file.
//!
//! Invariants:
//! - A [`Batch`] is committed in one redb write transaction: all of it is on
//!   disk, or none of it (redb is copy-on-write with checksummed commits, so a
//!   crash mid-commit leaves the previous state).
//! - Values are JSON documents; the schema version in the `meta` table says how
//!   to read them. A store written by a newer cnetd is refused, never guessed at.
//! - Opening never changes the version of an existing store: the owner reads
//!   [`Store::schema_version`], migrates the records, and commits them with
//!   [`Batch::set_schema_version`] in one transaction, so a crash during a
//!   migration leaves the old store as it was.

use redb::{Database, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The kinds of object the store holds, one redb table each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Network,
    Endpoint,
    Namespace,
    Route,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Network, Kind::Endpoint, Kind::Namespace, Kind::Route];
    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Kind::Network => TableDefinition::new("networks"),
            Kind::Endpoint => TableDefinition::new("endpoints"),
            Kind::Namespace => TableDefinition::new("namespaces"),
            Kind::Route => TableDefinition::new("routes"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source} (is another cnetd using this --state-dir?)")]
    Open { path: String, source: redb::DatabaseError },
    #[error("the store at {path} has schema version {found}, newer than this cnetd understands ({SCHEMA_VERSION}): run a newer cnetd")]
    TooNew { path: String, found: u64 },
    #[error("store I/O failed: {0}")]
    Io(String),
    #[error("a stored {kind:?} {key} cannot be read: {source}")]
    Corrupt { kind: Kind, key: String, source: serde_json::Error },
}

fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Io(e.to_string())
}

/// Puts and deletes committed together.
#[derive(Default)]
pub struct Batch {
    ops: Vec<(Kind, String, Option<Vec<u8>>)>,
    version: Option<u64>,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }
    pub fn put<T: Serialize>(&mut self, kind: Kind, key: &str, value: &T) -> &mut Self {
        let bytes = serde_json::to_vec(value).expect("store values serialise to JSON");
        self.ops.push((kind, key.to_string(), Some(bytes)));
        self
    }
    pub fn delete(&mut self, kind: Kind, key: &str) -> &mut Self {
        self.ops.push((kind, key.to_string(), None));
        self
    }
    /// Marks the store as written in schema `version`, with the batch.
    pub fn set_schema_version(&mut self, version: u64) -> &mut Self {
        self.version = Some(version);
        self
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.version.is_none()
    }
}

pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the store file and checks its schema version.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let db = Database::create(path).map_err(|source| StoreError::Open { path: shown.clone(), source })?;
        let txn = db.begin_write().map_err(io)?;
        {
            let mut meta = txn.open_table(META).map_err(io)?;
            let found = meta.get("schema_version").map_err(io)?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => return Err(StoreError::TooNew { path: shown, found: v }),
                Some(_) => {}
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(io)?;
                }
            }
            for kind in Kind::ALL {
                txn.open_table(kind.table()).map_err(io)?;
            }
        }
        txn.commit().map_err(io)?;
        Ok(Store { db })
    }

    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let meta = txn.open_table(META).map_err(io)?;
        Ok(meta.get("schema_version").map_err(io)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Every record of one kind, in key order.
    pub fn load<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(kind.table()).map_err(io)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let value = serde_json::from_slice(v.value()).map_err(|source| StoreError::Corrupt {
                kind,
                key: k.value().to_string(),
                source,
            })?;
            out.push(value);
        }
        Ok(out)
    }

    /// Commits a batch atomically and durably.
    pub fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(io)?;
        {
            if let Some(v) = batch.version {
                txn.open_table(META).map_err(io)?.insert("schema_version", v).map_err(io)?;
            }
            for (kind, key, value) in &batch.ops {
                let mut table = txn.open_table(kind.table()).map_err(io)?;
                match value {
                    Some(bytes) => {
                        table.insert(key.as_str(), bytes.as_slice()).map_err(io)?;
                    }
                    None => {
                        table.remove(key.as_str()).map_err(io)?;
                    }
                }
            }
        }
        txn.commit().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_all_or_nothing_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            let mut b = Batch::new();
            b.put(Kind::Network, "n1", &serde_json::json!({"Name": "n1"}));
            b.put(Kind::Endpoint, "e1", &serde_json::json!({"Name": "e1"}));
            store.commit(b).unwrap();
            let mut b = Batch::new();
            b.delete(Kind::Endpoint, "e1");
            store.commit(b).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let nets: Vec<serde_json::Value> = store.load(Kind::Network).unwrap();
        assert_eq!(nets, vec![serde_json::json!({"Name": "n1"})]);
        assert!(store.load::<serde_json::Value>(Kind::Endpoint).unwrap().is_empty());
    }

    #[test]
    fn a_store_from_a_newer_cnetd_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            let txn = store.db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("schema_version", SCHEMA_VERSION + 1).unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(&path).err().expect("must refuse");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn opening_keeps_an_old_version_until_a_batch_sets_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            let mut b = Batch::new();
            b.set_schema_version(1);
            store.commit(b).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 1, "open must not bump the version");
        let mut b = Batch::new();
        b.put(Kind::Network, "n1", &serde_json::json!({"v": 2})).set_schema_version(SCHEMA_VERSION);
        store.commit(b).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    }
}
