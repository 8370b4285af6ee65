//! The daemon's hooks into the L3 edge ([`super::firewall`]) and the ICC rule of the bridge.
//!
//! The firewall's [`Model`] is never edited in place: [`Daemon::edge_model`] derives it from the
//! stored state (bridge networks with their gateway TAP, and the published ports kept on the
//! endpoint records), and [`Daemon::sync_edge`] hands the whole of it to
//! [`Firewall::apply`](super::firewall::Firewall::apply), which rewrites `table inet vswitch` in
//! one transaction. So a change, the rebuild after `kill -9` and a repeated apply are one
//! operation, and what is programmed always equals what is stored.
//!
//! ICC off (`com.docker.network.bridge.enable_icc=false`) is an L2 rule: the endpoint ports of
//! such a network are marked isolated on its bridge ([`switch::Bridge::set_port_isolated`]), the
//! gateway port is not.

use super::drivers::Driver;
use super::firewall::{self, Firewall, Model, NetworkEdge, PortBinding};
use super::{ApiError, Daemon, NetworkRecord, PortOwner};
use crate::api::NetworkSpec;
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// `network inspect`'s option names (Docker's).
pub(super) const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
pub(super) const OPT_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
pub(super) const OPT_HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";

impl Daemon {
    /// At start, after the stored state is restored: probe `nft` (already done by
    /// [`Firewall::detect`]), turn on IPv4 forwarding when the firewall can isolate networks,
    /// rebuild our table from the stored state in one transaction, and mark the ports of
    /// networks with ICC off. Returns what could not be done (the daemon keeps switching).
    pub(super) fn start_edge(&mut self) -> Vec<String> {
        let mut repairs = Vec::new();
        match self.firewall.status() {
            Ok(()) => {
                if let Err(e) = firewall::enable_ipv4_forwarding() {
                    repairs.push(format!("IPv4 forwarding: {e}"));
                }
                let model = self.edge_model(&mut repairs);
                match self.firewall.apply(&model) {
                    Ok(()) => tracing::info!(
                        networks = model.networks.len(),
                        published = model.bindings.len(),
                        "table inet vswitch rebuilt from the stored state in one transaction"
                    ),
                    Err(e) => repairs.push(format!("rebuilding table inet vswitch: {e}")),
                }
            }
            Err(why) => {
                tracing::warn!(
                    reason = why,
                    "NAT and published ports are off; --publish will be refused"
                );
                let published = self.endpoints.iter().filter(|e| !e.publish.is_empty());
                for ep in published {
                    repairs.push(format!(
                        "endpoint {}/{}: its published ports cannot be programmed ({why})",
                        ep.network, ep.sandbox
                    ));
                }
            }
        }
        let icc_off: Vec<String> = self
            .networks
            .values()
            .filter(|n| icc_off(&n.record.spec))
            .map(|n| n.record.name.clone())
            .collect();
        for net in icc_off {
            if let Err(e) = self.isolate_endpoints(&net) {
                repairs.push(format!("network {net}: marking ports isolated: {e}"));
            }
        }
        repairs
    }

    /// The firewall's model, derived from the stored state. Stored bindings that no longer fit
    /// (which a hand-edited state could hold) are left out and reported in `problems`.
    pub(super) fn edge_model(&self, problems: &mut Vec<String>) -> Model {
        let mut model = Model::new();
        for n in self.networks.values() {
            let Some(edge) = network_edge(&n.record) else {
                continue;
            };
            if let Err(e) = model.add_network(edge) {
                problems.push(format!("network {}: {e}", n.record.name));
            }
        }
        for ep in self.endpoints.iter().filter(|e| !e.publish.is_empty()) {
            if let Err(e) = model.add_bindings(&ep.publish) {
                problems.push(format!(
                    "endpoint {}/{}: published ports left out: {e}",
                    ep.network, ep.sandbox
                ));
            }
        }
        model
    }

    /// Programs the model of the current state; on failure the kernel keeps the previous rules.
    pub(super) fn sync_edge(&mut self) -> Result<(), ApiError> {
        let mut problems = Vec::new();
        let model = self.edge_model(&mut problems);
        for p in &problems {
            tracing::warn!(problem = %p, "the L3 edge leaves part of the state out");
        }
        self.firewall.apply(&model).map_err(edge_err)
    }

    /// Checks the L3 options of `network create` before anything changes.
    pub(super) fn check_edge_options(
        &self,
        spec: &NetworkSpec,
        driver: Driver,
    ) -> Result<(), ApiError> {
        let any = spec.enable_icc.is_some()
            || spec.enable_ip_masquerade.is_some()
            || spec.host_binding_ipv4.is_some();
        if any && driver != Driver::Bridge {
            return Err(ApiError::invalid(format!(
                "{OPT_ICC}, {OPT_MASQUERADE} and {OPT_HOST_BINDING} are options of the bridge \
                 driver, not of {driver}"
            )));
        }
        if let Some(text) = &spec.host_binding_ipv4 {
            let ip = parse_host_binding(text)?;
            if !ip.is_unspecified() {
                firewall::ports::check_local_address(ip).map_err(edge_err)?;
            }
        }
        Ok(())
    }

    /// Marks every endpoint port of `network` isolated (ICC off); the gateway stays open.
    pub(super) fn isolate_endpoints(&self, network: &str) -> Result<(), ApiError> {
        let handles: Vec<_> = self
            .ports
            .values()
            .filter(|p| p.record.network == network && p.record.owner == Some(PortOwner::Endpoint))
            .map(|p| p.handle)
            .collect();
        if handles.is_empty() {
            return Ok(());
        }
        let marked = self.call(move |ctl| {
            handles
                .iter()
                .filter(|h| {
                    let Some((net, local)) = ctl.dp.port_location(**h) else {
                        return false;
                    };
                    ctl.dp
                        .bridge_mut(net)
                        .is_some_and(|b| b.set_port_isolated(local, true))
                })
                .count()
        })?;
        tracing::debug!(network, ports = marked, "endpoint ports isolated (ICC off)");
        Ok(())
    }

    /// The L3 part of `network inspect`: Docker's options, and the rules programmed for the
    /// network (`Rules`).
    pub(super) fn edge_inspect(
        &self,
        rec: &NetworkRecord,
        options: &mut serde_json::Map<String, Value>,
    ) -> Value {
        let s = &rec.spec;
        if rec.driver == Driver::Bridge {
            options.insert(OPT_ICC.into(), json!((!icc_off(s)).to_string()));
            options.insert(
                OPT_MASQUERADE.into(),
                json!(s.enable_ip_masquerade.unwrap_or(true).to_string()),
            );
            if let Some(h) = &s.host_binding_ipv4 {
                options.insert(OPT_HOST_BINDING.into(), json!(h));
            }
        }
        let shown = self.firewall.list();
        let rules: Vec<Value> = shown
            .networks
            .iter()
            .filter(|n| n.network == rec.name)
            .flat_map(|n| &n.rules)
            .map(|r| json!({ "Chain": r.chain, "Rule": r.rule }))
            .collect();
        json!(rules)
    }
}

impl Daemon {
    /// A trace's last stage when the frame is headed to the network's gateway TAP (its
    /// destination MAC is the gateway's): what happens next is the host's routing and our
    /// nftables table, not the switch.
    pub(super) fn gateway_stage(&self, network: &str, frame: &[u8]) -> Option<Value> {
        let dst = frame.get(..6)?;
        let gw = self
            .ports
            .values()
            .find(|p| p.record.network == network && p.record.owner == Some(PortOwner::Gateway))?;
        let addr = gw.record.address.as_deref()?;
        let ip: Ipv4Addr = addr.split('/').next()?.parse().ok()?;
        if dst != super::endpoints::mac_for(ip) {
            return None;
        }
        let net = self.networks.get(network)?;
        let edge = network_edge(&net.record)?;
        let what = if edge.internal {
            "internal network: the host forwards nothing in or out"
        } else if self.firewall.status().is_err() {
            "nftables unavailable: no NAT, no isolation between networks"
        } else if edge.masquerade {
            "leaving the network it is masqueraded; other networks are dropped (table inet vswitch)"
        } else {
            "not masqueraded; other networks are dropped (table inet vswitch)"
        };
        Some(json!({
            "stage": "gateway",
            "result": format!("to gateway {} ({ip}): routed by the host; {what}", gw.record.name),
        }))
    }
}

/// The network as the firewall sees it: a bridge network with a gateway TAP.
fn network_edge(rec: &NetworkRecord) -> Option<NetworkEdge> {
    if rec.driver != Driver::Bridge {
        return None;
    }
    let ipam = rec.ipam.as_ref()?;
    let gateway = rec.driver.ops().own_port(rec)?;
    let s = &rec.spec;
    let mut edge = NetworkEdge::new(rec.name.clone(), ipam.subnet, gateway.name);
    edge.internal = s.internal;
    edge.masquerade = s.enable_ip_masquerade.unwrap_or(true);
    edge.host_binding_ipv4 = s
        .host_binding_ipv4
        .as_deref()
        .and_then(|t| t.parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_unspecified());
    Some(edge)
}

/// ICC is off for the network (`enable_icc=false`).
pub(super) fn icc_off(spec: &NetworkSpec) -> bool {
    spec.enable_icc == Some(false)
}

fn parse_host_binding(text: &str) -> Result<Ipv4Addr, ApiError> {
    text.parse().map_err(|_| {
        ApiError::invalid(format!(
            "{OPT_HOST_BINDING}: {text:?} is not an IPv4 address"
        ))
    })
}

/// A binding as `docker ps` shows it: `0.0.0.0:8080->80/tcp`.
pub(super) fn docker_port(b: &PortBinding) -> String {
    let host = b.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    format!("{host}:{}->{}/{}", b.host_ports, b.container_ports, b.proto)
}

/// Bindings in the shape of Docker's `NetworkSettings.Ports`: `{"80/tcp": [{"HostIp",
/// "HostPort"}]}`, one key per container port.
pub(super) fn docker_ports(bindings: &[PortBinding]) -> Value {
    let mut out = serde_json::Map::new();
    for b in bindings {
        let host = b.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string();
        for (i, cport) in b.container_ports.ports().enumerate() {
            let hport = b.host_ports.start as usize + i;
            let key = format!("{cport}/{}", b.proto);
            let entry = json!({ "HostIp": host, "HostPort": hport.to_string() });
            match out.get_mut(&key) {
                Some(Value::Array(list)) => list.push(entry),
                _ => {
                    out.insert(key, json!([entry]));
                }
            }
        }
    }
    Value::Object(out)
}

/// A firewall refusal as the API reports it.
pub(super) fn edge_err(e: firewall::FirewallError) -> ApiError {
    use firewall::FirewallError as F;
    match e {
        F::Invalid(m) => ApiError::invalid(m),
        F::NotFound(m) => ApiError::not_found(m),
        F::Conflict(m) => ApiError::conflict(m),
        F::Unavailable(m) => ApiError::invalid(m),
        e @ F::Apply(_) => ApiError::internal(e.to_string()),
    }
}

/// The firewall of a daemon that is starting: probes `nft` in this namespace.
pub(super) fn detect() -> Firewall {
    Firewall::detect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::firewall::{PortRange, Proto};

    #[test]
    fn ports_in_dockers_shapes() {
        let b = PortBinding {
            network: "n".into(),
            sandbox_ip: "10.1.0.2".parse().unwrap(),
            proto: Proto::Udp,
            host_ip: None,
            host_ports: PortRange::new(8000, 8001).unwrap(),
            container_ports: PortRange::new(80, 81).unwrap(),
        };
        assert_eq!(docker_port(&b), "0.0.0.0:8000-8001->80-81/udp");
        let v = docker_ports(&[b]);
        assert_eq!(v["81/udp"][0]["HostPort"], "8001");
        assert_eq!(v["80/udp"][0]["HostIp"], "0.0.0.0");
    }
}
