//! IPAM in the store: one row per pool (its metadata) and one row per allocated address.
//!
//! An allocation writes one address row (and the pool's metadata when the round-robin cursor
//! moved), a release deletes one row: the cost does not depend on how full the pool is.

use super::{StoreError, IPAM_ADDRESSES, IPAM_POOLS};
use ipam::{DefaultIpam, IpamChange, Pool, PoolMeta};
use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};
use std::net::Ipv4Addr;
use std::path::Path;

/// Writes `changes` in the transaction `tx`, in order.
pub(super) fn apply(
    tx: &WriteTransaction,
    path: &Path,
    changes: &[IpamChange],
) -> Result<(), StoreError> {
    let what = || format!("writing IPAM to {}", path.display());
    let db = |e: redb::Error| StoreError::db(what(), e);
    let mut pools = tx.open_table(IPAM_POOLS).map_err(|e| db(e.into()))?;
    let mut addresses = tx.open_table(IPAM_ADDRESSES).map_err(|e| db(e.into()))?;
    for change in changes {
        match change {
            IpamChange::PoolSet { id, meta } => {
                let bytes = serde_json::to_vec(meta).map_err(|e| StoreError::Encode {
                    table: "ipam_pools",
                    key: id.to_string(),
                    detail: e.to_string(),
                })?;
                pools
                    .insert(id.as_str(), bytes.as_slice())
                    .map_err(|e| db(e.into()))?;
            }
            IpamChange::PoolRemoved { id } => {
                pools.remove(id.as_str()).map_err(|e| db(e.into()))?;
                addresses
                    .retain_in((id.as_str(), 0)..=(id.as_str(), u32::MAX), |_, _| false)
                    .map_err(|e| db(e.into()))?;
            }
            IpamChange::Allocated {
                pool,
                address,
                owner,
            } => {
                addresses
                    .insert((pool.as_str(), u32::from(*address)), owner.as_str())
                    .map_err(|e| db(e.into()))?;
            }
            IpamChange::Released { pool, address } => {
                addresses
                    .remove((pool.as_str(), u32::from(*address)))
                    .map_err(|e| db(e.into()))?;
            }
        }
    }
    Ok(())
}

/// Rebuilds the IPAM driver from its rows, refusing rows that break its rules (an address
/// outside its pool or on its gateway, an allocation without a pool, overlapping pools).
pub(super) fn load(rtx: &redb::ReadTransaction, path: &Path) -> Result<DefaultIpam, StoreError> {
    let what = || format!("reading IPAM from {}", path.display());
    let db = |e: redb::Error| StoreError::db(what(), e);
    let bad = |key: String, detail: String| StoreError::Record {
        path: path.to_path_buf(),
        table: "ipam",
        key,
        detail,
    };
    let pools_t = match rtx.open_table(IPAM_POOLS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(DefaultIpam::new()),
        Err(e) => return Err(db(e.into())),
    };
    let addresses_t = rtx.open_table(IPAM_ADDRESSES).map_err(|e| db(e.into()))?;
    let mut pools = Vec::new();
    let mut counted = 0u64;
    for row in pools_t.iter().map_err(|e| db(e.into()))? {
        let (k, v) = row.map_err(|e| db(e.into()))?;
        let id = k.value().to_string();
        let meta: PoolMeta = super::decode(path, "ipam_pools", &id, v.value())?;
        let mut allocations = Vec::new();
        for row in addresses_t
            .range((id.as_str(), 0)..=(id.as_str(), u32::MAX))
            .map_err(|e| db(e.into()))?
        {
            let (k, v) = row.map_err(|e| db(e.into()))?;
            allocations.push((Ipv4Addr::from(k.value().1), v.value().to_string()));
        }
        counted += allocations.len() as u64;
        let subnet = meta.subnet;
        let pool =
            Pool::from_parts(meta, allocations).map_err(|e| bad(id.clone(), e.to_string()))?;
        if ipam::PoolId::from_subnet(subnet).as_str() != id {
            return Err(bad(id, format!("the pool's subnet is {subnet}")));
        }
        pools.push(pool);
    }
    let total = addresses_t.len().map_err(|e| db(e.into()))?;
    if total != counted {
        return Err(bad(
            "ipam_addresses".into(),
            format!("{} allocation(s) belong to no pool", total - counted),
        ));
    }
    DefaultIpam::from_pools(pools).map_err(|e| bad("ipam_pools".into(), e.to_string()))
}

/// How many pool and address rows there are.
pub(super) fn counts(rtx: &redb::ReadTransaction, path: &Path) -> Result<(u64, u64), StoreError> {
    let what = || format!("counting IPAM rows of {}", path.display());
    let db = |e: redb::Error| StoreError::db(what(), e);
    let pools = match rtx.open_table(IPAM_POOLS) {
        Ok(t) => t.len().map_err(|e| db(e.into()))?,
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(db(e.into())),
    };
    let addresses = match rtx.open_table(IPAM_ADDRESSES) {
        Ok(t) => t.len().map_err(|e| db(e.into()))?,
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(db(e.into())),
    };
    Ok((pools, addresses))
}
