//! The state store: networks, ports, sandboxes, endpoints and IPAM in one redb file, one ACID transaction per change.
//!
//! As Docker keeps `local-kv.db` in boltdb, vswitchd keeps `STATE_DIR/state.redb` (mode 0600).
//! Every record is a row of its own (a serde value as JSON bytes, keyed by name or id), and
//! IPAM is split into pool metadata and one row per allocated address, so an API change writes
//! the few rows it touched, not the whole state: the cost of a connect does not grow with the
//! number of endpoints. [`Store::write`] runs one transaction and returns only once it is
//! durable (`Durability::Immediate`); if the closure or the commit fails, nothing of it is kept.
//!
//! The file carries a `meta` table with `schema_version`. On first start a `switch.json` of an
//! older vswitchd is imported in one transaction and kept as `switch.json.migrated`
//! ([`migrate`]). An unreadable store stops the daemon with a message saying how to inspect it
//! (`vswitchd --state-check`) and how to restore `state.redb.good`, the copy refreshed at each
//! clean start ([`check`]).
//!
//! How the daemon uses it:
//!
//! ```text
//! let (mut store, notes) = Store::start(&state_dir)?;          // migrate, check, good copy
//! let all: Loaded<NetworkRecord, PortRecord, SandboxRecord, EndpointRecord> = store.load_all()?;
//! let mut ipam = all.ipam;
//! ipam.track_changes();                                        // from now on, changes are rows
//! // one API change = one transaction, written before the kernel is touched:
//! let ip = ipam.request_address(&pool, &endpoint_id, None)?;
//! store.write(|tx| {
//!     tx.put(Table::Endpoints, &endpoint_id, &endpoint)?;
//!     tx.put(Table::Ports, &host_if, &port)?;
//!     tx.apply_ipam(&ipam.take_changes())
//! })?;                                                         // durable when it returns
//! ```
//!
//! When `write` fails (`StoreError::is_no_space` for a full disk), the store holds what it held
//! before; the in-memory change must be undone by the caller (for IPAM, `Store::load_ipam`
//! gives back exactly what the store holds).

pub mod check;
pub mod migrate;
mod pools;
#[cfg(test)]
mod tests;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{de::DeserializeOwned, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use check::{check_state_dir, CheckReport};

/// The store's file name in the state directory.
pub const STORE_FILE: &str = "state.redb";
/// The copy of the store kept at the last clean start.
pub const GOOD_COPY: &str = "state.redb.good";
/// The state file of vswitchd before the store (one JSON document).
pub const LEGACY_FILE: &str = "switch.json";
/// What the legacy file is renamed to once imported.
pub const MIGRATED_FILE: &str = "switch.json.migrated";
/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The store's own facts: `schema_version`, and where it was migrated from.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// IPAM pool metadata ([`ipam::PoolMeta`] as JSON) by pool id.
const IPAM_POOLS: TableDefinition<&str, &[u8]> = TableDefinition::new("ipam_pools");
/// IPAM allocations: (pool id, address as a number) to the owner.
const IPAM_ADDRESSES: TableDefinition<(&str, u32), &str> = TableDefinition::new("ipam_addresses");

/// A table of records, each a serde value keyed by a name or id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Networks by name.
    Networks,
    /// Ports by interface name.
    Ports,
    /// Sandboxes by name.
    Sandboxes,
    /// Endpoints by id.
    Endpoints,
}

impl Table {
    /// Every record table.
    pub const ALL: [Table; 4] = [
        Table::Networks,
        Table::Ports,
        Table::Sandboxes,
        Table::Endpoints,
    ];

    /// The table's name in the file.
    pub fn name(self) -> &'static str {
        match self {
            Table::Networks => "networks",
            Table::Ports => "ports",
            Table::Sandboxes => "sandboxes",
            Table::Endpoints => "endpoints",
        }
    }

    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }
}

/// Why the store could not do what was asked. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// The database refused an operation.
    #[error("{what}: {source}")]
    Db {
        /// What was being done, with the path.
        what: String,
        /// The cause.
        source: redb::Error,
    },
    /// The store cannot be read: the daemon must not start on it.
    #[error("the state store {} cannot be read: {detail}. {}", path.display(), way_out(path))]
    Unreadable {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Another process (a running vswitchd) has the store open.
    #[error(
        "the state store {} is in use by another process (is a vswitchd running on this state dir?)",
        path.display()
    )]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// The store was written by a newer vswitchd.
    #[error(
        "the state store {} has schema version {found}; this vswitchd reads version {SCHEMA_VERSION} \
         at most: run the newer vswitchd, or restore a copy from before the upgrade",
        path.display()
    )]
    Schema {
        /// The store file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// A record cannot be decoded into the type asked for.
    #[error("record {table}/{key:?} in {}: {detail}. {}", path.display(), way_out(path))]
    Record {
        /// The store file.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The record's key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// A value could not be encoded.
    #[error("encoding {table}/{key:?}: {detail}")]
    Encode {
        /// The table.
        table: &'static str,
        /// The record's key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// The old state file cannot be imported; the store was not created.
    #[error("importing {}: {detail}; nothing was changed (the file is left as it is)", path.display())]
    Migration {
        /// The old state file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl StoreError {
    /// Whether the cause is a full disk (ENOSPC) or quota (EDQUOT).
    pub fn is_no_space(&self) -> bool {
        let io = match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::Db {
                source: redb::Error::Io(e),
                ..
            } => Some(e),
            _ => None,
        };
        io.and_then(io::Error::raw_os_error)
            .is_some_and(|e| e == libc::ENOSPC || e == libc::EDQUOT)
    }

    fn db(what: impl Into<String>, source: impl Into<redb::Error>) -> StoreError {
        StoreError::Db {
            what: what.into(),
            source: source.into(),
        }
    }

    fn io(what: impl Into<String>, source: io::Error) -> StoreError {
        StoreError::Io {
            what: what.into(),
            source,
        }
    }
}

/// How a user gets out of an unreadable store `path`: inspect it, or restore the good copy.
pub fn way_out(path: &Path) -> String {
    let dir = path.parent().unwrap_or(Path::new("."));
    let good = dir.join(GOOD_COPY);
    let check = format!(
        "vswitchd will not start on it and has changed nothing. Inspect it with \
         `vswitchd --state-check --state-dir {}`",
        dir.display()
    );
    match fs::metadata(&good).and_then(|m| m.modified()) {
        Ok(when) => format!(
            "{check}; to go back to the last good state (saved at the last clean start, {} s ago), \
             stop vswitchd and run `mv {p} {p}.bad && cp {g} {p}`",
            when.elapsed().map(|d| d.as_secs()).unwrap_or(0),
            p = path.display(),
            g = good.display()
        ),
        Err(_) => format!(
            "{check}; there is no good copy ({}) to restore",
            good.display()
        ),
    }
}

/// Everything in the store, decoded: what the daemon restores at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<N, P, S, E> {
    /// Networks with their keys, in key order.
    pub networks: Vec<(String, N)>,
    /// Ports with their keys.
    pub ports: Vec<(String, P)>,
    /// Sandboxes with their keys.
    pub sandboxes: Vec<(String, S)>,
    /// Endpoints with their keys.
    pub endpoints: Vec<(String, E)>,
    /// The IPAM driver, rebuilt from its pools and allocations.
    pub ipam: ipam::DefaultIpam,
}

/// The open store. Only one process may have it open (redb locks the file).
pub struct Store {
    /// The database; `None` after an I/O failure, until it is opened again.
    db: Option<Database>,
    path: PathBuf,
}

/// One write transaction, handed to the closure of [`Store::write`].
pub struct Tx<'a> {
    tx: &'a WriteTransaction,
    path: &'a Path,
}

impl Tx<'_> {
    /// Stores `value` under `key` in `table`, replacing what was there.
    pub fn put<T: Serialize + ?Sized>(
        &mut self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Encode {
            table: table.name(),
            key: key.to_string(),
            detail: e.to_string(),
        })?;
        self.put_raw(table, key, &bytes)
    }

    /// Stores already-encoded JSON bytes (used by the migration).
    fn put_raw(&mut self, table: Table, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let what = || {
            format!(
                "writing {}/{key:?} to {}",
                table.name(),
                self.path.display()
            )
        };
        self.table(table, &what)?
            .insert(key, bytes)
            .map_err(|e| StoreError::db(what(), e))?;
        Ok(())
    }

    /// Removes `key` from `table`; whether it was there.
    pub fn delete(&mut self, table: Table, key: &str) -> Result<bool, StoreError> {
        let what = || {
            format!(
                "deleting {}/{key:?} in {}",
                table.name(),
                self.path.display()
            )
        };
        let mut t = self.table(table, &what)?;
        let old = t.remove(key).map_err(|e| StoreError::db(what(), e))?;
        Ok(old.is_some())
    }

    /// `table`, open for writing in this transaction; `what` names the step for errors.
    fn table(
        &mut self,
        table: Table,
        what: &dyn Fn() -> String,
    ) -> Result<redb::Table<'_, &'static str, &'static [u8]>, StoreError> {
        self.tx
            .open_table(table.def())
            .map_err(|e| StoreError::db(what(), e))
    }

    /// The record under `key` in `table`, as this transaction sees it.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let what = || {
            format!(
                "reading {}/{key:?} in {}",
                table.name(),
                self.path.display()
            )
        };
        let t = self
            .tx
            .open_table(table.def())
            .map_err(|e| StoreError::db(what(), e))?;
        let Some(v) = t.get(key).map_err(|e| StoreError::db(what(), e))? else {
            return Ok(None);
        };
        decode(self.path, table.name(), key, v.value()).map(Some)
    }

    /// Writes what an IPAM operation changed (from [`ipam::DefaultIpam::take_changes`]).
    pub fn apply_ipam(&mut self, changes: &[ipam::IpamChange]) -> Result<(), StoreError> {
        pools::apply(self.tx, self.path, changes)
    }
}

impl Store {
    /// Opens the store in `dir`, creating the directory (0700) and an empty store (0600) if
    /// there is none. Does not import `switch.json` nor refresh the good copy: see [`Store::start`].
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        create_dir(dir)?;
        let path = dir.join(STORE_FILE);
        if !path.exists() {
            create_store(dir, |_| Ok(()))?;
        }
        let db = open_checked(&path)?;
        let mut store = Store { db: Some(db), path };
        store.check_schema()?;
        Ok(store)
    }

    /// Opens the store for the daemon: imports an old `switch.json` if there is no store yet,
    /// checks the whole file and every record, and refreshes the good copy. Returns the store
    /// and notes for the log (what was migrated, a good copy that could not be written).
    pub fn start(dir: &Path) -> Result<(Store, Vec<String>), StoreError> {
        create_dir(dir)?;
        let mut notes = migrate::run(dir)?;
        let mut store = Store::open(dir)?;
        check::validate(&mut store)?;
        // Copy the file closed, so the copy is a cleanly shut-down store.
        store.db = None;
        if let Err(e) = keep_good_copy(dir) {
            notes.push(format!("the good copy was not refreshed: {e}"));
        }
        store.reopen()?;
        Ok((store, notes))
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one write transaction and commits it durably. If `f` or the commit fails,
    /// the store is as it was before and the error is returned.
    pub fn write<R, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let path = self.path.clone();
        let what = || format!("writing to {}", path.display());
        let mut wtx = self
            .db()?
            .begin_write()
            .map_err(|e| StoreError::db(what(), e))?;
        wtx.set_durability(Durability::Immediate)
            .map_err(|e| StoreError::db(what(), e))?;
        let result = f(&mut Tx {
            tx: &wtx,
            path: &path,
        });
        let value = match result {
            Ok(value) => value,
            Err(e) => {
                if let Err(abort) = wtx.abort() {
                    self.after_failure(&abort.into());
                }
                return Err(e);
            }
        };
        match wtx.commit() {
            Ok(()) => Ok(value),
            Err(e) => {
                let e: redb::Error = e.into();
                self.after_failure(&e);
                Err(StoreError::db(format!("committing to {}", path.display()), e).into())
            }
        }
    }

    /// Every record of `table` decoded as `T`, in key order.
    pub fn load<T: DeserializeOwned>(
        &mut self,
        table: Table,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let path = self.path.clone();
        let rtx = self
            .db()?
            .begin_read()
            .map_err(|e| StoreError::db(format!("reading {}", path.display()), e))?;
        read_table(&rtx, &path, table)
    }

    /// The IPAM driver as stored (change tracking off).
    pub fn load_ipam(&mut self) -> Result<ipam::DefaultIpam, StoreError> {
        let path = self.path.clone();
        let rtx = self
            .db()?
            .begin_read()
            .map_err(|e| StoreError::db(format!("reading {}", path.display()), e))?;
        pools::load(&rtx, &path)
    }

    /// Everything, from one consistent snapshot.
    pub fn load_all<N, P, S, E>(&mut self) -> Result<Loaded<N, P, S, E>, StoreError>
    where
        N: DeserializeOwned,
        P: DeserializeOwned,
        S: DeserializeOwned,
        E: DeserializeOwned,
    {
        let path = self.path.clone();
        let rtx = self
            .db()?
            .begin_read()
            .map_err(|e| StoreError::db(format!("reading {}", path.display()), e))?;
        Ok(Loaded {
            networks: read_table(&rtx, &path, Table::Networks)?,
            ports: read_table(&rtx, &path, Table::Ports)?,
            sandboxes: read_table(&rtx, &path, Table::Sandboxes)?,
            endpoints: read_table(&rtx, &path, Table::Endpoints)?,
            ipam: pools::load(&rtx, &path)?,
        })
    }

    /// The value of `key` in the meta table.
    pub fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        let path = self.path.clone();
        let what = || format!("reading the meta table of {}", path.display());
        let rtx = self
            .db()?
            .begin_read()
            .map_err(|e| StoreError::db(what(), e))?;
        let t = match rtx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(StoreError::db(what(), e)),
        };
        let v = t.get(key).map_err(|e| StoreError::db(what(), e))?;
        Ok(v.map(|v| v.value().to_string()))
    }

    /// The open database, opening it again after an I/O failure.
    fn db(&mut self) -> Result<&Database, StoreError> {
        if self.db.is_none() {
            self.reopen()?;
        }
        self.db.as_ref().ok_or_else(|| StoreError::Unreadable {
            path: self.path.clone(),
            detail: "the database is closed".into(),
        })
    }

    /// Opens the file again (after an I/O failure, redb wants a fresh open).
    fn reopen(&mut self) -> Result<(), StoreError> {
        self.db = None;
        self.db = Some(open_plain(&self.path)?);
        Ok(())
    }

    /// After an I/O failure the database must be opened again before it is used.
    fn after_failure(&mut self, e: &redb::Error) {
        if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
            self.db = None;
        }
    }

    /// Refuses a store without `schema_version` or with a newer one.
    fn check_schema(&mut self) -> Result<u32, StoreError> {
        let found = self.meta("schema_version")?;
        let version = match found.as_deref().map(str::parse::<u32>) {
            Some(Ok(v)) => v,
            Some(Err(_)) | None => {
                return Err(StoreError::Unreadable {
                    path: self.path.clone(),
                    detail: format!(
                        "no valid schema_version in its meta table (found {found:?}): \
                         not a vswitch state store"
                    ),
                })
            }
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::Schema {
                path: self.path.clone(),
                found: version,
            });
        }
        // Version 1 is the first; later versions upgrade older stores here, in one transaction.
        Ok(version)
    }
}

/// Decodes one record.
fn decode<T: DeserializeOwned>(
    path: &Path,
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Record {
        path: path.to_path_buf(),
        table,
        key: key.to_string(),
        detail: e.to_string(),
    })
}

/// Every record of `table` in the read transaction `rtx`.
fn read_table<T: DeserializeOwned>(
    rtx: &redb::ReadTransaction,
    path: &Path,
    table: Table,
) -> Result<Vec<(String, T)>, StoreError> {
    let what = || format!("reading table {} of {}", table.name(), path.display());
    let t = match rtx.open_table(table.def()) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::db(what(), e)),
    };
    let mut out = Vec::new();
    for row in t.iter().map_err(|e| StoreError::db(what(), e))? {
        let (k, v) = row.map_err(|e| StoreError::db(what(), e))?;
        let key = k.value().to_string();
        let value = decode(path, table.name(), &key, v.value())?;
        out.push((key, value));
    }
    Ok(out)
}

/// Creates `dir` (mode 0700) if it does not exist.
fn create_dir(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::io(format!("creating state dir {}", dir.display()), e))
}

/// Makes a new store in `dir`: a temporary file (0600) gets the meta table and whatever `fill`
/// writes in one transaction, then is renamed to `state.redb`, so a crash leaves either no
/// store or a complete one.
fn create_store(
    dir: &Path,
    fill: impl FnOnce(&mut Tx<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let path = dir.join(STORE_FILE);
    let tmp = dir.join(format!(".{STORE_FILE}.new"));
    let _ = fs::remove_file(&tmp);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| StoreError::io(format!("creating {}", tmp.display()), e))?;
    let result = (|| {
        let db = Database::builder()
            .create(&tmp)
            .map_err(|e| StoreError::db(format!("creating {}", tmp.display()), e))?;
        let mut store = Store {
            db: Some(db),
            path: tmp.clone(),
        };
        store.write(|tx| {
            let what = || format!("writing the meta table of {}", tmp.display());
            {
                let mut meta = tx
                    .tx
                    .open_table(META)
                    .map_err(|e| StoreError::db(what(), e))?;
                meta.insert("schema_version", SCHEMA_VERSION.to_string().as_str())
                    .map_err(|e| StoreError::db(what(), e))?;
            }
            for table in Table::ALL {
                tx.tx
                    .open_table(table.def())
                    .map_err(|e| StoreError::db(what(), e))?;
            }
            tx.tx
                .open_table(IPAM_POOLS)
                .map_err(|e| StoreError::db(what(), e))?;
            tx.tx
                .open_table(IPAM_ADDRESSES)
                .map_err(|e| StoreError::db(what(), e))?;
            fill(tx)
        })?;
        if let Some(db) = store.db.take() {
            db.close()
                .map_err(|e| StoreError::db(format!("closing {}", tmp.display()), e))?;
        }
        fs::rename(&tmp, &path)
            .map_err(|e| StoreError::io(format!("renaming {} into place", tmp.display()), e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes a meta key in the transaction (used by the migration).
fn put_meta(tx: &mut Tx<'_>, key: &str, value: &str) -> Result<(), StoreError> {
    let what = || format!("writing the meta table of {}", tx.path.display());
    let mut meta = tx
        .tx
        .open_table(META)
        .map_err(|e| StoreError::db(what(), e))?;
    meta.insert(key, value)
        .map_err(|e| StoreError::db(what(), e))?;
    Ok(())
}

/// Opens an existing store, checking the whole file; a bad file is [`StoreError::Unreadable`].
fn open_checked(path: &Path) -> Result<Database, StoreError> {
    open_with(path, true)
}

/// Opens an existing store without the full check (a reopen after an I/O failure).
fn open_plain(path: &Path) -> Result<Database, StoreError> {
    open_with(path, false)
}

fn open_with(path: &Path, check: bool) -> Result<Database, StoreError> {
    // The mode is set, not inherited from the umask.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| StoreError::io(format!("setting the mode of {}", path.display()), e))?;
    let opened = std::panic::catch_unwind(|| {
        Database::builder()
            .set_check_integrity_on_open(check)
            .open(path)
    });
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => Err(StoreError::InUse {
            path: path.to_path_buf(),
        }),
        // An error of the system (EACCES, EIO, ENOSPC) is one; redb reports a file that is not
        // a database as an I/O error without an errno: that is an unreadable store.
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if e.raw_os_error().is_some() =>
        {
            Err(StoreError::io(
                format!("opening the state store {}", path.display()),
                e,
            ))
        }
        Ok(Err(e)) => Err(StoreError::Unreadable {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
        Err(_) => Err(StoreError::Unreadable {
            path: path.to_path_buf(),
            detail: "the database library failed on it (a panic was caught)".into(),
        }),
    }
}

/// Copies the (closed) store to `state.redb.good`: write, fsync, rename, fsync the directory.
fn keep_good_copy(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(STORE_FILE);
    let good = dir.join(GOOD_COPY);
    let tmp = dir.join(format!(".{GOOD_COPY}.tmp"));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut from = File::open(&path)
            .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| StoreError::io(format!("creating {}", tmp.display()), e))?;
        io::copy(&mut from, &mut to)
            .and_then(|_| to.sync_all())
            .map_err(|e| StoreError::io(format!("writing {}", tmp.display()), e))?;
        fs::rename(&tmp, &good)
            .map_err(|e| StoreError::io(format!("renaming into {}", good.display()), e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing {}", dir.display()), e))
}
