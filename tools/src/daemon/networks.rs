//! The `network` API group: create (validate → reserve the pool → open the driver → make the
//! bridge → the driver's port → commit, each step undone on failure), remove (commit, then the
//! system, going on past a failure and reporting every problem), list, inspect, and the
//! overlay's peers.

use super::commit::Order;
use super::drivers::{parse_peer, Driver};
use super::endpoints::NetworkIpam;
use super::store::Table;
use super::undo::Undo;
use super::{random_id, ApiError, Daemon, NetworkLive, NetworkRecord, DEFAULT_NETWORKS};
use crate::api::{check_mtu, check_name, NetworkRow, NetworkSpec};
use ipam::{Cidr, IpamDriver, PoolRequest};
use serde_json::json;
use std::net::Ipv4Addr;

impl Daemon {
    /// Creates a network: validate → reserve the pool → open what the driver needs → make the
    /// bridge → attach the driver's port → commit; a failed step undoes those before it.
    pub(super) fn create_network(
        &mut self,
        spec: NetworkSpec,
    ) -> Result<serde_json::Value, ApiError> {
        let driver = self.validate_network(&spec)?;
        self.transaction(|d, undo| {
            let ipam = d.reserve_pool(driver, &spec, undo)?;
            driver.ops().open(d)?;
            let net = d.add_network(driver, spec, ipam, undo)?;
            let port = driver.ops().own_port(&net);
            if let Some(port) = port.clone() {
                d.attach_owned(port, undo)?;
            }
            d.commit(Order::SystemFirst, |tx| {
                tx.put(Table::Networks, &net.name, &net)?;
                match &port {
                    Some(p) => tx.put(Table::Ports, &p.name, p),
                    None => Ok(()),
                }
            })?;
            Ok(json!({ "id": net.id, "name": net.name }))
        })
    }

    /// Checks everything `network create` asks for before anything changes; returns the driver.
    fn validate_network(&self, spec: &NetworkSpec) -> Result<Driver, ApiError> {
        let name = &spec.name;
        check_name("network", name).map_err(ApiError::invalid)?;
        if self.networks.contains_key(name) {
            return Err(ApiError::conflict(format!("network {name} already exists")));
        }
        let driver = match spec.driver.as_deref() {
            Some(name) => name.parse()?,
            None => Driver::Bridge,
        };
        if let Some(mtu) = spec.mtu {
            check_mtu(mtu.into()).map_err(ApiError::invalid)?;
        }
        let ops = driver.ops();
        let pool_options =
            spec.subnet.is_some() || spec.gateway.is_some() || spec.ip_range.is_some();
        if !ops.has_pool() && pool_options {
            return Err(ApiError::invalid(format!(
                "the {driver} driver takes no --subnet, --gateway or --ip-range"
            )));
        }
        if ops.only_one() && self.networks.values().any(|n| n.record.driver == driver) {
            return Err(ApiError::conflict(format!(
                "only one network of driver {driver} may exist"
            )));
        }
        ops.check_options(spec, self)?;
        Ok(driver)
    }

    /// Takes the network's address pool from IPAM, which checks the subnet, gateway and range
    /// and changes nothing when they are wrong.
    fn reserve_pool(
        &mut self,
        driver: Driver,
        spec: &NetworkSpec,
        undo: &mut Undo,
    ) -> Result<Option<NetworkIpam>, ApiError> {
        if !driver.ops().has_pool() {
            return Ok(None);
        }
        let req = pool_request(spec)?;
        let before = self.ipam.clone();
        let pool = self.ipam.request_pool(req).map_err(ApiError::from_ipam)?;
        undo.push(move |d| d.ipam = before);
        let p = self
            .ipam
            .pool(&pool)
            .ok_or_else(|| ApiError::internal(format!("pool {pool} vanished")))?;
        Ok(Some(NetworkIpam {
            subnet: p.subnet(),
            gateway: p.gateway(),
            pool,
        }))
    }

    /// Makes the network's bridge in the datapath and records the network.
    fn add_network(
        &mut self,
        driver: Driver,
        spec: NetworkSpec,
        ipam: Option<NetworkIpam>,
        undo: &mut Undo,
    ) -> Result<NetworkRecord, ApiError> {
        let id = self.new_bridge()?;
        let record = NetworkRecord {
            id: random_id(),
            name: spec.name.clone(),
            driver,
            spec,
            ipam,
        };
        let name = record.name.clone();
        self.networks.insert(
            name.clone(),
            NetworkLive {
                record: record.clone(),
                id,
            },
        );
        undo.push(move |d| {
            d.networks.remove(&name);
            let _ = d.call(move |ctl| ctl.dp.remove_network(id));
        });
        Ok(record)
    }

    /// Removes a network nobody uses: the store forgets it, its own ports and its pool in one
    /// commit (nothing changes when that fails); then its ports and its bridge go, going on
    /// past a failure and reporting every problem.
    pub(super) fn network_rm(&mut self, name: &str) -> Result<serde_json::Value, ApiError> {
        self.check_unused(name)?;
        let record = self.network(name)?.record.clone();
        let mut problems = Vec::new();
        let own: Vec<String> = self
            .ports
            .values()
            .filter(|p| p.record.network == name)
            .map(|p| p.record.name.clone())
            .collect();
        let pool_removed: Vec<ipam::IpamChange> = record
            .ipam
            .iter()
            .filter(|i| self.ipam.pool(&i.pool).is_some())
            .map(|i| ipam::IpamChange::PoolRemoved { id: i.pool.clone() })
            .collect();
        self.commit(Order::StoreFirst, |tx| {
            tx.delete(Table::Networks, name)?;
            for port in &own {
                tx.delete(Table::Ports, port)?;
            }
            tx.apply_ipam(&pool_removed)
        })?;
        // Committed: now memory, then the system.
        if let Some(ipam) = &record.ipam {
            if let Err(e) = self.ipam.release_pool(&ipam.pool) {
                problems.push(format!("releasing the pool {}: {e}", ipam.subnet));
            }
            let _ = self.ipam.take_changes();
        }
        for port in own {
            if let Err(e) = self.detach(&port) {
                problems.push(format!("detaching {port}: {e}"));
            }
        }
        let Some(live) = self.networks.remove(name) else {
            return Err(ApiError::not_found(format!("no such network: {name}")));
        };
        let id = live.id;
        match self.call(move |ctl| ctl.dp.remove_network(id)) {
            Ok(true) => {}
            Ok(false) => problems.push(format!("network {name} still has ports in the datapath")),
            Err(e) => problems.push(format!("removing the bridge: {e}")),
        }
        let what = format!("network {name} removed");
        ApiError::unless_problems(&problems, &what, json!({ "removed": name }))
    }

    /// Refuses to remove a default network, or one with endpoints or ports of users.
    fn check_unused(&self, name: &str) -> Result<(), ApiError> {
        self.network(name)?;
        if DEFAULT_NETWORKS.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::conflict(format!(
                "network {name} is a default network and cannot be removed"
            )));
        }
        let eps: Vec<&str> = self
            .endpoints
            .of_network(name)
            .map(|e| e.sandbox.as_str())
            .collect();
        if !eps.is_empty() {
            return Err(ApiError::conflict(format!(
                "network {name} has active endpoints ({}): disconnect them first",
                eps.join(", ")
            )));
        }
        let users: Vec<&str> = self
            .ports
            .values()
            .filter(|p| p.record.network == name && p.record.owner.is_none())
            .map(|p| p.record.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "network {name} still has ports: {} (remove them first)",
                users.join(", ")
            )));
        }
        Ok(())
    }

    pub(super) fn network_ls(&self) -> Result<serde_json::Value, ApiError> {
        let rows: Vec<NetworkRow> = self
            .networks
            .values()
            .map(|n| NetworkRow {
                id: n.record.short_id().to_string(),
                name: n.record.name.clone(),
                driver: n.record.driver.name().into(),
                scope: n.record.driver.ops().scope().into(),
                ports: self
                    .ports
                    .values()
                    .filter(|p| p.record.network == n.record.name)
                    .count(),
            })
            .collect();
        super::rows(rows)
    }

    pub(super) fn network_inspect(&self, name: &str) -> Result<serde_json::Value, ApiError> {
        let n = self.network(name)?;
        let s = &n.record.spec;
        let mut config = serde_json::Map::new();
        if let Some(ip) = &n.record.ipam {
            config.insert("Subnet".into(), json!(ip.subnet.to_string()));
            if let Some(gw) = ip.gateway {
                config.insert("Gateway".into(), json!(gw.to_string()));
            }
        }
        if let Some(v) = &s.ip_range {
            config.insert("IPRange".into(), json!(v));
        }
        let mut options = serde_json::Map::new();
        if let Some(mtu) = s.mtu {
            options.insert(
                "com.docker.network.driver.mtu".into(),
                json!(mtu.to_string()),
            );
        }
        if let Some(vni) = s.vni {
            options.insert("vxlan.vni".into(), json!(vni.to_string()));
        }
        if let Some(p) = &s.parent {
            options.insert("parent".into(), json!(p));
        }
        let mut containers = serde_json::Map::new();
        for e in self.endpoints.of_network(name) {
            containers.insert(
                e.id.clone(),
                json!({
                    "Name": e.sandbox,
                    "EndpointID": e.id,
                    "MacAddress": e.mac.clone().unwrap_or_default(),
                    "IPv4Address": e.ipv4().unwrap_or_default(),
                    "IPv6Address": "",
                }),
            );
        }
        let ports: Vec<&str> = self
            .ports
            .values()
            .filter(|p| p.record.network == name)
            .map(|p| p.record.name.as_str())
            .collect();
        Ok(json!([{
            "Name": n.record.name,
            "Id": n.record.id,
            "Driver": n.record.driver,
            "Scope": n.record.driver.ops().scope(),
            "Internal": s.internal,
            "IPAM": {
                "Driver": "default",
                "Config": if config.is_empty() { vec![] } else { vec![config] },
            },
            "Containers": containers,
            "Options": options,
            "Peers": s.peers,
            "Ports": ports,
        }]))
    }

    /// `network peer add|rm`: a remote VTEP joins or leaves an overlay network's flood list.
    pub(super) fn network_peer(
        &mut self,
        network: &str,
        ip: &str,
        add: bool,
    ) -> Result<serde_json::Value, ApiError> {
        let net = self.network(network)?;
        if net.record.driver != Driver::Overlay {
            return Err(ApiError::invalid(format!(
                "network {network} is not an overlay network"
            )));
        }
        let addr = parse_peer(ip)?;
        let ip = addr.to_string();
        let present = net.record.spec.peers.contains(&ip);
        if add && present {
            return Err(ApiError::conflict(format!(
                "{ip} is already a peer of {network}"
            )));
        }
        if !add && !present {
            return Err(ApiError::not_found(format!(
                "{ip} is not a peer of {network}"
            )));
        }
        let vni = net
            .record
            .spec
            .vni
            .ok_or_else(|| ApiError::internal(format!("network {network} has no VNI")))?;
        let out = |d: &Daemon| json!({ "network": network, "peers": d.networks[network].record.spec.peers });
        if add {
            // The system first: the peer joins the flood list, then the record is committed.
            self.transaction(|d, undo| {
                d.set_peer(vni, addr, true, undo)?;
                d.record_peer(network, &ip, true, undo);
                let rec = d.networks[network].record.clone();
                d.commit(Order::SystemFirst, |tx| {
                    tx.put(Table::Networks, network, &rec)
                })
            })?;
            return Ok(out(self));
        }
        // The store first: once the record is committed, the peer leaves the flood list.
        self.transaction(|d, undo| {
            d.record_peer(network, &ip, false, undo);
            let rec = d.networks[network].record.clone();
            d.commit(Order::StoreFirst, |tx| {
                tx.put(Table::Networks, network, &rec)
            })
        })?;
        let mut problems = Vec::new();
        if let Err(e) = self.set_peer(vni, addr, false, &mut Undo::default()) {
            problems.push(e.message);
        }
        if let Err(e) = self.forget_behind_vxlan_port(network) {
            problems.push(e.message);
        }
        let what = format!("peer {ip} removed from {network}");
        ApiError::unless_problems(&problems, &what, out(self))
    }

    /// Adds or removes a peer on the VXLAN endpoint.
    fn set_peer(
        &mut self,
        vni: u32,
        addr: std::net::IpAddr,
        add: bool,
        undo: &mut Undo,
    ) -> Result<(), ApiError> {
        let Some(o) = &self.overlay else {
            return Ok(());
        };
        let done = if add {
            o.add_peer(vni, addr)
        } else {
            o.remove_peer(vni, addr)
        };
        done.map_err(|e| ApiError::internal(format!("peer {addr}: {e}")))?;
        undo.push(move |d| {
            if let Some(o) = &d.overlay {
                let _ = if add {
                    o.remove_peer(vni, addr)
                } else {
                    o.add_peer(vni, addr)
                };
            }
        });
        Ok(())
    }

    /// Stations behind a vanished peer must not stay on the bridge's VXLAN port.
    fn forget_behind_vxlan_port(&self, network: &str) -> Result<(), ApiError> {
        let Some(p) = self.vxlan_port(network) else {
            return Ok(());
        };
        let handle = p.handle;
        self.call(move |ctl| {
            if let Some((net, local)) = ctl.dp.port_location(handle) {
                if let Some(b) = ctl.dp.bridge_mut(net) {
                    b.fdb_mut().flush_port(local);
                }
            }
        })
    }

    /// Adds or removes the peer in the network's record.
    fn record_peer(&mut self, network: &str, ip: &str, add: bool, undo: &mut Undo) {
        let (network, ip) = (network.to_string(), ip.to_string());
        let edit = move |d: &mut Daemon, add: bool| {
            if let Some(live) = d.networks.get_mut(&network) {
                if add {
                    live.record.spec.peers.push(ip.clone());
                } else {
                    live.record.spec.peers.retain(|p| *p != ip);
                }
            }
        };
        edit(self, add);
        undo.push(move |d| edit(d, !add));
    }
}

/// The pool `network create` asks IPAM for.
fn pool_request(spec: &NetworkSpec) -> Result<PoolRequest, ApiError> {
    let cidr = |what: &str, v: &Option<String>| -> Result<Option<Cidr>, ApiError> {
        v.as_deref()
            .map(|t| {
                t.parse()
                    .map_err(|e| ApiError::invalid(format!("invalid {what}: {e}")))
            })
            .transpose()
    };
    let gateway = spec
        .gateway
        .as_deref()
        .map(|g| {
            g.parse::<Ipv4Addr>()
                .map_err(|_| ApiError::invalid(format!("invalid gateway {g:?}")))
        })
        .transpose()?;
    Ok(PoolRequest {
        subnet: cidr("subnet", &spec.subnet)?,
        ip_range: cidr("ip range", &spec.ip_range)?,
        gateway,
        reserved: vec![],
        host_routes: host_routes(),
    })
}

/// The daemon namespace's IPv4 routes (a default pool must overlap none).
fn host_routes() -> Vec<Cidr> {
    let Ok(mut nl) = crate::netlink::Netlink::new() else {
        return vec![];
    };
    nl.list_routes_v4()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(ip, len)| Cidr::containing(ip, len).ok())
        .filter(|c| c.prefix_len() > 0)
        .collect()
}
