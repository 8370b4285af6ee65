//! The import of the old state file (`switch.json`, one JSON document) into a new store.
//!
//! The old file held `networks`, `ports`, `sandboxes` and `endpoints` as lists and `ipam` as
//! `ipam::DefaultIpam`'s serde form. On a start with no store but that file, everything is
//! imported in one transaction into a temporary store, which is renamed into place; then the
//! old file is renamed `switch.json.migrated` (kept, never deleted). The records are copied as
//! they are (the daemon's record types read them as they read the file), keyed by the field
//! the daemon keys them by. A file that cannot be imported stops the start and changes nothing.

use super::{
    create_store, put_meta, StoreError, Table, Tx, LEGACY_FILE, MIGRATED_FILE, STORE_FILE,
};
use ipam::DefaultIpam;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// The old file's lists: the field, the table it goes to and the field that keys it.
const LISTS: [(&str, Table, &str); 4] = [
    ("networks", Table::Networks, "name"),
    ("ports", Table::Ports, "name"),
    ("sandboxes", Table::Sandboxes, "name"),
    ("endpoints", Table::Endpoints, "id"),
];

/// Imports `dir/switch.json` if there is no store yet; finishes an import a crash interrupted
/// (the store exists, the old file was not yet renamed). Returns notes for the log.
pub(super) fn run(dir: &Path) -> Result<Vec<String>, StoreError> {
    let store = dir.join(STORE_FILE);
    let legacy = dir.join(LEGACY_FILE);
    let migrated = dir.join(MIGRATED_FILE);
    if !legacy.exists() {
        return Ok(Vec::new());
    }
    let bytes = fs::read(&legacy)
        .map_err(|e| StoreError::io(format!("reading {}", legacy.display()), e))?;
    let digest = digest(&bytes);
    if store.exists() {
        // Only the file this store was made from may be renamed; any other is refused, not ignored.
        let mut s = super::Store::open(dir)?;
        let from = s.meta("migrated_digest")?;
        drop(s);
        if from.as_deref() != Some(digest.as_str()) {
            return Err(StoreError::Migration {
                path: legacy,
                detail: format!(
                    "both {} and {LEGACY_FILE} exist, and the store was not made from this file: \
                     move one of them away (the store is used when {LEGACY_FILE} is absent)",
                    store.display()
                ),
            });
        }
        rename_legacy(dir)?;
        return Ok(vec![format!(
            "finished the import of {}: renamed to {}",
            legacy.display(),
            migrated.display()
        )]);
    }
    let summary = parse(&legacy, &bytes)?;
    create_store(dir, |tx| {
        import(tx, &summary)?;
        put_meta(tx, "migrated_from", LEGACY_FILE)?;
        put_meta(tx, "migrated_digest", &digest)
    })?;
    rename_legacy(dir)?;
    Ok(vec![format!(
        "imported {} into {} ({}); the old file is kept as {}",
        legacy.display(),
        store.display(),
        summary.describe(),
        migrated.display()
    )])
}

/// The old file, split into rows.
struct Legacy {
    /// Per table: (key, record) in file order.
    tables: Vec<(Table, Vec<(String, Value)>)>,
    ipam: DefaultIpam,
}

impl Legacy {
    fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .tables
            .iter()
            .map(|(t, rows)| format!("{} {}", rows.len(), t.name()))
            .collect();
        let pools = self.ipam.pools().count();
        let addresses: usize = self.ipam.pools().map(|(_, p)| p.allocated_count()).sum();
        parts.push(format!("{pools} IPAM pools, {addresses} addresses"));
        parts.join(", ")
    }
}

/// Reads the old document; refuses what the daemon could not restore (a missing key, a key
/// given twice, IPAM that breaks its rules).
fn parse(path: &Path, bytes: &[u8]) -> Result<Legacy, StoreError> {
    let bad = |detail: String| StoreError::Migration {
        path: path.to_path_buf(),
        detail,
    };
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let Value::Object(mut doc) = doc else {
        return Err(bad("not a JSON object".into()));
    };
    let mut tables = Vec::new();
    for (field, table, key_field) in LISTS {
        let rows = match doc.remove(field) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(rows)) => rows,
            Some(_) => return Err(bad(format!("`{field}` is not a list"))),
        };
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.into_iter().enumerate() {
            let Some(key) = row.get(key_field).and_then(Value::as_str) else {
                return Err(bad(format!("{field}[{i}] has no `{key_field}`")));
            };
            let key = key.to_string();
            if !seen.insert(key.clone()) {
                return Err(bad(format!("{field} lists {key:?} twice")));
            }
            out.push((key, row));
        }
        tables.push((table, out));
    }
    let ipam = match doc.remove("ipam") {
        None | Some(Value::Null) => DefaultIpam::new(),
        Some(v) => serde_json::from_value(v).map_err(|e| bad(format!("`ipam`: {e}")))?,
    };
    Ok(Legacy { tables, ipam })
}

/// Writes every row of the old file in the transaction `tx`.
fn import(tx: &mut Tx<'_>, legacy: &Legacy) -> Result<(), StoreError> {
    for (table, rows) in &legacy.tables {
        for (key, row) in rows {
            tx.put(*table, key, row)?;
        }
    }
    tx.apply_ipam(&legacy.ipam.as_changes())
}

/// Renames the imported file to `switch.json.migrated` and makes the rename durable.
fn rename_legacy(dir: &Path) -> Result<(), StoreError> {
    let legacy = dir.join(LEGACY_FILE);
    let migrated = dir.join(MIGRATED_FILE);
    fs::rename(&legacy, &migrated).map_err(|e| {
        StoreError::io(
            format!("renaming {} to {}", legacy.display(), migrated.display()),
            e,
        )
    })?;
    super::sync_dir(dir)
}

/// A fingerprint of the old file (its length and FNV-1a hash), to recognise it after a crash.
fn digest(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}:{hash:016x}", bytes.len())
}
