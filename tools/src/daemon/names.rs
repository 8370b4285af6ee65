//! The embedded DNS server wired into the daemon: which sandboxes it serves, which names it
//! holds, and how both follow connect, disconnect, sandbox removal and restarts.
//!
//! A sandbox with at least one endpoint on a network with an address pool (not `host`, not
//! `none`, not a Docker container's) is served at `127.0.0.11:53` (UDP and TCP) and gets
//! `/etc/netns/SANDBOX/resolv.conf`. Its endpoints put its name and aliases in the name table,
//! except on the default `bridge` network (no names; its sandboxes still forward). Everything
//! here follows the daemon's records: after a restart (also a `kill -9`) [`Daemon::enable_dns`]
//! rebuilds the table and the sockets from them. A DNS failure never fails the network
//! operation that caused it: it is logged, and the network works without names.

use super::dns::table::DEFAULT_NETWORK;
use super::dns::{DnsService, ForwardConfig};
use super::{ApiError, Daemon, EndpointRecord, NetworkRecord};
use crate::netns;

use std::collections::BTreeSet;

/// The DNS service as the daemon owns it once [`Daemon::enable_dns`] ran.
pub(super) struct Names {
    service: DnsService,
    /// The sandboxes whose sockets the service holds.
    served: BTreeSet<String>,
}

impl Daemon {
    /// Starts the DNS service in the calling thread's namespace (forwarded queries leave from
    /// it) and serves every sandbox the saved state connects; returns what could not be
    /// served (the rest is served).
    pub fn enable_dns(&mut self, config: ForwardConfig) -> std::io::Result<Vec<String>> {
        let service = DnsService::start(config)?;
        self.dns = Some(Names {
            service,
            served: BTreeSet::new(),
        });
        let mut problems = Vec::new();
        for ep in self.endpoints.iter().cloned().collect::<Vec<_>>() {
            if let Err(e) = self.names_add(&ep) {
                problems.push(e);
            }
        }
        Ok(problems)
    }

    /// Checks `--alias` values for an endpoint on `net`: DNS names, on a network that has
    /// names; returns them without duplicates (compared case-insensitively).
    pub(super) fn checked_aliases(
        &self,
        net: &NetworkRecord,
        aliases: &[String],
    ) -> Result<Vec<String>, ApiError> {
        if aliases.is_empty() {
            return Ok(Vec::new());
        }
        if net.name == DEFAULT_NETWORK || !net.driver.ops().has_pool() {
            return Err(ApiError::invalid(format!(
                "network {} has no name resolution: --alias needs a user-defined network \
                 with addresses",
                net.name
            )));
        }
        let mut out: Vec<String> = Vec::with_capacity(aliases.len());
        for a in aliases {
            crate::api::check_alias(a).map_err(ApiError::invalid)?;
            let a = a.strip_suffix('.').unwrap_or(a);
            if !out.iter().any(|o| o.eq_ignore_ascii_case(a)) {
                out.push(a.to_string());
            }
        }
        Ok(out)
    }

    /// After a connect: serves the sandbox and adds its names (logged on failure).
    pub(super) fn names_connected(&mut self, ep: &EndpointRecord) {
        if let Err(e) = self.names_add(ep) {
            tracing::warn!(network = %ep.network, sandbox = %ep.sandbox, "dns: {e}");
        }
    }

    /// After a disconnect: its names go at once; a sandbox left on no served network is no
    /// longer served (its sockets closed, its resolv.conf removed).
    pub(super) fn names_disconnected(&mut self, network: &str, sandbox: &str) {
        let Some(dns) = &self.dns else { return };
        dns.service.table().remove_endpoint(network, sandbox);
        let still = self
            .endpoints
            .of_sandbox(sandbox)
            .any(|e| self.is_served(e));
        if !still {
            self.names_sandbox_removed(sandbox);
        }
    }

    /// When a sandbox goes: its names, sockets (which hold its namespace) and resolv.conf.
    pub(super) fn names_sandbox_removed(&mut self, sandbox: &str) {
        let Some(dns) = &mut self.dns else { return };
        if !dns.served.remove(sandbox) {
            // Never served (its sockets could not be opened): only its names.
            dns.service.table().remove_sandbox(sandbox);
            return;
        }
        if let Err(e) = dns.service.remove_sandbox(sandbox) {
            tracing::warn!(sandbox, error = %e, "dns: removing the sandbox's resolver");
        }
    }

    /// `dns stats`: the service's counters.
    pub(super) fn dns_stats(&self) -> Result<serde_json::Value, ApiError> {
        let dns = self
            .dns
            .as_ref()
            .ok_or_else(|| ApiError::not_found("the DNS service is not running"))?;
        serde_json::to_value(dns.service.stats())
            .map_err(|e| ApiError::internal(format!("encoding the DNS counters: {e}")))
    }

    /// True when the endpoint's sandbox is served: one of ours (not Docker's, not on `host`
    /// or `none`) on a network with addresses.
    fn is_served(&self, ep: &EndpointRecord) -> bool {
        ep.docker.is_none()
            && ep.ip.is_some()
            && self.sandboxes.get(&ep.sandbox).is_some_and(|s| !s.host)
            && self
                .networks
                .get(&ep.network)
                .is_some_and(|n| n.record.driver.ops().has_pool())
    }

    /// Adds the endpoint's names and serves its sandbox (if not yet), each even if the other
    /// fails: the names resolve for the other sandboxes without this one's sockets, and the
    /// sandbox forwards without its names.
    fn names_add(&mut self, ep: &EndpointRecord) -> Result<(), String> {
        let (true, Some(ip)) = (self.is_served(ep), ep.ip) else {
            return Ok(());
        };
        let Some(sb) = self.sandboxes.get(&ep.sandbox) else {
            return Ok(());
        };
        let Some(dns) = &mut self.dns else {
            return Ok(());
        };
        let named = dns
            .service
            .table()
            .add_endpoint(&ep.network, &sb.name, ip, &ep.aliases)
            .map_err(|e| format!("names of {}: {e}", sb.name));
        if dns.served.contains(&sb.name) {
            return named;
        }
        let ns = netns::open_netns(&sb.path)
            .map_err(|e| format!("opening the namespace of {}: {e}", sb.name))?;
        dns.service
            .add_sandbox(&sb.name, &ns)
            .map_err(|e| e.to_string())?;
        dns.served.insert(sb.name.clone());
        dns.service
            .write_resolv_conf(&sb.name)
            .map_err(|e| format!("writing the resolv.conf of {}: {e}", sb.name))?;
        named
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_saved_before_aliases_load() {
        let old = r#"{"id": "e1", "network": "blue", "sandbox": "web", "interface": "eth0",
                      "host_interface": "vse0123456789ab", "mac": "02:42:0a:00:00:02",
                      "ip": "10.0.0.2", "prefix_len": 24}"#;
        let ep: EndpointRecord = serde_json::from_str(old).unwrap();
        assert!(ep.aliases.is_empty());
        let again = serde_json::to_value(&ep).unwrap();
        assert!(again.get("aliases").is_none(), "{again}");
        let with = EndpointRecord {
            aliases: vec!["api".into()],
            ..ep
        };
        let text = serde_json::to_string(&with).unwrap();
        let back: EndpointRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back.aliases, vec!["api".to_string()]);
    }
}
