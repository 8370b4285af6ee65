//! Swarm-scope networks: the daemon's side of the cluster (`vswitchd --cluster`, issue 16).
//!
//! The [`cluster`](super::cluster) client only turns etcd into [`ClusterEvent`]s; this file is
//! the overlay that consumes them, and the few places where an API request needs the cluster:
//!
//! - `network create --scope swarm` writes the network to etcd (VNI chosen cluster-wide) and
//!   then makes it here; `network rm` removes it from etcd (refused while any host has an
//!   endpoint on it) and then here. Local records carry `scope: swarm`: cluster-owned.
//! - `network connect` on a swarm network takes its address from etcd (compare-and-swap, owner
//!   `NODE/ENDPOINT`) and publishes the endpoint under this node's lease; `disconnect`
//!   withdraws it first (refused, with nothing changed, while etcd is unreachable) and releases
//!   the address.
//! - One control-plane thread (`cluster-apply`) reads the watcher's events and applies them to
//!   the [`Daemon`] under its mutex, never on the datapath thread: networks made or removed
//!   here, and for every swarm network the flood list (the VTEPs of the other live nodes with
//!   endpoints on it), each remote station as a static entry in the VTEP and in the bridge's
//!   MAC table on the VXLAN port, and its address in the bridge's ARP suppression table. That
//!   programming is a difference between what the view wants and what was programmed, so a
//!   resync after an outage is the same code as a single event.
//! - When a node's lease expires, each host releases the addresses that node owned (a release
//!   of an address already gone is no error), so no allocation outlives its owner.
//!
//! While etcd is unreachable nothing is unprogrammed: forwarding goes on with the last known
//! state, and requests that need the cluster fail with an `internal` error saying so.

use super::cluster::{
    self, Cluster, ClusterConfig, ClusterError, ClusterEvent, ClusterView, MacAddr,
};
use super::commit::Order;
use super::docker::{AddressKind, IfAddr, NetworkSpec as DockerNetworkSpec, PoolInfo};
use super::endpoints::{EndpointRecord, NetworkIpam};
use super::store::Table;
use super::undo::Undo;
use super::{ApiError, Daemon, NetworkRecord};
use crate::api::NetworkSpec;
use ipam::{Cidr, IpamDriver};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use switch::Instant;

/// The scope of a cluster-wide network.
pub const SWARM: &str = "swarm";

/// The VLAN remote stations sit in on a swarm network's bridge (its ports are access VLAN 1).
const VLAN: u16 = 1;

/// The most events applied under one hold of the daemon's lock.
const BATCH: usize = 256;

/// The cluster connection and what this host programmed from it.
pub struct Swarm {
    cluster: Cluster,
    /// The cluster as the watcher told it.
    view: ClusterView,
    /// A full read has been applied since start-up.
    synced_once: bool,
    /// etcd answered the watcher last time.
    reachable: bool,
    /// This node's own registration vanished (its lease expired while cut off): the others
    /// may have released its addresses, to be claimed again when it is back.
    lost_lease: bool,
    /// Per swarm network: what is in the VTEP and the bridge.
    programmed: BTreeMap<String, Programmed>,
}

/// What was programmed for one swarm network.
#[derive(Debug, Default, Clone)]
struct Programmed {
    vni: u32,
    /// The flood list.
    peers: BTreeSet<IpAddr>,
    /// Remote stations: MAC → (the VTEP it sits behind, its address).
    stations: BTreeMap<MacAddr, (IpAddr, Ipv4Addr)>,
}

/// Joins the cluster: registers this node, reconciles this host's endpoints against etcd, and
/// starts the thread that applies the cluster's events to `daemon`. Returns what was repaired.
pub fn join(daemon: &Arc<Mutex<Daemon>>, config: ClusterConfig) -> Result<Vec<String>, String> {
    let endpoints = config.endpoints.join(",");
    let cluster = Cluster::connect_with(config)
        .map_err(|e| format!("joining the cluster at {endpoints}: {e}"))?;
    let watcher = cluster
        .watch()
        .map_err(|e| format!("watching the cluster: {e}"))?;
    let repairs = {
        let mut d = lock(daemon);
        let repairs = d.swarm_reconcile(&cluster);
        d.swarm = Some(Swarm {
            cluster,
            view: ClusterView::default(),
            synced_once: false,
            reachable: true,
            lost_lease: false,
            programmed: BTreeMap::new(),
        });
        repairs
    };
    let daemon = Arc::clone(daemon);
    std::thread::Builder::new()
        .name("cluster-apply".into())
        .spawn(move || {
            // The whole watcher moves here (not only its receiver): dropping it stops the watch.
            let watcher = watcher;
            while let Ok(first) = watcher.events.recv() {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match watcher.events.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                lock(&daemon).swarm_apply(batch);
            }
        })
        .map_err(|e| format!("starting the cluster thread: {e}"))?;
    Ok(repairs)
}

fn lock(daemon: &Mutex<Daemon>) -> std::sync::MutexGuard<'_, Daemon> {
    daemon.lock().unwrap_or_else(|p| p.into_inner())
}

/// True for a `network create` asking for a cluster-wide network.
pub(super) fn is_swarm(spec: &NetworkSpec) -> bool {
    spec.scope.as_deref() == Some(SWARM)
}

/// The owner recorded with a swarm endpoint's address: `NODE/ENDPOINT`.
fn owner(node: &str, endpoint: &str) -> String {
    format!("{node}/{endpoint}")
}

/// A cluster refusal as the API reports it.
fn api_error(e: ClusterError) -> ApiError {
    use ClusterError as C;
    let text = format!("cluster: {e}");
    match e {
        C::NetworkExists { .. }
        | C::VniInUse { .. }
        | C::NetworkInUse { .. }
        | C::NodeNameTaken { .. }
        | C::VnisExhausted { .. }
        | C::Ipam { .. } => ApiError::conflict(text),
        C::NoSuchNetwork { .. } | C::NotAllocated { .. } => ApiError::not_found(text),
        C::BadVni { .. } | C::BadName { .. } | C::BadValue { .. } => ApiError::invalid(text),
        C::Unreachable { .. } => ApiError::internal(format!(
            "{text}: this change needs the cluster (unavailable); forwarding goes on with the \
             last known state, retry once etcd is back"
        )),
        _ => ApiError::internal(text),
    }
}

impl Daemon {
    /// Leaves the cluster (on shutdown): the lease is revoked, so this node and its endpoints
    /// disappear from the others at once.
    pub fn leave_cluster(&mut self) {
        self.swarm = None;
    }

    fn cluster(&self) -> Result<&Cluster, ApiError> {
        self.swarm.as_ref().map(|s| &s.cluster).ok_or_else(|| {
            ApiError::invalid(
                "swarm-scope networks need the cluster: start vswitchd with --cluster \
                 etcd://HOST:PORT --vtep ADDR",
            )
        })
    }

    /// True when the local network `name` is cluster-owned.
    pub(super) fn is_swarm_network(&self, name: &str) -> bool {
        self.networks
            .get(name)
            .is_some_and(|n| is_swarm(&n.record.spec))
    }

    /// `network create --scope swarm`: checked, written to etcd (VNI chosen or checked
    /// cluster-wide), then made here; taken out of etcd again if it cannot be made here.
    pub(super) fn swarm_create(
        &mut self,
        spec: NetworkSpec,
    ) -> Result<serde_json::Value, ApiError> {
        self.swarm_create_as(spec, None)
    }

    /// [`Daemon::swarm_create`], labelled with Docker's id when `docker_id` is given; then a
    /// cluster network of that name already in etcd is joined (same subnet, same VNI if one
    /// was asked for) instead of refused: each host's `docker network create` meets there.
    fn swarm_create_as(
        &mut self,
        spec: NetworkSpec,
        docker_id: Option<String>,
    ) -> Result<serde_json::Value, ApiError> {
        let name = spec.name.clone();
        crate::api::check_name("network", &name).map_err(ApiError::invalid)?;
        self.cluster()?;
        if spec.driver.as_deref() != Some("overlay") {
            return Err(ApiError::invalid(
                "a swarm-scope network needs --driver overlay",
            ));
        }
        if !spec.peers.is_empty() {
            return Err(ApiError::invalid(
                "a swarm-scope network takes no --peer: its peers are the hosts with endpoints on it",
            ));
        }
        if self.networks.contains_key(&name) {
            return Err(ApiError::conflict(format!("network {name} already exists")));
        }
        let (subnet, ip_range, gateway) = super::networks::spec_addresses(&spec)?;
        let subnet = subnet.ok_or_else(|| {
            ApiError::invalid("a swarm-scope network needs --subnet (every host draws from it)")
        })?;
        let mut options = BTreeMap::new();
        if let Some(mtu) = spec.mtu {
            options.insert("mtu".to_string(), mtu.to_string());
        }
        if spec.internal {
            options.insert("internal".to_string(), "true".to_string());
        }
        let wanted = cluster::NetworkSpec {
            name: name.clone(),
            vni: spec.vni,
            subnet,
            gateway,
            ip_range,
            reserved: Vec::new(),
            options,
        };
        let asked_vni = wanted.vni;
        let (stored, created) = match self.cluster()?.create_network(wanted) {
            Ok(stored) => (stored, true),
            Err(ClusterError::NetworkExists { .. }) if docker_id.is_some() => {
                let stored = self
                    .cluster()?
                    .network(&name)
                    .map_err(api_error)?
                    .ok_or_else(|| {
                        ApiError::conflict(format!(
                            "cluster network {name} vanished while this host joined it; retry"
                        ))
                    })?;
                check_same_network(&stored, subnet, asked_vni)?;
                (stored, false)
            }
            Err(e) => return Err(api_error(e)),
        };
        match self.create_network_here_as(local_spec(&stored), docker_id) {
            Ok(mut v) => {
                v["vni"] = json!(stored.vni);
                v["scope"] = json!(SWARM);
                Ok(v)
            }
            Err(e) => {
                if !created {
                    return Err(e);
                }
                if let Err(undo) = self
                    .cluster()
                    .and_then(|c| c.remove_network(&name).map_err(api_error))
                {
                    tracing::warn!(network = %name, error = %undo.message, "cluster network left in etcd");
                }
                Err(e)
            }
        }
    }

    /// `network rm` of a swarm network: unused here, then out of etcd (refused while any host
    /// has endpoints on it); the caller then removes it here.
    pub(super) fn swarm_remove(&mut self, name: &str) -> Result<(), ApiError> {
        self.check_unused(name)?;
        match self.cluster()?.remove_network(name) {
            // Already gone from the cluster: only the local copy is left to remove.
            Ok(()) | Err(ClusterError::NoSuchNetwork { .. }) => {}
            Err(e) => return Err(api_error(e)),
        }
        if let Some(sw) = self.swarm.as_mut() {
            sw.programmed.remove(name);
        }
        Ok(())
    }

    /// An endpoint's address: from etcd on a swarm network, else from the local pool. Undone
    /// on failure.
    pub(super) fn take_address(
        &mut self,
        net: &NetworkRecord,
        ipam: &NetworkIpam,
        sandbox: &str,
        endpoint: &str,
        requested: Option<Ipv4Addr>,
        undo: &mut Undo,
    ) -> Result<Ipv4Addr, ApiError> {
        if !is_swarm(&net.spec) {
            let addr = self
                .ipam
                .request_address(&ipam.pool, sandbox, requested)
                .map_err(ApiError::from_ipam)?;
            let pool = ipam.pool.clone();
            undo.push(move |d| {
                let _ = d.ipam.release_address(&pool, addr);
            });
            return Ok(addr);
        }
        let cluster = self.cluster()?;
        let addr = cluster
            .allocate_address(&net.name, &owner(cluster.node(), endpoint), requested)
            .map_err(api_error)?;
        let name = net.name.clone();
        undo.push(move |d| {
            if let Ok(c) = d.cluster() {
                let _ = c.release_address(&name, addr);
            }
        });
        Ok(addr)
    }

    /// Publishes a new endpoint of a swarm network under this node's lease (undone on failure).
    pub(super) fn swarm_publish(
        &mut self,
        ep: &EndpointRecord,
        undo: &mut Undo,
    ) -> Result<(), ApiError> {
        if !self.is_swarm_network(&ep.network) {
            return Ok(());
        }
        let (Some(ip), Some(mac)) = (ep.ip, ep.mac.as_deref()) else {
            return Ok(());
        };
        let mac = parse_mac(mac)?;
        self.cluster()?
            .publish_endpoint(&ep.network, &ep.id, mac, ip)
            .map_err(api_error)?;
        let (network, id) = (ep.network.clone(), ep.id.clone());
        undo.push(move |d| {
            if let Ok(c) = d.cluster() {
                let _ = c.withdraw_endpoint(&network, &id);
            }
        });
        Ok(())
    }

    /// Before a swarm endpoint goes: withdraws it from etcd. Fails (nothing changed) while
    /// etcd is unreachable, so no endpoint key outlives its endpoint.
    pub(super) fn swarm_withdraw(&self, ep: &EndpointRecord) -> Result<(), ApiError> {
        if !self.is_swarm_network(&ep.network) {
            return Ok(());
        }
        self.cluster()?
            .withdraw_endpoint(&ep.network, &ep.id)
            .map_err(api_error)
    }

    /// Gives a swarm endpoint's address back to etcd (and withdraws the endpoint, in case it
    /// was not). False when the endpoint is not on a swarm network (the caller releases it
    /// locally).
    pub(super) fn swarm_release(&self, ep: &EndpointRecord) -> Result<bool, ApiError> {
        if !self.is_swarm_network(&ep.network) {
            return Ok(false);
        }
        let cluster = self.cluster()?;
        cluster
            .withdraw_endpoint(&ep.network, &ep.id)
            .map_err(api_error)?;
        if let Some(ip) = ep.ip {
            match cluster.release_address(&ep.network, ip) {
                Ok(()) | Err(ClusterError::NotAllocated { .. }) => {}
                Err(e) => return Err(api_error(e)),
            }
        }
        Ok(true)
    }

    /// `cluster status`: etcd, this node, every node with its VTEP and lease.
    pub(super) fn cluster_status(&self) -> Result<serde_json::Value, ApiError> {
        let sw = self.swarm.as_ref().ok_or_else(|| {
            ApiError::invalid("this vswitchd runs without --cluster: there is no cluster status")
        })?;
        let status = sw.cluster.status().map_err(api_error)?;
        let mut v = serde_json::to_value(&status)
            .map_err(|e| ApiError::internal(format!("encoding the answer: {e}")))?;
        v["synced"] = json!(sw.synced_once && sw.reachable);
        Ok(v)
    }

    /// What `network inspect` adds for a swarm network: the flood list, the remote stations,
    /// and the ARP requests the bridge answered.
    pub(super) fn swarm_inspect(&self, name: &str) -> Result<Option<serde_json::Value>, ApiError> {
        let Some(live) = self.networks.get(name).filter(|n| is_swarm(&n.record.spec)) else {
            return Ok(None);
        };
        let id = live.id;
        let (suppressed, table) = self.call(move |ctl| {
            ctl.dp.bridge(id).map_or((0, Vec::new()), |b| {
                let mut t: Vec<(Ipv4Addr, String)> =
                    b.arp_entries().map(|(ip, m)| (ip, m.to_string())).collect();
                t.sort();
                (b.arp_suppressed(), t)
            })
        })?;
        let programmed = self
            .swarm
            .as_ref()
            .and_then(|s| s.programmed.get(name))
            .cloned()
            .unwrap_or_default();
        Ok(Some(json!({
            "node": self.swarm.as_ref().map(|s| s.cluster.node().to_string()),
            "peers": programmed.peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "stations": programmed.stations.iter().map(|(mac, (peer, ip))| json!({
                "mac": mac.to_string(), "ip": ip.to_string(), "vtep": peer.to_string(),
            })).collect::<Vec<_>>(),
            "arp_table": table.iter().map(|(ip, mac)| json!({"ip": ip.to_string(), "mac": mac})).collect::<Vec<_>>(),
            "arp_suppressed": suppressed,
        })))
    }

    // ---- joining, and the events ----

    /// At start-up (after a restart, even after `kill -9`): this node's endpoints in etcd that
    /// no local endpoint backs are withdrawn and their addresses released; every local endpoint
    /// of a swarm network has its address claimed and is published again.
    fn swarm_reconcile(&mut self, cluster: &Cluster) -> Vec<String> {
        let mut repairs = Vec::new();
        let local: BTreeSet<(String, String)> = self
            .endpoints
            .iter()
            .filter(|e| self.is_swarm_network(&e.network))
            .map(|e| (e.network.clone(), e.id.clone()))
            .collect();
        let view = match cluster.snapshot() {
            Ok(v) => v,
            Err(e) => {
                repairs.push(format!("cluster: not reconciled ({e})"));
                return repairs;
            }
        };
        match cluster.reconcile_endpoints(|net, id| local.contains(&(net.into(), id.into()))) {
            Ok(gone) => {
                for (net, id) in gone {
                    let mine = owner(cluster.node(), &id);
                    let ips = view.addresses.get(&net).into_iter().flatten();
                    for (ip, _) in ips.filter(|(_, o)| **o == mine) {
                        let _ = cluster.release_address(&net, *ip);
                    }
                    repairs.push(format!(
                        "cluster: endpoint {net}/{id} no longer here; withdrawn"
                    ));
                }
            }
            Err(e) => repairs.push(format!("cluster: endpoints not reconciled ({e})")),
        }
        let eps: Vec<EndpointRecord> = self
            .endpoints
            .iter()
            .filter(|e| local.contains(&(e.network.clone(), e.id.clone())))
            .cloned()
            .collect();
        // Addresses Docker's RequestAddress took here that no endpoint here holds: Docker
        // asks again when it starts the container again.
        let docker = owner(cluster.node(), DOCKER_OWNER);
        for (net, addrs) in &view.addresses {
            for (ip, _) in addrs.iter().filter(|(_, o)| **o == docker) {
                if eps.iter().any(|e| e.network == *net && e.ip == Some(*ip)) {
                    continue;
                }
                if cluster.release_address(net, *ip).is_ok() {
                    repairs.push(format!(
                        "cluster: address {ip} on {net} taken for Docker, no endpoint here; released"
                    ));
                }
            }
        }
        let mut publish: BTreeMap<String, Vec<(String, MacAddr, Ipv4Addr)>> = BTreeMap::new();
        for ep in eps {
            let (Some(ip), Some(mac)) = (ep.ip, ep.mac.as_deref().and_then(|m| parse_mac(m).ok()))
            else {
                continue;
            };
            let mine = owner(cluster.node(), &ep.id);
            let holder = view.addresses.get(&ep.network).and_then(|a| a.get(&ip));
            match holder {
                // Held by this node: for this endpoint, or for Docker's RequestAddress.
                Some(h) if *h == mine || *h == owner(cluster.node(), DOCKER_OWNER) => {}
                Some(h) => repairs.push(format!(
                    "cluster: address {ip} of endpoint {}/{} is held by {h}",
                    ep.network, ep.sandbox
                )),
                None => {
                    if let Err(e) = cluster.allocate_address(&ep.network, &mine, Some(ip)) {
                        repairs.push(format!("cluster: address {ip} not claimed again: {e}"));
                    }
                }
            }
            publish
                .entry(ep.network.clone())
                .or_default()
                .push((ep.id.clone(), mac, ip));
        }
        // Per network, in a few transactions (one watch message each for the other hosts).
        for (net, eps) in publish {
            if let Err(e) = cluster.publish_endpoints(&net, &eps) {
                repairs.push(format!(
                    "cluster: {} endpoint(s) on {net} not published: {e}",
                    eps.len()
                ));
            }
        }
        repairs
    }

    /// Applies a batch of the watcher's events (under the daemon's lock).
    fn swarm_apply(&mut self, events: Vec<ClusterEvent>) {
        let Some(sw) = self.swarm.as_mut() else {
            return;
        };
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut down = Vec::new();
        let mut first_sync = false;
        let mut back = false;
        let me = sw.cluster.node().to_string();
        for ev in &events {
            sw.view.apply(ev);
            match ev {
                ClusterEvent::NetworkAdded(spec) => added.push(spec.clone()),
                ClusterEvent::NetworkRemoved { name, .. } => removed.push(name.clone()),
                ClusterEvent::NodeDown { name, vtep } => {
                    tracing::info!(node = %name, %vtep, "cluster: node down");
                    sw.lost_lease |= *name == me;
                    down.push(name.clone());
                }
                ClusterEvent::NodeUp { name, vtep } => {
                    tracing::info!(node = %name, %vtep, "cluster: node up");
                    if *name == me && sw.lost_lease {
                        sw.lost_lease = false;
                        back = true;
                    }
                }
                ClusterEvent::Synced { revision } => {
                    if !sw.reachable {
                        tracing::info!(revision, "cluster: etcd is back, resynced");
                    }
                    sw.reachable = true;
                    first_sync |= !sw.synced_once;
                    sw.synced_once = true;
                }
                ClusterEvent::Unreachable { reason } => {
                    if sw.reachable {
                        tracing::warn!(%reason, "cluster: etcd unreachable; forwarding goes on with the last known state");
                    }
                    sw.reachable = false;
                }
                ClusterEvent::EndpointAdded { .. } | ClusterEvent::EndpointRemoved { .. } => {}
            }
        }
        if first_sync {
            // Start-up: the swarm networks made or removed while this host was away.
            let view = &sw.view;
            let gone: Vec<String> = self
                .networks
                .values()
                .filter(|n| is_swarm(&n.record.spec) && !view.networks.contains_key(&n.record.name))
                .map(|n| n.record.name.clone())
                .collect();
            removed.extend(gone);
            added.extend(view.networks.values().cloned());
        }
        for name in removed {
            self.swarm_drop_network(&name);
        }
        for spec in added {
            self.swarm_make_network(&spec);
        }
        self.swarm_program();
        if !down.is_empty() {
            self.swarm_collect(&down);
        }
        if back {
            // Registered again after the lease expired: claim this node's addresses again.
            if let Some(sw) = self.swarm.take() {
                for r in self.swarm_reconcile(&sw.cluster) {
                    tracing::warn!("repaired: {r}");
                }
                self.swarm = Some(sw);
            }
        }
    }

    /// A cluster network appeared: make it here, unless it is.
    fn swarm_make_network(&mut self, spec: &cluster::NetworkSpec) {
        if let Some(n) = self.networks.get(&spec.name) {
            if !is_swarm(&n.record.spec) {
                tracing::warn!(network = %spec.name, "cluster network not made here: a local network has its name");
            }
            return;
        }
        match self.create_network_here(local_spec(spec)) {
            Ok(_) => {
                tracing::info!(network = %spec.name, vni = ?spec.vni, "cluster network made here")
            }
            Err(e) => {
                tracing::warn!(network = %spec.name, error = %e.message, "cluster network not made here")
            }
        }
    }

    /// A cluster network went: remove it here, unless local endpoints still use it.
    fn swarm_drop_network(&mut self, name: &str) {
        if !self.is_swarm_network(name) {
            return;
        }
        if let Some(sw) = self.swarm.as_mut() {
            sw.programmed.remove(name);
        }
        match self.network_rm_here(name) {
            Ok(_) => tracing::info!(network = %name, "cluster network removed here"),
            Err(e) => {
                tracing::warn!(network = %name, error = %e.message, "cluster network not removed here")
            }
        }
    }

    /// Brings the VTEP and the bridges of the swarm networks in line with the view: flood lists,
    /// static remote entries, MAC table entries on the VXLAN ports, ARP suppression tables.
    fn swarm_program(&mut self) {
        let Some(sw) = self.swarm.as_ref() else {
            return;
        };
        let me = sw.cluster.node().to_string();
        let mut wanted: BTreeMap<String, Programmed> = BTreeMap::new();
        for n in self.networks.values().filter(|n| is_swarm(&n.record.spec)) {
            let Some(vni) = n.record.spec.vni else {
                continue;
            };
            let mut p = Programmed {
                vni,
                ..Programmed::default()
            };
            for ep in sw
                .view
                .endpoints
                .get(&n.record.name)
                .into_iter()
                .flat_map(|m| m.values())
            {
                if ep.node == me {
                    continue;
                }
                let Some(node) = sw.view.nodes.get(&ep.node) else {
                    continue;
                };
                let peer = node.vtep.ip();
                p.peers.insert(peer);
                p.stations.insert(ep.mac, (peer, ep.ip));
            }
            wanted.insert(n.record.name.clone(), p);
        }
        let names: Vec<String> = wanted.keys().cloned().collect();
        for name in names {
            let want = wanted.remove(&name).unwrap_or_default();
            let had = self
                .swarm
                .as_ref()
                .and_then(|s| s.programmed.get(&name))
                .cloned()
                .unwrap_or_default();
            let done = self.program_network(&name, &had, &want);
            if let Some(sw) = self.swarm.as_mut() {
                sw.programmed.insert(name, done);
            }
        }
    }

    /// Programs one network from `had` to `want`; returns what is programmed now.
    fn program_network(&self, name: &str, had: &Programmed, want: &Programmed) -> Programmed {
        let (Some(overlay), Some(port)) = (self.overlay.as_ref(), self.vxlan_port(name)) else {
            return had.clone();
        };
        let vni = want.vni;
        let mut now_has = had.clone();
        if had.vni != vni {
            now_has = Programmed {
                vni,
                ..Programmed::default()
            };
        }
        let mut gone = Vec::new();
        for (mac, (peer, ip)) in &had.stations {
            if want.stations.get(mac) != Some(&(*peer, *ip)) {
                let _ = overlay.remove_static(vni, *mac);
                gone.push((*mac, *ip));
                now_has.stations.remove(mac);
            }
        }
        for peer in had.peers.difference(&want.peers) {
            if let Err(e) = overlay.remove_peer(vni, *peer) {
                tracing::warn!(network = name, %peer, error = %e, "cluster: peer not removed");
            }
            now_has.peers.remove(peer);
        }
        for peer in want.peers.difference(&now_has.peers.clone()) {
            match overlay.add_peer(vni, *peer) {
                Ok(_) => {
                    now_has.peers.insert(*peer);
                }
                Err(e) => {
                    tracing::warn!(network = name, %peer, error = %e, "cluster: peer not added")
                }
            }
        }
        let mut new = Vec::new();
        for (mac, (peer, ip)) in &want.stations {
            if now_has.stations.get(mac) == Some(&(*peer, *ip)) {
                continue;
            }
            match overlay.add_static(vni, *mac, *peer) {
                Ok(()) => {
                    now_has.stations.insert(*mac, (*peer, *ip));
                    new.push((*mac, *ip));
                }
                Err(e) => {
                    tracing::warn!(network = name, %mac, error = %e, "cluster: station not programmed")
                }
            }
        }
        if gone.is_empty() && new.is_empty() {
            return now_has;
        }
        let handle = port.handle;
        let programmed = self.call(move |ctl| {
            let Some((net, local)) = ctl.dp.port_location(handle) else {
                return;
            };
            let Some(b) = ctl.dp.bridge_mut(net) else {
                return;
            };
            let now = Instant::now();
            for (mac, ip) in gone {
                b.fdb_mut().remove(VLAN, mac);
                b.remove_arp_entry(ip);
            }
            for (mac, ip) in new {
                if b.fdb_mut().add_static(now, VLAN, mac, local).is_err() {
                    tracing::warn!(%mac, "cluster: MAC table full, station not fixed on the VXLAN port");
                }
                b.set_arp_entry(ip, mac);
            }
        });
        if let Err(e) = programmed {
            tracing::warn!(network = name, error = %e.message, "cluster: bridge not programmed");
        }
        now_has
    }

    /// Nodes whose lease expired: releases the addresses they held (every host tries; a
    /// release of an address already gone is no error).
    fn swarm_collect(&mut self, down: &[String]) {
        let Some(sw) = self.swarm.as_ref() else {
            return;
        };
        let me = sw.cluster.node();
        let dead: Vec<&String> = down
            .iter()
            .filter(|n| n.as_str() != me && !sw.view.nodes.contains_key(n.as_str()))
            .collect();
        if dead.is_empty() {
            return;
        }
        let view = match sw.cluster.snapshot() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: addresses of dead nodes not released");
                return;
            }
        };
        for (net, addrs) in &view.addresses {
            for (ip, holder) in addrs {
                let Some((node, _)) = holder.split_once('/') else {
                    continue;
                };
                if dead.iter().any(|d| d.as_str() == node) {
                    match sw.cluster.release_address(net, *ip) {
                        Ok(()) | Err(ClusterError::NotAllocated { .. }) => {
                            tracing::info!(network = %net, %ip, %node, "cluster: address of a dead node released")
                        }
                        Err(e) => {
                            tracing::warn!(network = %net, %ip, error = %e, "cluster: address not released")
                        }
                    }
                }
            }
        }
    }
}

// ---- Docker's swarm networks (`docker network create -o vswitch.scope=swarm`) ----
//
// Docker tells a network driver a network's id, never its name, and every host's dockerd makes
// up its own id; so the hosts meet on `-o vswitch.network=NAME`, the cluster network's name.
// Docker sees a local-scope network on each host (no Docker swarm), labelled on each host with
// that host's Docker id; addresses come from this plugin's IPAM driver, which hands out the
// cluster network's addresses (compare-and-swap in etcd) for the pool of its subnet.
// `docker network rm` on one host only takes this host's label off: the cluster network stays
// for the others and is removed with `vswitchctl network rm NAME`, refused while any host has
// endpoints on it.

/// The owner recorded for an address Docker's `RequestAddress` took (before Docker names the
/// endpoint): `NODE/docker`.
const DOCKER_OWNER: &str = "docker";

impl Daemon {
    /// `CreateNetwork` of a swarm-scope Docker network: joins the cluster network `d.name`
    /// (made in etcd when it is not there yet), labelled here with Docker's id.
    pub(super) fn docker_swarm_create(&mut self, d: &DockerNetworkSpec) -> Result<(), ApiError> {
        self.cluster()?;
        let subnet = d.subnet.ok_or_else(|| {
            ApiError::invalid("a swarm-scope network needs --subnet, the same on every host")
        })?;
        if self.networks.contains_key(&d.name) {
            return self.docker_swarm_adopt(d, subnet);
        }
        let spec = NetworkSpec {
            name: d.name.clone(),
            driver: Some("overlay".into()),
            subnet: Some(subnet.to_string()),
            gateway: d.gateway.map(|g| g.to_string()),
            vni: d.vni,
            mtu: d.mtu,
            internal: d.internal,
            scope: Some(SWARM.into()),
            ..NetworkSpec::default()
        };
        // The pool Docker requested on this subnet (RequestPool came first) gives way to the
        // network's own, which stays with the cluster network when Docker's network goes.
        let before = self.ipam.clone();
        let pool = ipam::PoolId::from_subnet(subnet);
        if self.ipam.pool(&pool).is_some() {
            self.ipam.release_pool(&pool).map_err(ApiError::from_ipam)?;
        }
        match self.swarm_create_as(spec, Some(d.docker_id.clone())) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.ipam = before;
                Err(e)
            }
        }
    }

    /// The cluster network is here already (made by the watcher, or by an earlier Docker
    /// network): checked, then labelled with Docker's id. The same id again changes nothing.
    fn docker_swarm_adopt(&mut self, d: &DockerNetworkSpec, subnet: Cidr) -> Result<(), ApiError> {
        let name = &d.name;
        let record = self.network(name)?.record.clone();
        if !is_swarm(&record.spec) {
            return Err(ApiError::conflict(format!(
                "network {name} exists on this host and is not a cluster network"
            )));
        }
        let have = record.ipam.as_ref().map(|i| i.subnet);
        if have != Some(subnet) {
            return Err(ApiError::conflict(format!(
                "cluster network {name} has subnet {}, not {subnet}",
                have.map_or_else(|| "none".to_string(), |s| s.to_string())
            )));
        }
        if d.vni.is_some() && d.vni != record.spec.vni {
            return Err(ApiError::conflict(format!(
                "cluster network {name} has VNI {}, not {}",
                record.spec.vni.unwrap_or_default(),
                d.vni.unwrap_or_default()
            )));
        }
        match record.docker_id.as_deref() {
            Some(id) if id == d.docker_id => return Ok(()),
            Some(id) => {
                return Err(ApiError::conflict(format!(
                    "cluster network {name} is Docker network {} on this host already",
                    id.get(..12).unwrap_or(id)
                )))
            }
            None => {}
        }
        self.label_docker_network(name, Some(d.docker_id.clone()))
    }

    /// `DeleteNetwork` of a swarm-scope Docker network: this host's Docker leaves it. The
    /// cluster network stays, here and everywhere, without Docker's label.
    pub(super) fn docker_swarm_leave(&mut self, name: &str) -> Result<(), ApiError> {
        self.check_unused(name)?;
        self.label_docker_network(name, None)?;
        tracing::info!(network = %name, "docker: left the cluster network (it stays for the other hosts; vswitchctl network rm removes it)");
        Ok(())
    }

    /// Sets or clears a network's Docker id, store first.
    fn label_docker_network(
        &mut self,
        name: &str,
        docker_id: Option<String>,
    ) -> Result<(), ApiError> {
        let mut record = self.network(name)?.record.clone();
        record.docker_id = docker_id;
        self.commit(Order::StoreFirst, |tx| {
            tx.put(Table::Networks, name, &record)
        })?;
        if let Some(live) = self.networks.get_mut(name) {
            live.record = record;
        }
        Ok(())
    }

    /// The swarm network whose local pool is `pool`, if any.
    pub(super) fn swarm_network_of_pool(&self, pool: &str) -> Option<String> {
        self.networks
            .values()
            .filter(|n| is_swarm(&n.record.spec))
            .find(|n| {
                n.record
                    .ipam
                    .as_ref()
                    .is_some_and(|i| i.pool.as_str() == pool)
            })
            .map(|n| n.record.name.clone())
    }

    /// `RequestPool` on the subnet of a swarm network here: that network's pool, as it is
    /// (its addresses are the cluster's).
    pub(super) fn swarm_pool_info(&self, subnet: Cidr) -> Option<PoolInfo> {
        let ipam = self
            .networks
            .values()
            .filter(|n| is_swarm(&n.record.spec))
            .find_map(|n| n.record.ipam.as_ref().filter(|i| i.subnet == subnet))?;
        Some(PoolInfo {
            id: ipam.pool.to_string(),
            subnet,
            gateway: ipam.gateway,
        })
    }

    /// `RequestAddress` on a swarm network's pool: the gateway is the network's; an endpoint
    /// address comes from the cluster (compare-and-swap), held by `NODE/docker`.
    pub(super) fn docker_swarm_address(
        &mut self,
        net: &str,
        address: Option<Ipv4Addr>,
        kind: AddressKind,
    ) -> Result<IfAddr, ApiError> {
        let ipam = self.network(net)?.record.ipam.clone().ok_or_else(|| {
            ApiError::internal(format!("cluster network {net} has no address pool here"))
        })?;
        let ip = match kind {
            AddressKind::Gateway => {
                let gw = ipam.gateway.ok_or_else(|| {
                    ApiError::invalid(format!("cluster network {net} has no gateway"))
                })?;
                if address.is_some_and(|a| a != gw) {
                    return Err(ApiError::conflict(format!(
                        "the gateway of cluster network {net} is {gw}: give --gateway {gw} or none"
                    )));
                }
                gw
            }
            AddressKind::Endpoint => {
                let cluster = self.cluster()?;
                cluster
                    .allocate_address(net, &owner(cluster.node(), DOCKER_OWNER), address)
                    .map_err(api_error)?
            }
        };
        Ok(IfAddr::on(ip, ipam.subnet))
    }

    /// `ReleaseAddress` on a swarm network's pool: back to the cluster (the gateway, and an
    /// address the endpoint's removal gave back already, are no error).
    pub(super) fn docker_swarm_release(
        &mut self,
        net: &str,
        address: Ipv4Addr,
    ) -> Result<(), ApiError> {
        let gateway = self
            .network(net)?
            .record
            .ipam
            .as_ref()
            .and_then(|i| i.gateway);
        if gateway == Some(address) {
            return Ok(());
        }
        match self.cluster()?.release_address(net, address) {
            Ok(()) | Err(ClusterError::NotAllocated { .. }) => Ok(()),
            Err(e) => Err(api_error(e)),
        }
    }

    /// A Docker endpoint's address on a swarm network: the one the plugin's `RequestAddress`
    /// took from the cluster, else a new one from the cluster. The endpoint owns it either
    /// way: its removal gives it back ([`Daemon::swarm_release`]).
    pub(super) fn docker_swarm_endpoint_address(
        &mut self,
        net: &NetworkRecord,
        ipam: &NetworkIpam,
        endpoint: &str,
        given: Option<Ipv4Addr>,
        undo: &mut Undo,
    ) -> Result<Ipv4Addr, ApiError> {
        match given {
            Some(ip) => Ok(ip),
            None => self.take_address(net, ipam, "", endpoint, None, undo),
        }
    }
}

/// The cluster network found when joining is the one asked for: same subnet, and the same VNI
/// when one was asked for.
fn check_same_network(
    stored: &cluster::NetworkSpec,
    subnet: Cidr,
    vni: Option<u32>,
) -> Result<(), ApiError> {
    if stored.subnet != subnet {
        return Err(ApiError::conflict(format!(
            "cluster network {} has subnet {}, not {subnet}",
            stored.name, stored.subnet
        )));
    }
    if vni.is_some() && vni != stored.vni {
        return Err(ApiError::conflict(format!(
            "cluster network {} has VNI {}, not {}",
            stored.name,
            stored.vni.unwrap_or_default(),
            vni.unwrap_or_default()
        )));
    }
    Ok(())
}

/// The local `network create` of a cluster network.
fn local_spec(spec: &cluster::NetworkSpec) -> NetworkSpec {
    NetworkSpec {
        name: spec.name.clone(),
        driver: Some("overlay".into()),
        subnet: Some(spec.subnet.to_string()),
        gateway: spec.gateway.map(|g| g.to_string()),
        ip_range: spec.ip_range.map(|r| r.to_string()),
        vni: spec.vni,
        peers: Vec::new(),
        parent: None,
        mtu: spec.options.get("mtu").and_then(|m| m.parse().ok()),
        internal: spec.options.get("internal").is_some_and(|v| v == "true"),
        scope: Some(SWARM.into()),
        ..NetworkSpec::default()
    }
}

fn parse_mac(text: &str) -> Result<MacAddr, ApiError> {
    text.parse()
        .map_err(|_| ApiError::internal(format!("invalid MAC {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_refusals_keep_their_kind() {
        use crate::api::ErrorKind;
        let e = api_error(ClusterError::NetworkInUse {
            name: "n".into(),
            count: 1,
            nodes: "b".into(),
        });
        assert_eq!(e.kind, ErrorKind::Conflict);
        let e = api_error(ClusterError::Unreachable {
            endpoints: "127.0.0.1:1".into(),
            reason: "refused".into(),
        });
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.contains("needs the cluster"), "{}", e.message);
        assert_eq!(owner("a", "e1"), "a/e1");
    }

    #[test]
    fn a_cluster_network_is_made_here_as_swarm_overlay() {
        let spec = cluster::NetworkSpec {
            name: "blue".into(),
            vni: Some(4096),
            subnet: "10.20.0.0/24".parse().unwrap(),
            gateway: Some("10.20.0.1".parse().unwrap()),
            ip_range: None,
            reserved: vec![],
            options: [("mtu".to_string(), "1400".to_string())].into(),
        };
        let local = local_spec(&spec);
        assert!(is_swarm(&local));
        assert_eq!(local.driver.as_deref(), Some("overlay"));
        assert_eq!(local.vni, Some(4096));
        assert_eq!(local.subnet.as_deref(), Some("10.20.0.0/24"));
        assert_eq!(local.mtu, Some(1400));
        assert!(!local.internal);
    }
}
