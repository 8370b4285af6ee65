//! `vswitchd --state-check`: whether the store can be read, and what it holds.
//!
//! The check opens the store with redb's full integrity check (every page's checksum), reads
//! the schema version, decodes every record and rebuilds IPAM from its rows. It changes
//! nothing but what redb's own crash recovery would.

use super::{pools, Store, StoreError, Table, GOOD_COPY, LEGACY_FILE, SCHEMA_VERSION, STORE_FILE};
use redb::ReadableDatabase;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The store file.
    pub path: PathBuf,
    /// Whether there is a store at all (else: a fresh start, or a `switch.json` to import).
    pub exists: bool,
    /// The schema version.
    pub schema_version: u32,
    /// Rows per table: the four record tables, then `ipam_pools` and `ipam_addresses`.
    pub counts: Vec<(&'static str, u64)>,
    /// The good copy, if there is one.
    pub good_copy: Option<PathBuf>,
    /// A `switch.json` the next start will import.
    pub legacy: Option<PathBuf>,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.exists {
            writeln!(f, "{}: no store yet", self.path.display())?;
            return match &self.legacy {
                Some(l) => writeln!(f, "{} will be imported at the next start", l.display()),
                None => writeln!(f, "the next start begins with an empty state"),
            };
        }
        writeln!(f, "{}: ok (integrity checked)", self.path.display())?;
        writeln!(f, "schema version: {}", self.schema_version)?;
        for (table, n) in &self.counts {
            writeln!(f, "{table}: {n}")?;
        }
        match &self.good_copy {
            Some(g) => writeln!(f, "good copy: {}", g.display()),
            None => writeln!(f, "good copy: none yet"),
        }
    }
}

/// Checks the store in `dir` without starting anything; an error says what is wrong.
pub fn check_state_dir(dir: &Path) -> Result<CheckReport, StoreError> {
    let path = dir.join(STORE_FILE);
    let good = dir.join(GOOD_COPY);
    let good_copy = good.exists().then_some(good);
    if !path.exists() {
        let legacy = dir.join(LEGACY_FILE);
        return Ok(CheckReport {
            path,
            exists: false,
            schema_version: SCHEMA_VERSION,
            counts: Vec::new(),
            good_copy,
            legacy: legacy.exists().then_some(legacy),
        });
    }
    let mut store = Store::open(dir)?;
    let schema_version = store.check_schema()?;
    let counts = validate(&mut store)?;
    Ok(CheckReport {
        path,
        exists: true,
        schema_version,
        counts,
        good_copy,
        legacy: None,
    })
}

/// Decodes every record and rebuilds IPAM; returns the rows per table.
pub(super) fn validate(store: &mut Store) -> Result<Vec<(&'static str, u64)>, StoreError> {
    let mut counts = Vec::new();
    for table in Table::ALL {
        let rows: Vec<(String, Value)> = store.load(table)?;
        counts.push((table.name(), rows.len() as u64));
    }
    store.load_ipam()?;
    let path = store.path.clone();
    let rtx = store
        .db()?
        .begin_read()
        .map_err(|e| StoreError::db(format!("reading {}", path.display()), e))?;
    let (pools, addresses) = pools::counts(&rtx, &path)?;
    counts.push(("ipam_pools", pools));
    counts.push(("ipam_addresses", addresses));
    Ok(counts)
}
