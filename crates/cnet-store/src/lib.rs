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
    #[error("cannot open the store at {path}: another cnetd uses it (one cnetd per --state-dir)")]
    InUse { path: String },
    #[error("cannot open the store at {path}: {detail}")]
    Open { path: String, detail: String },
    #[error(
        "the store at {path} is damaged ({detail}): cnetd does not start on it and never resets it. Restore the \
         file from a backup; or move it away to start with an empty store, knowing that every network, endpoint \
         and namespace it held is then forgotten (and the links of cnet's that no object owns are deleted at start)"
    )]
    Damaged { path: String, detail: String },
    #[error("the store at {path} has schema version {found}, newer than this cnetd understands ({SCHEMA_VERSION}): run a newer cnetd")]
    TooNew { path: String, found: u64 },
    #[error("the disk that holds the store is full ({detail}): free space on it; nothing was applied")]
    Full { detail: String },
    #[error("store I/O failed: {0}")]
    Io(String),
    #[error("a stored {kind:?} {key} cannot be read: {source}")]
    Corrupt { kind: Kind, key: String, source: serde_json::Error },
}

/// A redb error as the store's: a full disk and damage have their own kinds.
fn io(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(e) if e.raw_os_error() == Some(ENOSPC) => StoreError::Full { detail: e.to_string() },
        redb::Error::Corrupted(detail) => StoreError::Damaged { path: "(open)".into(), detail },
        e => StoreError::Io(e.to_string()),
    }
}

/// The errno of a full disk (Linux).
const ENOSPC: i32 = 28;

impl StoreError {
    /// Whether the disk is full (the client may try again once it is not).
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full { .. })
    }
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
    path: std::path::PathBuf,
    /// `None` after a failed commit until it is opened again (redb refuses
    /// all work after an I/O error until then).
    db: std::sync::RwLock<Option<Database>>,
}

/// Makes a new, empty store at `path`: written under another name and
/// renamed into place, so that `path` never holds half a store.
fn create(path: &Path) -> Result<(), StoreError> {
    let fresh = path.with_extension("new");
    let _ = std::fs::remove_file(&fresh);
    let failed = |detail: String| StoreError::Open { path: path.display().to_string(), detail };
    {
        let db = Database::create(&fresh).map_err(|e| failed(e.to_string()))?;
        let txn = db.begin_write().map_err(io)?;
        {
            txn.open_table(META).map_err(io)?.insert("schema_version", SCHEMA_VERSION).map_err(io)?;
            for kind in Kind::ALL {
                txn.open_table(kind.table()).map_err(io)?;
            }
        }
        txn.commit().map_err(io)?;
    }
    std::fs::File::open(&fresh).and_then(|f| f.sync_all()).map_err(|e| failed(e.to_string()))?;
    std::fs::rename(&fresh, path).map_err(|e| failed(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| failed(e.to_string()))?;
    }
    Ok(())
}

impl Store {
    /// Opens (or creates) the store file and checks its schema version.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let damaged = |detail: String| StoreError::Damaged { path: shown.clone(), detail };
        match std::fs::metadata(path) {
            // redb would make a new store in an empty file: a store is never
            // empty once made (it is made under another name, then renamed).
            Ok(m) if m.len() == 0 => return Err(damaged("the file is empty".into())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path)?,
            Err(e) => return Err(StoreError::Open { path: shown, detail: e.to_string() }),
        }
        // redb asserts some of its file's shape (a file cut short panics in
        // it): a panic while opening is damage too.
        let opened = std::panic::catch_unwind(|| Database::open(path)).map_err(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            damaged(format!("its layout cannot be read: {why}"))
        })?;
        let db = opened.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: shown.clone() },
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => damaged(detail),
            // A file cut short reads past its end; a header that is not redb's is invalid data.
            redb::DatabaseError::Storage(redb::StorageError::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData) =>
            {
                damaged(e.to_string())
            }
            e => StoreError::Open { path: shown.clone(), detail: e.to_string() },
        })?;
        let named = |e: StoreError| match e {
            StoreError::Damaged { detail, .. } => damaged(detail),
            e => e,
        };
        let txn = db.begin_write().map_err(io).map_err(named)?;
        {
            let mut meta = txn.open_table(META).map_err(io).map_err(named)?;
            let found = meta.get("schema_version").map_err(io).map_err(named)?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => return Err(StoreError::TooNew { path: shown, found: v }),
                Some(_) => {}
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(io).map_err(named)?;
                }
            }
            for kind in Kind::ALL {
                txn.open_table(kind.table()).map_err(io).map_err(named)?;
            }
        }
        txn.commit().map_err(io).map_err(named)?;
        Ok(Store { path: path.to_path_buf(), db: std::sync::RwLock::new(Some(db)) })
    }

    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let db = self.db()?;
        let txn = db.as_ref().expect("opened").begin_read().map_err(io)?;
        let meta = txn.open_table(META).map_err(io)?;
        Ok(meta.get("schema_version").map_err(io)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Every record of one kind, in key order.
    pub fn load<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>, StoreError> {
        let db = self.db()?;
        let txn = db.as_ref().expect("opened").begin_read().map_err(io)?;
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
        let result = self.write(&batch);
        if let Err(e) = &result {
            if matches!(e, StoreError::Full { .. } | StoreError::Io(_)) {
                // redb refuses every later transaction after an I/O error
                // until the database is opened again: drop it now, so the
                // next change opens it afresh (at its last commit).
                *self.db.write().unwrap_or_else(|p| p.into_inner()) = None;
            }
        }
        result
    }

    fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        let db = self.db()?;
        let txn = db.as_ref().expect("opened").begin_write().map_err(io)?;
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

    /// The open database (opened again first after a failed commit).
    fn db(&self) -> Result<std::sync::RwLockReadGuard<'_, Option<Database>>, StoreError> {
        {
            let db = self.db.read().unwrap_or_else(|p| p.into_inner());
            if db.is_some() {
                return Ok(db);
            }
        }
        {
            let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
            if db.is_none() {
                let opened = Database::open(&self.path).map_err(|e| match e {
                    redb::DatabaseError::Storage(redb::StorageError::Io(e)) if e.raw_os_error() == Some(ENOSPC) => {
                        StoreError::Full { detail: e.to_string() }
                    }
                    e => StoreError::Open { path: self.path.display().to_string(), detail: e.to_string() },
                })?;
                *db = Some(opened);
            }
        }
        self.db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_a_network(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("state.redb");
        let store = Store::open(&path).unwrap();
        let mut b = Batch::new();
        b.put(Kind::Network, "n1", &serde_json::json!({"Name": "n1"}));
        store.commit(b).unwrap();
        path
    }

    #[test]
    fn a_new_store_is_made_whole_under_another_name_and_an_empty_file_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with_a_network(dir.path());
        assert!(!path.with_extension("new").exists());
        std::fs::write(&path, b"").unwrap();
        let err = Store::open(&path).err().expect("an empty store is refused");
        assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("never resets it"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as it was");
    }

    #[test]
    fn a_truncated_or_overwritten_store_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with_a_network(dir.path());
        let whole = std::fs::read(&path).unwrap();
        for damage in ["half", "header", "tail"] {
            let mut bytes = whole.clone();
            match damage {
                "half" => bytes.truncate(whole.len() / 2),
                "header" => bytes[..64].fill(0xa5),
                _ => bytes.truncate(whole.len() - 1),
            }
            std::fs::write(&path, &bytes).unwrap();
            match Store::open(&path) {
                Err(e) => assert!(matches!(e, StoreError::Damaged { .. }), "{damage}: {e}"),
                // Damage redb can repair (it keeps two commit slots) must keep every record.
                Ok(store) => assert_eq!(store.load::<serde_json::Value>(Kind::Network).unwrap().len(), 1, "{damage}"),
            }
            if Store::open(&path).is_err() {
                assert_eq!(std::fs::read(&path).unwrap(), bytes, "{damage}: never reset");
            }
        }
    }

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
            let db = store.db().unwrap();
            let txn = db.as_ref().unwrap().begin_write().unwrap();
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
