//! How a change reaches the store: one transaction holding only the records it touched and the
//! IPAM rows it changed, and memory put back as the store holds it when the commit fails.

use super::store::{Loaded, StoreError, Table, Tx};
use super::{ApiError, Daemon, EndpointRecord, NetworkRecord, PortRecord, SandboxRecord};
use serde::Serialize;
use std::collections::BTreeMap;

/// What the store held at start.
pub(super) type Saved = Loaded<NetworkRecord, PortRecord, SandboxRecord, EndpointRecord>;

/// Which way round a change went, for the error of a failed commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// The system was changed first; a failed commit undoes that change.
    SystemFirst,
    /// The store commits first; a failed commit means the system was not touched.
    StoreFirst,
}

/// The free space the state dir's filesystem must have for a change to be tried: below it the
/// disk counts as full. The store can often fit a small change in room it already has, so
/// without this a full disk would refuse some changes and not others; with it, a full disk
/// refuses every change alike, before anything is touched.
const MIN_FREE: u64 = 256 * 1024;

/// One record to write or delete at start, as JSON.
type Row = (Table, String, Option<serde_json::Value>);

impl Daemon {
    /// Commits one change: `f` puts and deletes the records the change touched, and the IPAM
    /// rows changed in memory since the last commit go in the same transaction. On failure
    /// the store is as it was, IPAM in memory is read back from it when it had changed (the
    /// undo steps give back what they took in case the store cannot be read either), and the
    /// error says what happened to the system (`order`); the caller undoes its other
    /// in-memory changes. A store-first change writes its IPAM rows in `f` and changes memory
    /// only once the commit returned, so a full disk cannot leave memory ahead of the store.
    pub(super) fn commit(
        &mut self,
        order: Order,
        f: impl FnOnce(&mut Tx<'_>) -> Result<(), StoreError>,
    ) -> Result<(), ApiError> {
        let what = match order {
            Order::SystemFirst => "the change was undone",
            Order::StoreFirst => "nothing was changed",
        };
        let changes = self.ipam.take_changes();
        if let Err(e) = self.check_room() {
            if !changes.is_empty() {
                self.reload_ipam();
            }
            return Err(ApiError::internal(format!(
                "saving the change failed, so {what}: {e}"
            )));
        }
        let written = self.store.write(|tx| {
            f(tx)?;
            tx.apply_ipam(&changes)
        });
        written.map_err(|e| {
            if !changes.is_empty() {
                self.reload_ipam();
            }
            ApiError::internal(format!("saving the change failed, so {what}: {e}"))
        })
    }

    /// Refuses with ENOSPC when the state dir's filesystem has less than [`MIN_FREE`] left.
    fn check_room(&self) -> Result<(), String> {
        let dir = self
            .store
            .path()
            .parent()
            .unwrap_or(std::path::Path::new("."));
        let Ok(st) = rustix::fs::statvfs(dir) else {
            // Cannot tell: let the store try.
            return Ok(());
        };
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free >= MIN_FREE {
            return Ok(());
        }
        Err(format!(
            "the state dir {} is full ({} KiB free, a change needs {} KiB): {}",
            dir.display(),
            free / 1024,
            MIN_FREE / 1024,
            std::io::Error::from_raw_os_error(libc::ENOSPC)
        ))
    }

    /// After a failed request: IPAM in memory back to what the store holds, when the request
    /// left changes that were never committed (an address taken, then given back, still moved
    /// the pool's cursor).
    pub(super) fn forget_uncommitted_ipam(&mut self) {
        if !self.ipam.take_changes().is_empty() {
            self.reload_ipam();
        }
    }

    /// Reads IPAM back from the store (tracking changes again).
    fn reload_ipam(&mut self) {
        match self.store.load_ipam() {
            Ok(mut ipam) => {
                ipam.track_changes();
                self.ipam = ipam;
            }
            Err(e) => tracing::error!(error = %e, "cannot read IPAM back from the store"),
        }
        let _ = self.ipam.take_changes();
    }

    /// Writes in one transaction whatever in memory differs from the store: every record read
    /// back and compared. For the changes that do not yet say which records they touched (the
    /// Docker plugin's calls, published ports, the cluster's events); a request that knows its
    /// records commits them with [`Daemon::commit`], whose cost does not grow with the state.
    pub(super) fn save(&mut self) -> Result<(), ApiError> {
        let saved: Saved = match self.store.load_all() {
            Ok(s) => s,
            Err(e) => {
                self.forget_uncommitted_ipam();
                return Err(ApiError::internal(format!("reading the store: {e}")));
            }
        };
        if let Err(e) = self.check_room() {
            self.forget_uncommitted_ipam();
            return Err(ApiError::internal(format!(
                "saving the change failed, so the change was undone: {e}"
            )));
        }
        self.write_differences(&saved, "saving the change")
    }

    /// Writes in one transaction what start-up changed against what the store held (`saved`):
    /// the repaired, added and dropped records and IPAM's changes. Writes nothing when nothing
    /// changed, so a start on a full disk works as long as it has nothing to repair.
    pub(super) fn write_repairs(&mut self, saved: &Saved) -> Result<(), ApiError> {
        self.write_differences(saved, "saving what start-up repaired")
    }

    /// Writes, in one transaction, every record in memory that differs from `saved` and the
    /// IPAM changes; `what` names the write in its error.
    fn write_differences(&mut self, saved: &Saved, what: &str) -> Result<(), ApiError> {
        let mut rows: Vec<Row> = Vec::new();
        diff(
            &mut rows,
            Table::Networks,
            &saved.networks,
            self.networks
                .iter()
                .map(|(k, n)| (k.as_str(), &n.record))
                .collect(),
        )?;
        diff(
            &mut rows,
            Table::Ports,
            &saved.ports,
            self.ports
                .iter()
                .map(|(k, p)| (k.as_str(), &p.record))
                .collect(),
        )?;
        diff(
            &mut rows,
            Table::Sandboxes,
            &saved.sandboxes,
            self.sandboxes
                .iter()
                .map(|(k, s)| (k.as_str(), s))
                .collect(),
        )?;
        diff(
            &mut rows,
            Table::Endpoints,
            &saved.endpoints,
            self.endpoints.iter().map(|e| (e.id.as_str(), e)).collect(),
        )?;
        let changes = self.ipam.take_changes();
        if rows.is_empty() && changes.is_empty() {
            return Ok(());
        }
        self.store
            .write(|tx| {
                for (table, key, value) in &rows {
                    match value {
                        Some(v) => tx.put(*table, key, v)?,
                        None => {
                            tx.delete(*table, key)?;
                        }
                    }
                }
                tx.apply_ipam(&changes)
            })
            .map_err(|e| ApiError::internal(format!("{what}: {e}")))
    }
}

/// The rows that turn `old` into `new`: puts for new or changed records, deletes for the rest.
fn diff<T: PartialEq + Serialize>(
    rows: &mut Vec<Row>,
    table: Table,
    old: &[(String, T)],
    new: BTreeMap<&str, &T>,
) -> Result<(), ApiError> {
    let encode = |v: &T| {
        serde_json::to_value(v)
            .map_err(|e| ApiError::internal(format!("encoding {}: {e}", table.name())))
    };
    let old: BTreeMap<&str, &T> = old.iter().map(|(k, v)| (k.as_str(), v)).collect();
    for k in old.keys() {
        if !new.contains_key(k) {
            rows.push((table, k.to_string(), None));
        }
    }
    for (k, v) in new {
        if old.get(k) != Some(&v) {
            rows.push((table, k.to_string(), Some(encode(v)?)));
        }
    }
    Ok(())
}
