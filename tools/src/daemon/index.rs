//! The endpoints in memory, indexed by (sandbox, network), by network and by host interface,
//! so that what a connect or a port's attach looks up costs the same with 10 endpoints as with
//! 10,000.

use super::EndpointRecord;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Every endpoint, by (sandbox, network), with a second index by (network, sandbox) and a
/// third by the host end of its veth.
#[derive(Debug, Default, Clone)]
pub(super) struct Endpoints {
    /// The records, by (sandbox, network): a sandbox's endpoints are one range.
    by_sandbox: BTreeMap<(String, String), EndpointRecord>,
    /// (network, sandbox) of each record: a network's endpoints are one range.
    by_network: BTreeSet<(String, String)>,
    /// (sandbox, network) of each record with a host interface, by that interface.
    by_host: HashMap<String, (String, String)>,
}

impl Endpoints {
    /// Adds `ep`; returns the endpoint it replaced (same network and sandbox), if any.
    pub(super) fn insert(&mut self, ep: EndpointRecord) -> Option<EndpointRecord> {
        self.by_network
            .insert((ep.network.clone(), ep.sandbox.clone()));
        let key = (ep.sandbox.clone(), ep.network.clone());
        if !ep.host_interface.is_empty() {
            self.by_host.insert(ep.host_interface.clone(), key.clone());
        }
        let old = self.by_sandbox.insert(key, ep);
        if let Some(old) = &old {
            self.forget_host(old);
        }
        old
    }

    /// Removes the endpoint of `sandbox` on `network`.
    pub(super) fn remove(&mut self, network: &str, sandbox: &str) -> Option<EndpointRecord> {
        self.by_network
            .remove(&(network.to_string(), sandbox.to_string()));
        let old = self
            .by_sandbox
            .remove(&(sandbox.to_string(), network.to_string()));
        if let Some(old) = &old {
            self.forget_host(old);
        }
        old
    }

    /// Drops `gone`'s host-interface entry, unless another endpoint now holds that name.
    fn forget_host(&mut self, gone: &EndpointRecord) {
        let key = (gone.sandbox.clone(), gone.network.clone());
        let stale = self.by_host.get(&gone.host_interface).is_some_and(|k| {
            *k == key
                && self
                    .by_sandbox
                    .get(k)
                    .is_none_or(|now| now.host_interface != gone.host_interface)
        });
        if stale {
            self.by_host.remove(&gone.host_interface);
        }
    }

    /// The endpoint whose veth has `host_interface` as its host end.
    pub(super) fn of_host_interface(&self, host_interface: &str) -> Option<&EndpointRecord> {
        let key = self.by_host.get(host_interface)?;
        self.by_sandbox
            .get(key)
            .filter(|ep| ep.host_interface == host_interface)
    }

    /// The endpoint of `sandbox` on `network`.
    pub(super) fn get(&self, network: &str, sandbox: &str) -> Option<&EndpointRecord> {
        self.by_sandbox
            .get(&(sandbox.to_string(), network.to_string()))
    }

    /// The endpoints of `sandbox`, by network name.
    pub(super) fn of_sandbox<'a>(
        &'a self,
        sandbox: &'a str,
    ) -> impl Iterator<Item = &'a EndpointRecord> + 'a {
        self.by_sandbox
            .range((sandbox.to_string(), String::new())..)
            .take_while(move |((s, _), _)| s == sandbox)
            .map(|(_, ep)| ep)
    }

    /// The endpoints on `network`, by sandbox name.
    pub(super) fn of_network<'a>(
        &'a self,
        network: &'a str,
    ) -> impl Iterator<Item = &'a EndpointRecord> + 'a {
        self.by_network
            .range((network.to_string(), String::new())..)
            .take_while(move |(n, _)| n == network)
            .filter_map(move |(n, s)| self.get(n, s))
    }

    /// Every endpoint, by sandbox then network.
    pub(super) fn iter(&self) -> impl Iterator<Item = &EndpointRecord> {
        self.by_sandbox.values()
    }

    /// Every endpoint, to change in place: what indexes them (network, sandbox, host
    /// interface) must stay.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut EndpointRecord> {
        self.by_sandbox.values_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(id: &str, network: &str, sandbox: &str) -> EndpointRecord {
        EndpointRecord {
            id: id.into(),
            network: network.into(),
            sandbox: sandbox.into(),
            interface: "eth0".into(),
            host_interface: String::new(),
            mac: None,
            ip: None,
            prefix_len: 0,
            default_route: false,
            docker: None,
            publish: Vec::new(),
            aliases: Vec::new(),
        }
    }

    #[test]
    fn ranges_hold_exactly_their_endpoints() {
        let mut e = Endpoints::default();
        assert!(e.insert(ep("1", "a", "s")).is_none());
        assert!(e.insert(ep("2", "b", "s")).is_none());
        assert!(e.insert(ep("3", "a", "s2")).is_none());
        assert!(e.insert(ep("4", "a", "")).is_none());
        // A second record for one pair replaces the first.
        assert_eq!(e.insert(ep("5", "a", "s2")).map(|x| x.id), Some("3".into()));
        let ids = |it: Vec<&EndpointRecord>| it.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(e.of_sandbox("s").collect()), ["1", "2"]);
        assert_eq!(ids(e.of_sandbox("s2").collect()), ["5"]);
        assert_eq!(ids(e.of_network("a").collect()), ["4", "1", "5"]);
        assert_eq!(ids(e.of_network("b").collect()), ["2"]);
        assert!(e.of_network("c").next().is_none());
        assert_eq!(e.iter().count(), 4);
        assert_eq!(e.remove("a", "s").map(|x| x.id), Some("1".into()));
        assert!(e.get("a", "s").is_none());
        assert_eq!(ids(e.of_network("a").collect()), ["4", "5"]);
        assert_eq!(e.iter().count(), 3);
    }

    #[test]
    fn host_interface_index_follows_inserts_replacements_and_removals() {
        let mut e = Endpoints::default();
        let with_host = |id: &str, network: &str, sandbox: &str, host: &str| EndpointRecord {
            host_interface: host.into(),
            ..ep(id, network, sandbox)
        };
        e.insert(with_host("1", "a", "s", "vse1"));
        e.insert(with_host("2", "a", "t", "vse2"));
        e.insert(ep("3", "b", "s"));
        assert_eq!(
            e.of_host_interface("vse1").map(|x| x.id.as_str()),
            Some("1")
        );
        assert_eq!(
            e.of_host_interface("vse2").map(|x| x.id.as_str()),
            Some("2")
        );
        assert!(e.of_host_interface("").is_none());
        // A replacement that changes the host interface moves the entry.
        e.insert(with_host("1b", "a", "s", "vse9"));
        assert!(e.of_host_interface("vse1").is_none());
        assert_eq!(
            e.of_host_interface("vse9").map(|x| x.id.as_str()),
            Some("1b")
        );
        // A replacement that clears it (a Docker endpoint leaving) drops the entry.
        e.insert(ep("2b", "a", "t"));
        assert!(e.of_host_interface("vse2").is_none());
        assert_eq!(e.remove("a", "s").map(|x| x.id), Some("1b".into()));
        assert!(e.of_host_interface("vse9").is_none());
        assert!(e.by_host.is_empty());
    }
}
