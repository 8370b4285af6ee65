//! What the cluster holds, as one host sees it: the stored objects, the events that tell a
//! change, and how a watch's key changes and a full re-read turn into those events.
//!
//! The view is rebuilt from keys only (see [`super::keys`]); a key outside the layout or with a
//! value that does not decode is skipped and counted, never fatal: another version of vswitch
//! may share the prefix.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use ipam::Cidr;
use serde::{Deserialize, Serialize};
use switch::MacAddr;

use super::etcd::KeyValue;
use super::keys::{Key, Keys};

/// A cluster-wide (swarm-scope) network as stored at `networks/NET`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// The network's name, unique in the cluster.
    pub name: String,
    /// The VXLAN network identifier (RFC 7348 § 5, 24 bits); `None` asks for one to be chosen.
    #[serde(default)]
    pub vni: Option<u32>,
    /// The subnet addresses are drawn from.
    pub subnet: Cidr,
    /// The gateway address, never handed out (default: the subnet's first usable address).
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The part of the subnet automatic allocation draws from.
    #[serde(default)]
    pub ip_range: Option<Cidr>,
    /// Addresses never handed out.
    #[serde(default)]
    pub reserved: Vec<Ipv4Addr>,
    /// Driver options, carried as given.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// A node's registration, stored at `nodes/NODE` under the node's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's VTEP: where its VXLAN packets go.
    pub vtep: SocketAddr,
    /// When the node registered, in seconds since the Unix epoch.
    pub started: u64,
}

/// A node as seen in the view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// The node's VTEP.
    pub vtep: SocketAddr,
    /// When it registered (Unix seconds).
    pub started: u64,
    /// The lease its keys hang on.
    pub lease: i64,
}

/// An endpoint, stored at `endpoints/NET/ID` under its node's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// The endpoint's MAC address.
    pub mac: MacAddr,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// The node it lives on.
    pub node: String,
}

/// A change of the cluster, as the overlay consumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ClusterEvent {
    /// A network appeared (or, after a resync, was found).
    NetworkAdded(NetworkSpec),
    /// A network was removed.
    NetworkRemoved {
        /// Its name.
        name: String,
        /// The VNI it had.
        vni: Option<u32>,
    },
    /// A node registered (or changed its VTEP).
    NodeUp {
        /// The node.
        name: String,
        /// Its VTEP.
        vtep: SocketAddr,
    },
    /// A node's registration went away: it left, or its lease expired.
    NodeDown {
        /// The node.
        name: String,
        /// The VTEP it had.
        vtep: SocketAddr,
    },
    /// An endpoint was published.
    EndpointAdded {
        /// The network.
        network: String,
        /// The endpoint id.
        id: String,
        /// Its MAC address.
        mac: MacAddr,
        /// Its IPv4 address.
        ip: Ipv4Addr,
        /// The node it lives on.
        node: String,
    },
    /// An endpoint was withdrawn, or vanished with its node's lease.
    EndpointRemoved {
        /// The network.
        network: String,
        /// The endpoint id.
        id: String,
        /// Its MAC address.
        mac: MacAddr,
        /// Its IPv4 address.
        ip: Ipv4Addr,
        /// The node it lived on.
        node: String,
    },
    /// The view is complete up to this store revision (sent after each full re-read).
    Synced {
        /// The revision.
        revision: i64,
    },
    /// etcd could not be reached; the last known state stays in force until the next `Synced`.
    Unreachable {
        /// Why.
        reason: String,
    },
}

/// What is under the prefix, decoded: everything after a full re-read ([`super::Cluster::snapshot`]);
/// a watcher's view holds only the watched range (no addresses, no VNI claims).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// The store revision the view is complete up to.
    pub revision: i64,
    /// Registered nodes by name.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Networks by name.
    pub networks: BTreeMap<String, NetworkSpec>,
    /// VNI claims: VNI to network name.
    pub vnis: BTreeMap<u32, String>,
    /// Allocated addresses per network: address to owner.
    pub addresses: BTreeMap<String, BTreeMap<Ipv4Addr, String>>,
    /// Endpoints per network, by id.
    pub endpoints: BTreeMap<String, BTreeMap<String, EndpointRecord>>,
    /// Keys under the prefix that did not decode (skipped).
    pub skipped: u64,
}

impl ClusterView {
    /// The view made of `kvs` read at `revision`.
    pub fn from_kvs(keys: &Keys, revision: i64, kvs: &[KeyValue]) -> ClusterView {
        let mut view = ClusterView {
            revision,
            ..ClusterView::default()
        };
        for kv in kvs {
            view.put(keys, kv);
        }
        view
    }

    /// Applies an event as a consumer sees it (the overlay keeps its own view this way, for
    /// [`ClusterView::flood_list`]). Events carry no lease, start time, VNI claim or address,
    /// so those parts stay as they were (a node added here has lease and start 0).
    pub fn apply(&mut self, event: &ClusterEvent) {
        match event {
            ClusterEvent::NetworkAdded(spec) => {
                self.networks.insert(spec.name.clone(), spec.clone());
            }
            ClusterEvent::NetworkRemoved { name, .. } => {
                self.networks.remove(name);
            }
            ClusterEvent::NodeUp { name, vtep } => {
                let node = self.nodes.entry(name.clone()).or_insert(NodeInfo {
                    vtep: *vtep,
                    started: 0,
                    lease: 0,
                });
                node.vtep = *vtep;
            }
            ClusterEvent::NodeDown { name, .. } => {
                self.nodes.remove(name);
            }
            ClusterEvent::EndpointAdded {
                network,
                id,
                mac,
                ip,
                node,
            } => {
                let record = EndpointRecord {
                    mac: *mac,
                    ip: *ip,
                    node: node.clone(),
                };
                self.endpoints
                    .entry(network.clone())
                    .or_default()
                    .insert(id.clone(), record);
            }
            ClusterEvent::EndpointRemoved { network, id, .. } => {
                if let Some(map) = self.endpoints.get_mut(network) {
                    map.remove(id);
                    if map.is_empty() {
                        self.endpoints.remove(network);
                    }
                }
            }
            ClusterEvent::Synced { revision } => self.revision = *revision,
            ClusterEvent::Unreachable { .. } => {}
        }
    }

    /// The VTEPs the broadcast and unknown traffic of `network` goes to: every node other than
    /// `except` with at least one endpoint on it, and registered (a node without a lease is gone).
    pub fn flood_list(&self, network: &str, except: &str) -> Vec<SocketAddr> {
        let mut nodes: Vec<&str> = self
            .endpoints
            .get(network)
            .into_iter()
            .flat_map(|eps| eps.values())
            .map(|ep| ep.node.as_str())
            .filter(|node| *node != except)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
            .into_iter()
            .filter_map(|node| self.nodes.get(node).map(|n| n.vtep))
            .collect()
    }

    /// Applies a written key; returns the events it means.
    pub fn put(&mut self, keys: &Keys, kv: &KeyValue) -> Vec<ClusterEvent> {
        let mut events = Vec::new();
        let Some(key) = keys.parse(&kv.key) else {
            self.skipped += 1;
            return events;
        };
        match key {
            Key::Node(name) => {
                let Ok(record) = serde_json::from_slice::<NodeRecord>(&kv.value) else {
                    self.skipped += 1;
                    return events;
                };
                let info = NodeInfo {
                    vtep: record.vtep,
                    started: record.started,
                    lease: kv.lease,
                };
                match self.nodes.insert(name.clone(), info) {
                    Some(old) if old.vtep == record.vtep => {}
                    Some(old) => {
                        events.push(ClusterEvent::NodeDown {
                            name: name.clone(),
                            vtep: old.vtep,
                        });
                        events.push(ClusterEvent::NodeUp {
                            name,
                            vtep: record.vtep,
                        });
                    }
                    None => events.push(ClusterEvent::NodeUp {
                        name,
                        vtep: record.vtep,
                    }),
                }
            }
            Key::Network(name) => {
                let Ok(spec) = serde_json::from_slice::<NetworkSpec>(&kv.value) else {
                    self.skipped += 1;
                    return events;
                };
                if spec.name != name {
                    self.skipped += 1;
                    return events;
                }
                match self.networks.insert(name.clone(), spec.clone()) {
                    Some(old) if old == spec => {}
                    Some(old) => {
                        events.push(ClusterEvent::NetworkRemoved { name, vni: old.vni });
                        events.push(ClusterEvent::NetworkAdded(spec));
                    }
                    None => events.push(ClusterEvent::NetworkAdded(spec)),
                }
            }
            Key::Vni(vni) => {
                self.vnis
                    .insert(vni, String::from_utf8_lossy(&kv.value).into_owned());
            }
            Key::Address { network, ip } => {
                self.addresses
                    .entry(network)
                    .or_default()
                    .insert(ip, String::from_utf8_lossy(&kv.value).into_owned());
            }
            Key::Cursor { .. } => {}
            Key::Endpoint { network, id } => {
                let Ok(record) = serde_json::from_slice::<EndpointRecord>(&kv.value) else {
                    self.skipped += 1;
                    return events;
                };
                let old = self
                    .endpoints
                    .entry(network.clone())
                    .or_default()
                    .insert(id.clone(), record.clone());
                if old.as_ref() == Some(&record) {
                    return events;
                }
                if let Some(old) = old {
                    events.push(endpoint_removed(&network, &id, old));
                }
                events.push(ClusterEvent::EndpointAdded {
                    network,
                    id,
                    mac: record.mac,
                    ip: record.ip,
                    node: record.node,
                });
            }
        }
        events
    }

    /// Applies a deleted key (a delete or a lease expiry); returns the events it means.
    pub fn delete(&mut self, keys: &Keys, key: &str) -> Vec<ClusterEvent> {
        let mut events = Vec::new();
        match keys.parse(key) {
            Some(Key::Node(name)) => {
                if let Some(old) = self.nodes.remove(&name) {
                    events.push(ClusterEvent::NodeDown {
                        name,
                        vtep: old.vtep,
                    });
                }
            }
            Some(Key::Network(name)) => {
                if let Some(old) = self.networks.remove(&name) {
                    events.push(ClusterEvent::NetworkRemoved { name, vni: old.vni });
                }
            }
            Some(Key::Vni(vni)) => {
                self.vnis.remove(&vni);
            }
            Some(Key::Address { network, ip }) => {
                if let Some(map) = self.addresses.get_mut(&network) {
                    map.remove(&ip);
                    if map.is_empty() {
                        self.addresses.remove(&network);
                    }
                }
            }
            Some(Key::Cursor { .. }) | None => {}
            Some(Key::Endpoint { network, id }) => {
                if let Some(map) = self.endpoints.get_mut(&network) {
                    if let Some(old) = map.remove(&id) {
                        events.push(endpoint_removed(&network, &id, old));
                    }
                    if map.is_empty() {
                        self.endpoints.remove(&network);
                    }
                }
            }
        }
        events
    }

    /// The events that turn `self` into `new` (after a resync): removals first, endpoints before
    /// nodes before networks, then additions in the opposite order, so a consumer never sees an
    /// endpoint on a network it does not know.
    pub fn diff(&self, new: &ClusterView) -> Vec<ClusterEvent> {
        let mut events = Vec::new();
        for (network, eps) in &self.endpoints {
            for (id, old) in eps {
                let kept = new.endpoints.get(network).and_then(|m| m.get(id));
                if kept != Some(old) {
                    events.push(endpoint_removed(network, id, old.clone()));
                }
            }
        }
        for (name, old) in &self.nodes {
            if new.nodes.get(name).map(|n| n.vtep) != Some(old.vtep) {
                events.push(ClusterEvent::NodeDown {
                    name: name.clone(),
                    vtep: old.vtep,
                });
            }
        }
        for (name, old) in &self.networks {
            if new.networks.get(name) != Some(old) {
                events.push(ClusterEvent::NetworkRemoved {
                    name: name.clone(),
                    vni: old.vni,
                });
            }
        }
        for (name, spec) in &new.networks {
            if self.networks.get(name) != Some(spec) {
                events.push(ClusterEvent::NetworkAdded(spec.clone()));
            }
        }
        for (name, info) in &new.nodes {
            if self.nodes.get(name).map(|n| n.vtep) != Some(info.vtep) {
                events.push(ClusterEvent::NodeUp {
                    name: name.clone(),
                    vtep: info.vtep,
                });
            }
        }
        for (network, eps) in &new.endpoints {
            for (id, ep) in eps {
                if self.endpoints.get(network).and_then(|m| m.get(id)) != Some(ep) {
                    events.push(ClusterEvent::EndpointAdded {
                        network: network.clone(),
                        id: id.clone(),
                        mac: ep.mac,
                        ip: ep.ip,
                        node: ep.node.clone(),
                    });
                }
            }
        }
        events
    }
}

/// The removal event of an endpoint.
fn endpoint_removed(network: &str, id: &str, old: EndpointRecord) -> ClusterEvent {
    ClusterEvent::EndpointRemoved {
        network: network.to_string(),
        id: id.to_string(),
        mac: old.mac,
        ip: old.ip,
        node: old.node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, lease: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            lease,
            ..KeyValue::default()
        }
    }

    fn keys() -> Keys {
        Keys::new("/v/")
    }

    fn sample() -> Vec<KeyValue> {
        vec![
            kv(
                "/v/networks/blue",
                r#"{"name":"blue","vni":4096,"subnet":"10.9.0.0/24","gateway":"10.9.0.1"}"#,
                0,
            ),
            kv("/v/vnis/4096", "blue", 0),
            kv("/v/nodes/a", r#"{"vtep":"192.0.2.1:4789","started":1}"#, 7),
            kv("/v/nodes/b", r#"{"vtep":"192.0.2.2:4789","started":1}"#, 8),
            kv("/v/pool/blue/10.9.0.2", "e1", 0),
            kv("/v/pool/blue/next", "10.9.0.2", 0),
            kv(
                "/v/endpoints/blue/e1",
                r#"{"mac":"02:00:00:00:00:01","ip":"10.9.0.2","node":"b"}"#,
                8,
            ),
            kv("/v/junk/x", "?", 0),
            kv("/v/nodes/broken", "{", 0),
        ]
    }

    #[test]
    fn decodes_a_full_read() {
        let view = ClusterView::from_kvs(&keys(), 12, &sample());
        assert_eq!(view.revision, 12);
        assert_eq!(view.networks["blue"].vni, Some(4096));
        assert_eq!(view.vnis[&4096], "blue");
        assert_eq!(view.nodes["b"].lease, 8);
        assert_eq!(
            view.addresses["blue"][&"10.9.0.2".parse::<Ipv4Addr>().unwrap()],
            "e1"
        );
        assert_eq!(view.endpoints["blue"]["e1"].node, "b");
        assert_eq!(view.skipped, 2);
        assert_eq!(
            view.flood_list("blue", "a"),
            vec!["192.0.2.2:4789".parse().unwrap()]
        );
        assert!(view.flood_list("blue", "b").is_empty());
        assert!(view.flood_list("red", "a").is_empty());
    }

    #[test]
    fn watch_changes_become_typed_events() {
        let keys = keys();
        let mut view = ClusterView::default();
        let mut events = Vec::new();
        for kv in sample() {
            events.extend(view.put(&keys, &kv));
        }
        assert_eq!(events.len(), 4, "{events:?}");
        assert!(matches!(&events[0], ClusterEvent::NetworkAdded(s) if s.name == "blue"));
        assert!(
            matches!(&events[3], ClusterEvent::EndpointAdded { id, node, .. }
            if id == "e1" && node == "b")
        );
        // The same value again changes nothing.
        assert!(view.put(&keys, &sample()[6]).is_empty());
        // A lease expiry deletes the node's keys: endpoint removed with what it was, node down.
        let gone = view.delete(&keys, "/v/endpoints/blue/e1");
        assert_eq!(
            gone,
            vec![ClusterEvent::EndpointRemoved {
                network: "blue".into(),
                id: "e1".into(),
                mac: "02:00:00:00:00:01".parse().unwrap(),
                ip: "10.9.0.2".parse().unwrap(),
                node: "b".into(),
            }]
        );
        assert_eq!(
            view.delete(&keys, "/v/nodes/b"),
            vec![ClusterEvent::NodeDown {
                name: "b".into(),
                vtep: "192.0.2.2:4789".parse().unwrap()
            }]
        );
        assert!(view.delete(&keys, "/v/nodes/b").is_empty());
        assert!(view.endpoints.is_empty());
    }

    #[test]
    fn a_moved_vtep_is_down_then_up() {
        let keys = keys();
        let mut view = ClusterView::from_kvs(&keys, 1, &sample());
        let moved = kv("/v/nodes/a", r#"{"vtep":"192.0.2.9:4789","started":2}"#, 9);
        let events = view.put(&keys, &moved);
        assert!(matches!(events.as_slice(),
            [ClusterEvent::NodeDown { vtep: old, .. }, ClusterEvent::NodeUp { vtep: new, .. }]
            if old.port() == 4789 && new.ip().to_string() == "192.0.2.9"));
    }

    #[test]
    fn a_resync_diff_orders_removals_before_additions() {
        let keys = keys();
        let old = ClusterView::from_kvs(&keys, 1, &sample());
        let mut kvs = sample();
        kvs.retain(|kv| !kv.key.contains("blue") && kv.key != "/v/nodes/b");
        kvs.push(kv(
            "/v/networks/red",
            r#"{"name":"red","vni":5000,"subnet":"10.8.0.0/24"}"#,
            0,
        ));
        kvs.push(kv(
            "/v/endpoints/red/e2",
            r#"{"mac":"02:00:00:00:00:02","ip":"10.8.0.2","node":"a"}"#,
            7,
        ));
        let new = ClusterView::from_kvs(&keys, 2, &kvs);
        let events = old.diff(&new);
        let names: Vec<&str> = events
            .iter()
            .map(|e| match e {
                ClusterEvent::EndpointRemoved { .. } => "ep-",
                ClusterEvent::NodeDown { .. } => "node-",
                ClusterEvent::NetworkRemoved { .. } => "net-",
                ClusterEvent::NetworkAdded(_) => "net+",
                ClusterEvent::NodeUp { .. } => "node+",
                ClusterEvent::EndpointAdded { .. } => "ep+",
                _ => "?",
            })
            .collect();
        assert_eq!(names, ["ep-", "node-", "net-", "net+", "ep+"]);
        assert!(new.diff(&new).is_empty());
    }

    #[test]
    fn a_consumer_rebuilds_the_view_from_events() {
        let keys = keys();
        let old = ClusterView::from_kvs(&keys, 1, &sample());
        let mut consumer = ClusterView::default();
        for event in ClusterView::default().diff(&old) {
            consumer.apply(&event);
        }
        assert_eq!(consumer.networks, old.networks);
        assert_eq!(consumer.endpoints, old.endpoints);
        assert_eq!(
            consumer.flood_list("blue", "a"),
            old.flood_list("blue", "a")
        );
        // Then a change: the endpoint's node dies.
        let mut now = old.clone();
        let mut events = now.delete(&keys, "/v/endpoints/blue/e1");
        events.extend(now.delete(&keys, "/v/nodes/b"));
        for event in &events {
            consumer.apply(event);
        }
        assert!(consumer.flood_list("blue", "a").is_empty());
        assert!(!consumer.nodes.contains_key("b"));
        assert!(consumer.endpoints.is_empty());
    }
}
