//! The cluster client: swarm-scope networks, cluster-wide IPAM, node and endpoint discovery in
//! etcd, turned into typed events for the overlay (issue 16).
//!
//! As in flannel's VXLAN backend, this client only produces [`ClusterEvent`]s from what etcd
//! holds; whoever programs the VTEP consumes them. Neither knows the other.
//!
//! # Client choice: etcd's v3 JSON gateway over a small sync HTTP client
//!
//! The `etcd-client` crate (checked at 0.21.1, the latest) generates its gRPC stubs in its own
//! `build.rs` with `tonic-prost-build`, which runs an external `protoc` found through `PROTOC` or
//! `PATH`. That build script runs before any of ours, so a vendored protoc
//! (`protoc-bin-vendored`) set from our build script cannot reach it; the build would need
//! Debian's `protobuf-compiler` installed, and `cargo run` on a fresh machine would fail. It
//! would also bring tokio and tonic into the daemon for a handful of calls.
//!
//! etcd serves the same v3 API as JSON over HTTP on its client URL (its grpc-gateway: `/v3/`
//! since 3.4, as in Debian's etcd-server 3.4.23; `/v3beta/` in 3.3): `/v3/kv/range`, `/v3/kv/put`,
//! `/v3/kv/deleterange`, `/v3/kv/txn`, `/v3/lease/grant|keepalive|revoke`, and the streaming
//! `/v3/watch`. [`etcd::Etcd`] speaks it with `ureq` (sync, no TLS, no async runtime), so the
//! cluster client is a few plain threads: the caller's control-plane thread, one keep-alive
//! thread, and one thread per [`Watcher`]. Nothing here runs on the datapath.
//!
//! # Key layout
//!
//! Under a configurable prefix (default [`DEFAULT_PREFIX`], `/vswitch/`):
//!
//! - `nodes/NODE` → `{"vtep": "ADDR:PORT", "started": UNIX_SECS}`, attached to the node's lease
//!   (TTL [`DEFAULT_TTL`], renewed every third of it by the keep-alive thread);
//! - `networks/NET` → the [`NetworkSpec`] as JSON, with its VNI;
//! - `vnis/VNI` → the network's name: the VNI claim, created in the same transaction as the
//!   network with a compare on `create_revision == 0`, so no two networks share a VNI;
//! - `pool/NET/IP` → the address's owner, created with a compare on `create_revision == 0`;
//! - `pool/NET/next` → the last address handed out automatically. An automatic allocation
//!   searches from the address after it (the local `ipam` crate's round-robin rule, in fact its
//!   very `Pool`), and moves it in the same transaction, compared on its `mod_revision`, so a
//!   just-released address does not come straight back;
//! - `endpoints/NET/ID` → `{"mac", "ip", "node"}`, attached to the owning node's lease, so a dead
//!   node's endpoints vanish with its lease.
//!
//! A host's watcher reads and watches one key range, [`Keys::watched`]: `endpoints/`,
//! `networks/` and `nodes/`, which sort before `pool/` and `vnis/`. Pools and claims are read
//! only by whoever allocates, so a connect reaches the other hosts as one event. The watch asks
//! for no previous values (`prev_kv`): a view needs only a deleted key's name.
//!
//! The flood list of a network is derived, not stored: the VTEPs of the registered nodes that
//! have an endpoint on it ([`ClusterView::flood_list`]).
//!
//! Removing a network compares the whole `endpoints/NET/` range to `version == 0` in the same
//! transaction as the deletes (a range compare, etcd ≥ 3.3), so an endpoint published meanwhile
//! makes the removal fail instead of leaving an orphan.
//!
//! # Wiring into the daemon
//!
//! With `--cluster`: [`Cluster::connect`] at start-up (refused with
//! [`ClusterError::NodeNameTaken`] if a live node holds the name with another VTEP), then
//! [`Cluster::reconcile_endpoints`] against the endpoints restored from the state directory;
//! [`Cluster::watch`] and hand [`Watcher::events`] to the overlay, which applies them (a new
//! watcher first sends the whole state as additions, then `Synced`; [`ClusterView::apply`]
//! keeps a consumer's own view for flood lists). `network create --scope swarm` is
//! [`Cluster::create_network`]; IPAM on a swarm network is [`Cluster::allocate_address`] and
//! [`Cluster::release_address`]; connect and disconnect publish and withdraw the endpoint;
//! `vswitchctl cluster status` shows [`Cluster::status`] (`Display` for people, `Serialize` for
//! `--json`). Dropping the [`Cluster`] on shutdown revokes the lease, so the node leaves at once.
//! The daemon's side of all this is `daemon/swarm.rs` (`vswitchd --cluster`).
//!
//! # Faults
//!
//! Every call has a deadline ([`DEFAULT_TIMEOUT`]); with etcd unreachable an operation fails
//! with [`ClusterError::Unreachable`]. A watcher that loses etcd reports
//! [`ClusterEvent::Unreachable`], retries with backoff, and on success re-reads everything,
//! sends the difference to what it had as events, then [`ClusterEvent::Synced`], and watches
//! from the re-read's revision. The keep-alive thread registers the node anew (new lease, node
//! key and this node's endpoints written again) when etcd has forgotten its lease.

pub mod error;
pub mod etcd;
pub mod keys;
pub mod view;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};
use serde_json::json;
pub use switch::MacAddr;

pub use error::ClusterError;
pub use etcd::Etcd;
use etcd::{Compare, KeyValue, TxnOp, WatchEnd};
pub use keys::Keys;
pub use view::{ClusterEvent, ClusterView, EndpointRecord, NetworkSpec, NodeInfo, NodeRecord};

/// The key prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "/vswitch/";
/// The TTL of a node's lease: a dead node disappears from the others within it.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// The deadline of one etcd call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a watch may stay silent before it is reopened (from the last revision seen).
pub const DEFAULT_WATCH_IDLE: Duration = Duration::from_secs(10);
/// The VNIs chosen automatically (those below are left for explicit choice).
pub const AUTO_VNIS: (u32, u32) = (4096, 0x00ff_ffff);
/// The largest VNI: 24 bits (RFC 7348 § 5).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// The most operations put in one transaction (etcd's default `--max-txn-ops` is 128).
const MAX_TXN_OPS: usize = 100;
/// How many conflicting transactions an operation tries before giving up.
const MAX_ATTEMPTS: u32 = 500;
/// The first and the longest pause of a watcher between two attempts to reach etcd.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3));

/// Where etcd is and who this node is.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// etcd client URLs (`etcd://HOST:PORT`, `http://HOST:PORT` or `HOST:PORT`).
    pub endpoints: Vec<String>,
    /// The key prefix.
    pub prefix: String,
    /// This node's name (unique in the cluster).
    pub node: String,
    /// This node's VTEP.
    pub vtep: SocketAddr,
    /// The TTL of this node's lease (whole seconds, at least 1).
    pub ttl: Duration,
    /// The deadline of one etcd call.
    pub timeout: Duration,
    /// How long a watch may stay silent before it is reopened.
    pub watch_idle: Duration,
}

impl ClusterConfig {
    /// The defaults for `node` at `vtep` against `endpoints`.
    pub fn new(endpoints: &[String], node: &str, vtep: SocketAddr) -> ClusterConfig {
        ClusterConfig {
            endpoints: endpoints.to_vec(),
            prefix: DEFAULT_PREFIX.to_string(),
            node: node.to_string(),
            vtep,
            ttl: DEFAULT_TTL,
            timeout: DEFAULT_TIMEOUT,
            watch_idle: DEFAULT_WATCH_IDLE,
        }
    }
}

/// `vswitchctl cluster status`: the etcd endpoints, this node, and every registered node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The etcd client URLs.
    pub endpoints: Vec<String>,
    /// The store revision read.
    pub revision: i64,
    /// This node's name.
    pub node: String,
    /// This node's VTEP.
    pub vtep: SocketAddr,
    /// This node's lease id.
    pub lease: i64,
    /// Every registered node, this one included.
    pub nodes: Vec<NodeStatus>,
    /// Networks in the cluster.
    pub networks: usize,
    /// Endpoints in the cluster.
    pub endpoint_count: usize,
}

/// One node in [`ClusterStatus`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's name.
    pub name: String,
    /// Its VTEP.
    pub vtep: SocketAddr,
    /// Seconds since it registered.
    pub age_secs: u64,
    /// Its lease id.
    pub lease: i64,
    /// Seconds left on its lease (-1: expired or unknown).
    pub lease_ttl_secs: i64,
    /// The lease's granted TTL.
    pub lease_granted_secs: i64,
}

impl std::fmt::Display for ClusterStatus {
    /// The human form of `vswitchctl cluster status`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "etcd:      {}", self.endpoints.join(","))?;
        writeln!(f, "revision:  {}", self.revision)?;
        writeln!(
            f,
            "this node: {} (VTEP {}, lease {:x})",
            self.node, self.vtep, self.lease
        )?;
        writeln!(
            f,
            "networks:  {}, endpoints: {}",
            self.networks, self.endpoint_count
        )?;
        writeln!(
            f,
            "{:<24} {:<22} {:>8} {:>16} {:>10}",
            "NODE", "VTEP", "AGE", "LEASE", "TTL LEFT"
        )?;
        for node in &self.nodes {
            let me = if node.name == self.node { " *" } else { "" };
            writeln!(
                f,
                "{:<24} {:<22} {:>7}s {:>16x} {:>5}s/{}s",
                format!("{}{me}", node.name),
                node.vtep.to_string(),
                node.age_secs,
                node.lease,
                node.lease_ttl_secs,
                node.lease_granted_secs
            )?;
        }
        Ok(())
    }
}

/// What the caller's thread, the keep-alive thread and the watchers share.
#[derive(Debug)]
struct Shared {
    etcd: Etcd,
    keys: Keys,
    config: ClusterConfig,
    /// This node's current lease (replaced when etcd forgot the old one).
    lease: AtomicI64,
    /// This node's published endpoints, written again under a new lease.
    own: Mutex<BTreeMap<(String, String), EndpointRecord>>,
}

impl Shared {
    fn own(&self) -> MutexGuard<'_, BTreeMap<(String, String), EndpointRecord>> {
        // A panic elsewhere while holding the lock leaves a map that is still consistent.
        self.own.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Grants a lease and writes this node's key and endpoints under it.
    fn register(&self) -> Result<i64, ClusterError> {
        let ttl = i64::try_from(self.config.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let (lease, _) = self.etcd.lease_grant(ttl)?;
        // From now on, new endpoints go under the new lease (if the writes below fail, the
        // keep-alive finds the lease gone and registers once more).
        self.lease.store(lease, Ordering::SeqCst);
        let record = NodeRecord {
            vtep: self.config.vtep,
            started: unix_now(),
        };
        let node = TxnOp::put(&self.keys.node(&self.config.node), &to_json(&record), lease);
        let endpoints: Vec<TxnOp> = self
            .own()
            .iter()
            .map(|((network, id), ep)| {
                TxnOp::put(&self.keys.endpoint(network, id), &to_json(ep), lease)
            })
            .collect();
        // The node first, so others know its VTEP before its endpoints; then the endpoints in
        // chunks, as etcd caps a transaction's operations (--max-txn-ops, 128 by default).
        let written = std::iter::once(std::slice::from_ref(&node))
            .chain(endpoints.chunks(MAX_TXN_OPS))
            .try_for_each(|ops| self.etcd.txn(&[], ops, &[]).map(drop));
        if let Err(e) = written {
            // Best effort: the lease would expire on its own anyway.
            let _ = self.etcd.lease_revoke(lease);
            return Err(e);
        }
        Ok(lease)
    }
}

/// A connection to the cluster: this node registered under a lease kept alive by a thread.
///
/// All operations are synchronous and meant for one control-plane thread (the type is `Sync`,
/// so tests may share it). Dropping it stops the keep-alive and revokes the lease: the node and
/// its endpoints leave the cluster at once.
#[derive(Debug)]
pub struct Cluster {
    shared: Arc<Shared>,
    /// Dropping it stops the keep-alive thread.
    stop_keepalive: Mutex<Option<Sender<()>>>,
    keepalive: Mutex<Option<JoinHandle<()>>>,
}

impl Cluster {
    /// Connects to etcd at `endpoints` under `prefix` and registers `node` with its `vtep`.
    pub fn connect(
        endpoints: &[String],
        prefix: &str,
        node: &str,
        vtep: SocketAddr,
    ) -> Result<Cluster, ClusterError> {
        let mut config = ClusterConfig::new(endpoints, node, vtep);
        config.prefix = prefix.to_string();
        Cluster::connect_with(config)
    }

    /// Connects with every setting given.
    pub fn connect_with(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        keys::check_name("node", &config.node)?;
        let etcd = Etcd::new(&config.endpoints, config.timeout, config.watch_idle)?;
        let shared = Arc::new(Shared {
            etcd,
            keys: Keys::new(&config.prefix),
            config,
            lease: AtomicI64::new(0),
            own: Mutex::new(BTreeMap::new()),
        });
        // Another live host with this name but another VTEP: refuse rather than take it over.
        // The same VTEP is this host restarted (after kill -9): its registration is replaced.
        let current = shared.etcd.range(&shared.keys.node(&shared.config.node))?;
        if let Some(kv) = current.kvs.first() {
            if let Ok(record) = serde_json::from_slice::<NodeRecord>(&kv.value) {
                if record.vtep != shared.config.vtep {
                    return Err(ClusterError::NodeNameTaken {
                        node: shared.config.node.clone(),
                        vtep: record.vtep,
                    });
                }
            }
        }
        shared.register()?;
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("cluster-keepalive".into())
            .spawn(move || keepalive(&thread_shared, &stopped))
            .map_err(|e| ClusterError::Etcd {
                op: "keep-alive thread",
                message: e.to_string(),
            })?;
        Ok(Cluster {
            shared,
            stop_keepalive: Mutex::new(Some(stop)),
            keepalive: Mutex::new(Some(handle)),
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.shared.config.node
    }

    /// The key layout in use.
    pub fn keys(&self) -> &Keys {
        &self.shared.keys
    }

    /// The etcd client of this connection (for tools that read raw keys).
    pub fn etcd(&self) -> &Etcd {
        &self.shared.etcd
    }

    /// This node's current lease id.
    pub fn lease(&self) -> i64 {
        self.shared.lease.load(Ordering::SeqCst)
    }

    /// Stops renewing the lease without revoking it, as a crashed host would: the node and its
    /// endpoints disappear from the cluster when the TTL runs out (fault drills and tests).
    pub fn halt_keepalive(&self) {
        self.stop_keepalive_thread();
    }

    /// Creates a swarm network; chooses a VNI when `spec.vni` is `None`, refuses one already
    /// claimed. Returns the network as stored (VNI and gateway filled in).
    pub fn create_network(&self, spec: NetworkSpec) -> Result<NetworkSpec, ClusterError> {
        keys::check_name("network", &spec.name)?;
        let mut spec = spec;
        if let Some(vni) = spec.vni {
            if vni == 0 || vni > MAX_VNI {
                return Err(ClusterError::BadVni { vni });
            }
        }
        if spec.gateway.is_none() {
            spec.gateway = Some(ipam::Pool::default_gateway(spec.subnet));
        }
        // The address rules are checked once here, so every allocation can rely on them.
        pool_of(&spec, &BTreeMap::new(), None)?;
        let keys = &self.shared.keys;
        let net_key = keys.network(&spec.name);
        for _ in 0..MAX_ATTEMPTS {
            let vni = match spec.vni {
                Some(vni) => vni,
                None => self.free_vni()?,
            };
            let stored = NetworkSpec {
                vni: Some(vni),
                ..spec.clone()
            };
            let vni_key = keys.vni(vni);
            let result = self.shared.etcd.txn(
                &[Compare::absent(&net_key), Compare::absent(&vni_key)],
                &[
                    TxnOp::put(&net_key, &to_json(&stored), 0),
                    TxnOp::put(&vni_key, spec.name.as_bytes(), 0),
                ],
                &[TxnOp::get(&net_key), TxnOp::get(&vni_key)],
            )?;
            if result.succeeded {
                return Ok(stored);
            }
            if result.ranges.first().is_some_and(|r| !r.is_empty()) {
                return Err(ClusterError::NetworkExists { name: spec.name });
            }
            if spec.vni.is_some() {
                let owner = result
                    .ranges
                    .get(1)
                    .and_then(|r| r.first())
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                    .unwrap_or_default();
                return Err(ClusterError::VniInUse { vni, owner });
            }
            // Another network took the VNI chosen: choose again.
        }
        Err(ClusterError::Contention {
            what: format!("creating network {}", spec.name),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The swarm network `name` as stored, if the cluster has it.
    pub fn network(&self, name: &str) -> Result<Option<NetworkSpec>, ClusterError> {
        keys::check_name("network", name)?;
        let read = self.shared.etcd.range(&self.shared.keys.network(name))?;
        read.kvs.first().map(decode::<NetworkSpec>).transpose()
    }

    /// The lowest VNI of [`AUTO_VNIS`] not claimed.
    fn free_vni(&self) -> Result<u32, ClusterError> {
        let keys = &self.shared.keys;
        let claimed = self.shared.etcd.range_prefix(&keys.vnis())?;
        let mut taken: Vec<u32> = claimed
            .kvs
            .iter()
            .filter_map(|kv| match keys.parse(&kv.key) {
                Some(keys::Key::Vni(vni)) => Some(vni),
                _ => None,
            })
            .collect();
        taken.sort_unstable();
        let (low, high) = AUTO_VNIS;
        let mut candidate = low;
        for vni in taken {
            if vni == candidate {
                candidate += 1;
            } else if vni > candidate {
                break;
            }
        }
        if candidate > high {
            return Err(ClusterError::VnisExhausted { low, high });
        }
        Ok(candidate)
    }

    /// Removes a swarm network and every key of it (VNI claim, addresses, cursor); refused
    /// while any node has an endpoint on it.
    pub fn remove_network(&self, name: &str) -> Result<(), ClusterError> {
        keys::check_name("network", name)?;
        let keys = &self.shared.keys;
        let net_key = keys.network(name);
        let eps_prefix = keys.endpoints(name);
        for _ in 0..MAX_ATTEMPTS {
            let current = self.shared.etcd.range(&net_key)?;
            let Some(kv) = current.kvs.first() else {
                return Err(ClusterError::NoSuchNetwork { name: name.into() });
            };
            let spec = decode::<NetworkSpec>(kv)?;
            let mut ops = vec![
                TxnOp::delete(&net_key),
                TxnOp::delete_prefix(&keys.ipam(name)),
            ];
            if let Some(vni) = spec.vni {
                ops.push(TxnOp::delete(&keys.vni(vni)));
            }
            let result = self.shared.etcd.txn(
                &[
                    Compare::mod_revision(&net_key, kv.mod_revision),
                    Compare::prefix_empty(&eps_prefix),
                ],
                &ops,
                &[TxnOp::get_prefix(&eps_prefix)],
            )?;
            if result.succeeded {
                return Ok(());
            }
            let endpoints = result.ranges.first().cloned().unwrap_or_default();
            if !endpoints.is_empty() {
                let mut nodes: Vec<String> = endpoints
                    .iter()
                    .filter_map(|kv| serde_json::from_slice::<EndpointRecord>(&kv.value).ok())
                    .map(|ep| ep.node)
                    .collect();
                nodes.sort();
                nodes.dedup();
                return Err(ClusterError::NetworkInUse {
                    name: name.into(),
                    count: endpoints.len(),
                    nodes: nodes.join(","),
                });
            }
            // The network changed between the read and the transaction: read again.
        }
        Err(ClusterError::Contention {
            what: format!("removing network {name}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Allocates an address on `network` for `owner`: `requested` if it is free, else the next
    /// free one after the cursor (compare-and-swap, retried when another host won the race).
    pub fn allocate_address(
        &self,
        network: &str,
        owner: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, ClusterError> {
        keys::check_name("network", network)?;
        let keys = &self.shared.keys;
        let net_key = keys.network(network);
        let cursor_key = keys.cursor(network);
        for attempt in 0..MAX_ATTEMPTS {
            // One consistent read of the network and its addresses.
            let read = self.shared.etcd.txn(
                &[],
                &[TxnOp::get(&net_key), TxnOp::get_prefix(&keys.ipam(network))],
                &[],
            )?;
            let Some(net_kv) = read.ranges.first().and_then(|r| r.first()) else {
                return Err(ClusterError::NoSuchNetwork {
                    name: network.into(),
                });
            };
            let spec = decode::<NetworkSpec>(net_kv)?;
            let mut allocated = BTreeMap::new();
            let mut cursor: Option<(Ipv4Addr, i64)> = None;
            for kv in read.ranges.get(1).into_iter().flatten() {
                match keys.parse(&kv.key) {
                    Some(keys::Key::Address { ip, .. }) => {
                        allocated.insert(ip, String::from_utf8_lossy(&kv.value).into_owned());
                    }
                    Some(keys::Key::Cursor { .. }) => {
                        let text = String::from_utf8_lossy(&kv.value);
                        cursor = text.parse().ok().map(|ip| (ip, kv.mod_revision));
                    }
                    _ => {}
                }
            }
            let mut pool = pool_of(&spec, &allocated, cursor.map(|c| c.0))?;
            let ip = pool
                .allocate(owner, requested)
                .map_err(|source| ClusterError::Ipam {
                    network: network.into(),
                    source,
                })?;
            let addr_key = keys.address(network, ip);
            let mut compare = vec![
                Compare::mod_revision(&net_key, net_kv.mod_revision),
                Compare::absent(&addr_key),
            ];
            let mut ops = vec![TxnOp::put(&addr_key, owner.as_bytes(), 0)];
            if requested.is_none() {
                compare.push(Compare::mod_revision(
                    &cursor_key,
                    cursor.map_or(0, |c| c.1),
                ));
                ops.push(TxnOp::put(&cursor_key, ip.to_string().as_bytes(), 0));
            }
            if self.shared.etcd.txn(&compare, &ops, &[])?.succeeded {
                return Ok(ip);
            }
            backoff_pause(attempt);
        }
        Err(ClusterError::Contention {
            what: format!("allocating an address on {network}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Releases `ip` on `network`; the cursor stays, so the address is not handed out again
    /// until the search has gone round.
    pub fn release_address(&self, network: &str, ip: Ipv4Addr) -> Result<(), ClusterError> {
        keys::check_name("network", network)?;
        let key = self.shared.keys.address(network, ip);
        let result =
            self.shared
                .etcd
                .txn(&[Compare::present(&key)], &[TxnOp::delete(&key)], &[])?;
        if result.succeeded {
            Ok(())
        } else {
            Err(ClusterError::NotAllocated {
                network: network.into(),
                address: ip,
            })
        }
    }

    /// Publishes this node's endpoint `id` on `network` under this node's lease.
    pub fn publish_endpoint(
        &self,
        network: &str,
        id: &str,
        mac: MacAddr,
        ip: Ipv4Addr,
    ) -> Result<(), ClusterError> {
        self.publish_endpoints(network, &[(id.to_string(), mac, ip)])
    }

    /// Publishes many of this node's endpoints on `network` (`(id, mac, ip)` each) under this
    /// node's lease, in transactions of up to 100 puts: one revision, so one watch
    /// message per other host, for each chunk instead of each endpoint. What a host does when
    /// it (re)publishes its endpoints at start-up; a chunk is written whole or not at all.
    pub fn publish_endpoints(
        &self,
        network: &str,
        endpoints: &[(String, MacAddr, Ipv4Addr)],
    ) -> Result<(), ClusterError> {
        keys::check_name("network", network)?;
        for (id, _, _) in endpoints {
            keys::check_name("endpoint", id)?;
        }
        let keys = &self.shared.keys;
        let net_key = keys.network(network);
        for chunk in endpoints.chunks(MAX_TXN_OPS) {
            let records: Vec<((String, String), EndpointRecord)> = chunk
                .iter()
                .map(|(id, mac, ip)| {
                    let record = EndpointRecord {
                        mac: *mac,
                        ip: *ip,
                        node: self.shared.config.node.clone(),
                    };
                    ((network.to_string(), id.clone()), record)
                })
                .collect();
            {
                // Recorded first, so a re-registration racing with this write includes them.
                let mut own = self.shared.own();
                for (slot, record) in &records {
                    own.insert(slot.clone(), record.clone());
                }
            }
            let lease = self.lease();
            let ops: Vec<TxnOp> = records
                .iter()
                .map(|((_, id), record)| {
                    TxnOp::put(&keys.endpoint(network, id), &to_json(record), lease)
                })
                .collect();
            let error = match self
                .shared
                .etcd
                .txn(&[Compare::present(&net_key)], &ops, &[])
            {
                Ok(r) if r.succeeded => continue,
                Ok(_) => ClusterError::NoSuchNetwork {
                    name: network.into(),
                },
                Err(ClusterError::Etcd { message, .. }) if message.contains("lease not found") => {
                    ClusterError::LeaseLost {
                        node: self.node().into(),
                    }
                }
                Err(e) => e,
            };
            let mut own = self.shared.own();
            for (slot, _) in &records {
                own.remove(slot);
            }
            return Err(error);
        }
        Ok(())
    }

    /// Withdraws this node's endpoint `id` from `network` (nothing happens if it is not there).
    pub fn withdraw_endpoint(&self, network: &str, id: &str) -> Result<(), ClusterError> {
        keys::check_name("network", network)?;
        keys::check_name("endpoint", id)?;
        let key = self.shared.keys.endpoint(network, id);
        self.shared.etcd.txn(&[], &[TxnOp::delete(&key)], &[])?;
        self.shared
            .own()
            .remove(&(network.to_string(), id.to_string()));
        Ok(())
    }

    /// After a restart: keeps this node's endpoints in etcd that `keep` accepts (written again
    /// under the current lease) and withdraws the others; returns the withdrawn `(network, id)`.
    pub fn reconcile_endpoints(
        &self,
        keep: impl Fn(&str, &str) -> bool,
    ) -> Result<Vec<(String, String)>, ClusterError> {
        let view = self.snapshot()?;
        let mut withdrawn = Vec::new();
        for (network, eps) in &view.endpoints {
            let mut kept = Vec::new();
            for (id, ep) in eps {
                if ep.node != self.shared.config.node {
                    continue;
                }
                if keep(network, id) {
                    kept.push((id.clone(), ep.mac, ep.ip));
                } else {
                    self.withdraw_endpoint(network, id)?;
                    withdrawn.push((network.clone(), id.clone()));
                }
            }
            self.publish_endpoints(network, &kept)?;
        }
        Ok(withdrawn)
    }

    /// A full re-read of everything under the prefix.
    pub fn snapshot(&self) -> Result<ClusterView, ClusterError> {
        snapshot(&self.shared)
    }

    /// The status shown by `vswitchctl cluster status`.
    pub fn status(&self) -> Result<ClusterStatus, ClusterError> {
        let view = self.snapshot()?;
        let now = unix_now();
        let mut nodes = Vec::new();
        for (name, info) in &view.nodes {
            let (ttl, granted) = if info.lease == 0 {
                (-1, 0)
            } else {
                self.shared.etcd.lease_time_to_live(info.lease)?
            };
            nodes.push(NodeStatus {
                name: name.clone(),
                vtep: info.vtep,
                age_secs: now.saturating_sub(info.started),
                lease: info.lease,
                lease_ttl_secs: ttl,
                lease_granted_secs: granted,
            });
        }
        Ok(ClusterStatus {
            endpoints: self.shared.etcd.endpoints().to_vec(),
            revision: view.revision,
            node: self.shared.config.node.clone(),
            vtep: self.shared.config.vtep,
            lease: self.lease(),
            nodes,
            networks: view.networks.len(),
            endpoint_count: view.endpoints.values().map(BTreeMap::len).sum(),
        })
    }

    /// Starts a watcher: a thread that sends every change as a [`ClusterEvent`], beginning with
    /// the whole current state (as additions) and a `Synced`.
    pub fn watch(&self) -> Result<Watcher, ClusterError> {
        let (events_tx, events) = crossbeam_channel::unbounded();
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name("cluster-watch".into())
            .spawn(move || watch_loop(&shared, &events_tx, &stopped))
            .map_err(|e| ClusterError::Etcd {
                op: "watch thread",
                message: e.to_string(),
            })?;
        Ok(Watcher {
            events,
            _stop: stop,
        })
    }

    fn stop_keepalive_thread(&self) {
        let stop = self
            .stop_keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(stop);
        let handle = self
            .keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Cluster {
    /// Leaves the cluster: stops the keep-alive and revokes the lease (best effort).
    fn drop(&mut self) {
        let halted = self
            .keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none();
        self.stop_keepalive_thread();
        if !halted {
            if let Err(e) = self.shared.etcd.lease_revoke(self.lease()) {
                tracing::warn!(node = %self.shared.config.node, error = %e, "cluster: lease not revoked");
            }
        }
    }
}

/// A running watch of the cluster: read [`Watcher::events`]; dropping it ends the thread (at the
/// next message from etcd or the watch's idle deadline, whichever comes first).
#[derive(Debug)]
pub struct Watcher {
    /// The events, in order.
    pub events: Receiver<ClusterEvent>,
    /// Dropped with the watcher, which wakes and ends the thread.
    _stop: Sender<()>,
}

/// A full re-read under the prefix.
fn snapshot(shared: &Shared) -> Result<ClusterView, ClusterError> {
    let read = shared.etcd.range_prefix(shared.keys.prefix())?;
    Ok(ClusterView::from_kvs(
        &shared.keys,
        read.revision,
        &read.kvs,
    ))
}

/// The keep-alive thread: renews the lease every third of the TTL, registers anew when etcd
/// forgot it, retries faster while etcd is unreachable; ends when `stop` is dropped.
fn keepalive(shared: &Shared, stop: &Receiver<()>) {
    let ttl = shared.config.ttl.max(Duration::from_secs(1));
    let mut pause = ttl / 3;
    loop {
        match stop.recv_timeout(pause) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let lease = shared.lease.load(Ordering::SeqCst);
        let renewed = shared.etcd.lease_keepalive(lease).and_then(|left| {
            if left > 0 {
                return Ok(());
            }
            tracing::warn!(node = %shared.config.node, lease, "cluster: lease lost, registering again");
            shared.register().map(|_| ())
        });
        pause = match renewed {
            Ok(()) => ttl / 3,
            Err(e) => {
                tracing::warn!(node = %shared.config.node, error = %e, "cluster: keep-alive failed");
                ttl / 10
            }
        };
    }
}

/// A full re-read of what a host follows ([`Keys::watched`]): no pools, no VNI claims.
fn watched_snapshot(shared: &Shared) -> Result<ClusterView, ClusterError> {
    let (start, end) = shared.keys.watched();
    let read = shared.etcd.range_between(&start, &end)?;
    Ok(ClusterView::from_kvs(
        &shared.keys,
        read.revision,
        &read.kvs,
    ))
}

/// The watcher thread: full read, then watch; on any loss of etcd, back off and start again.
fn watch_loop(shared: &Shared, events: &Sender<ClusterEvent>, stop: &Receiver<()>) {
    let mut view = ClusterView::default();
    let mut backoff = BACKOFF.0;
    let mut reported = false;
    loop {
        // Resync: all that is followed, the difference as events, then the watch from there.
        let fresh = match watched_snapshot(shared) {
            Ok(fresh) => fresh,
            Err(e) => {
                if !reported {
                    reported = true;
                    let reason = e.to_string();
                    if events.send(ClusterEvent::Unreachable { reason }).is_err() {
                        return;
                    }
                }
                if wait_or_stop(stop, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF.1);
                continue;
            }
        };
        for event in view.diff(&fresh) {
            if events.send(event).is_err() {
                return;
            }
        }
        view = fresh;
        if events
            .send(ClusterEvent::Synced {
                revision: view.revision,
            })
            .is_err()
        {
            return;
        }
        reported = false;
        backoff = BACKOFF.0;
        match follow(shared, &mut view, events, stop) {
            Follow::Stop => return,
            Follow::Resync { reason, lost } => {
                tracing::info!(error = %reason, "cluster: watch ended, resyncing");
                if lost && !reported {
                    reported = true;
                    if events.send(ClusterEvent::Unreachable { reason }).is_err() {
                        return;
                    }
                }
                if wait_or_stop(stop, backoff) {
                    return;
                }
            }
        }
    }
}

/// Why [`follow`] returned.
enum Follow {
    /// The watcher was dropped.
    Stop,
    /// The watch broke (`lost`: etcd may be gone) or was cancelled: re-read everything.
    Resync {
        /// What happened.
        reason: String,
        /// Whether etcd was lost (reported as [`ClusterEvent::Unreachable`]).
        lost: bool,
    },
}

/// Follows the watch from `view.revision + 1`, applying each change to `view`; reopens an idle
/// watch from the last revision seen.
fn follow(
    shared: &Shared,
    view: &mut ClusterView,
    events: &Sender<ClusterEvent>,
    stop: &Receiver<()>,
) -> Follow {
    loop {
        if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
            return Follow::Stop;
        }
        let (start, end) = shared.keys.watched();
        let mut stream = match shared.etcd.watch_range(&start, &end, view.revision + 1) {
            Ok(stream) => stream,
            Err(e) => {
                return Follow::Resync {
                    reason: e.to_string(),
                    lost: true,
                }
            }
        };
        loop {
            let batch = match stream.next_batch() {
                Ok(batch) => batch,
                Err(WatchEnd::Idle) => break,
                Err(WatchEnd::Lost(reason)) => return Follow::Resync { reason, lost: true },
            };
            if batch.canceled {
                return Follow::Resync {
                    reason: format!(
                        "watch cancelled (compacted at revision {})",
                        batch.compact_revision
                    ),
                    lost: false,
                };
            }
            for event in &batch.events {
                let changes = if event.deleted {
                    view.delete(&shared.keys, &event.kv.key)
                } else {
                    view.put(&shared.keys, &event.kv)
                };
                for change in changes {
                    if events.send(change).is_err() {
                        return Follow::Stop;
                    }
                }
                view.revision = view.revision.max(event.kv.mod_revision);
            }
            if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                return Follow::Stop;
            }
        }
    }
}

/// Waits `pause`; true when the watcher was dropped meanwhile.
fn wait_or_stop(stop: &Receiver<()>, pause: Duration) -> bool {
    !matches!(stop.recv_timeout(pause), Err(RecvTimeoutError::Timeout))
}

/// A short pause after a lost race, growing with the attempts and spread by the thread, so
/// concurrent allocators do not collide in lockstep.
fn backoff_pause(attempt: u32) {
    let spread = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::thread::current().id().hash(&mut h);
        SystemTime::now().hash(&mut h);
        h.finish()
    };
    let max_ms = u64::from(attempt.min(20)) + 1;
    std::thread::sleep(Duration::from_micros((spread % (max_ms * 1000)).max(100)));
}

/// The local IPAM pool of `spec` holding `allocated`, its cursor at `last`: the very rules of
/// the `ipam` crate (bounds, gateway, reserved, round-robin after the last address handed out).
fn pool_of(
    spec: &NetworkSpec,
    allocated: &BTreeMap<Ipv4Addr, String>,
    last: Option<Ipv4Addr>,
) -> Result<ipam::Pool, ClusterError> {
    let state = json!({
        "subnet": spec.subnet,
        "gateway": spec.gateway,
        "ip_range": spec.ip_range,
        "reserved": spec.reserved,
        "allocated": allocated,
        "last_allocated": last,
    });
    serde_json::from_value(state).map_err(|e| ClusterError::BadValue {
        key: format!("network {}", spec.name),
        reason: e.to_string(),
    })
}

/// Decodes a stored JSON value.
fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T, ClusterError> {
    serde_json::from_slice(&kv.value).map_err(|e| ClusterError::BadValue {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

/// A value as stored: compact JSON.
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail (string keys, no non-finite floats).
    serde_json::to_vec(value).unwrap_or_default()
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnet: &str) -> NetworkSpec {
        NetworkSpec {
            name: "n".into(),
            vni: None,
            subnet: subnet.parse().unwrap(),
            gateway: None,
            ip_range: None,
            reserved: vec![],
            options: BTreeMap::new(),
        }
    }

    #[test]
    fn the_pool_follows_the_cursor_and_skips_held_addresses() {
        let mut spec = spec("10.0.0.0/29");
        spec.gateway = Some("10.0.0.1".parse().unwrap());
        let held: BTreeMap<Ipv4Addr, String> = [("10.0.0.5".parse().unwrap(), "x".to_string())]
            .into_iter()
            .collect();
        let mut pool = pool_of(&spec, &held, Some("10.0.0.4".parse().unwrap())).unwrap();
        // After .4 comes .5 (held), so .6; then wrap to .2.
        assert_eq!(pool.allocate("a", None).unwrap().to_string(), "10.0.0.6");
        assert_eq!(pool.allocate("b", None).unwrap().to_string(), "10.0.0.2");
        // A bad stored state (an allocation on the gateway) is refused, not trusted.
        let bad: BTreeMap<Ipv4Addr, String> = [("10.0.0.1".parse().unwrap(), "x".to_string())]
            .into_iter()
            .collect();
        assert!(pool_of(&spec, &bad, None).is_err());
    }
}
