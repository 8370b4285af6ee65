//! Published ports of an endpoint: the one place that makes them real and takes them back.
//!
//! [`Daemon::publish_ports`] binds specs (`[HOST_IP:]HOST_PORT:PORT[/tcp|udp]`, parsed by
//! [`firewall::parse_publish`], or built from Docker's `ProgramExternalConnectivity`) to one
//! endpoint: each is checked against what vswitch already publishes and against the host
//! (a local address, no socket listening on the port) before anything changes, stored on the
//! endpoint record and programmed in the same change; [`Daemon::unpublish_ports`] takes them
//! back. `network connect --publish`, `network disconnect`, `sandbox rm` and the Docker plugin
//! all go through these two functions.

use super::edge::edge_err;
use super::firewall::{self, PortBinding, PublishSpec};
use super::{ApiError, Daemon, NetworkRecord};
use std::net::Ipv4Addr;

impl Daemon {
    /// Publishes `specs` for the endpoint `endpoint_id` (replacing the ports it published
    /// before), stores them and programs them; all or nothing. Returns the bindings made (a host
    /// range with one container port has taken its first free host port).
    pub fn publish_ports(
        &mut self,
        endpoint_id: &str,
        specs: &[PublishSpec],
    ) -> Result<Vec<PortBinding>, ApiError> {
        let before = self.endpoint_bindings(endpoint_id)?;
        let made = self.apply_publish(endpoint_id, specs)?;
        if let Err(e) = self.save() {
            self.set_bindings(endpoint_id, before);
            let _ = self.sync_edge();
            return Err(e);
        }
        Ok(made)
    }

    /// Removes every port the endpoint published, from the stored state and from the kernel.
    pub fn unpublish_ports(&mut self, endpoint_id: &str) -> Result<(), ApiError> {
        let before = self.endpoint_bindings(endpoint_id)?;
        if before.is_empty() {
            return Ok(());
        }
        self.set_bindings(endpoint_id, Vec::new());
        if let Err(e) = self.sync_edge().and_then(|()| self.save()) {
            self.set_bindings(endpoint_id, before);
            let _ = self.sync_edge();
            return Err(e);
        }
        Ok(())
    }

    /// Checks `--publish` specs for an endpoint about to be made on `net` (address not known
    /// yet: `stand_in` stands for it): parses them, and binds them against the current model and
    /// the host without changing anything.
    pub(super) fn check_publish(
        &self,
        net: &NetworkRecord,
        specs: &[String],
        stand_in: Option<Ipv4Addr>,
    ) -> Result<Vec<PublishSpec>, ApiError> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        if net.driver != super::Driver::Bridge {
            return Err(ApiError::invalid(format!(
                "--publish: network {} is a {} network; ports are published on bridge networks",
                net.name, net.driver
            )));
        }
        let parsed = specs
            .iter()
            .map(|s| firewall::parse_publish(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(edge_err)?;
        self.firewall.check_can_publish().map_err(edge_err)?;
        let ip = stand_in
            .or_else(|| net.ipam.as_ref().and_then(|i| i.gateway))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "network {}: ports can be published only on a bridge network with a gateway",
                    net.name
                ))
            })?;
        self.bind_all(&net.name, ip, &parsed, None)?;
        Ok(parsed)
    }

    /// Binds, stores and programs (no save); on failure the endpoint keeps its previous
    /// bindings. What [`Daemon::publish_ports`] and `network connect --publish` run.
    pub(super) fn apply_publish(
        &mut self,
        endpoint_id: &str,
        specs: &[PublishSpec],
    ) -> Result<Vec<PortBinding>, ApiError> {
        let before = self.endpoint_bindings(endpoint_id)?;
        let ep = self
            .endpoints
            .iter()
            .find(|e| e.id == endpoint_id)
            .ok_or_else(|| ApiError::not_found(format!("no such endpoint: {endpoint_id}")))?;
        let (network, sandbox) = (ep.network.clone(), ep.sandbox.clone());
        if specs.is_empty() && before.is_empty() {
            return Ok(Vec::new());
        }
        let ip = ep.ip;
        let made = match ip {
            Some(ip) if !specs.is_empty() => {
                self.firewall.check_can_publish().map_err(edge_err)?;
                self.bind_all(&network, ip, specs, Some(endpoint_id))?
            }
            _ if specs.is_empty() => Vec::new(),
            _ => {
                return Err(ApiError::invalid(format!(
                    "endpoint {network}/{sandbox} has no address: ports cannot be published"
                )))
            }
        };
        self.set_bindings(endpoint_id, made.clone());
        if let Err(e) = self.sync_edge() {
            self.set_bindings(endpoint_id, before);
            return Err(e);
        }
        for b in &made {
            tracing::info!(network, sandbox, binding = %b, "port published");
        }
        Ok(made)
    }

    /// Binds each spec in turn against the model (less the endpoint's own current bindings,
    /// which these replace) plus the specs before it, and against the host.
    fn bind_all(
        &self,
        network: &str,
        ip: Ipv4Addr,
        specs: &[PublishSpec],
        replacing: Option<&str>,
    ) -> Result<Vec<PortBinding>, ApiError> {
        let mut problems = Vec::new();
        let mut model = self.edge_model(&mut problems);
        if let Some(id) = replacing {
            if let Some(ep) = self.endpoints.iter().find(|e| e.id == id) {
                model.bindings.retain(|b| !ep.publish.contains(b));
            }
        }
        let mut made = Vec::new();
        for spec in specs {
            let b = spec.bind(&model, network, ip).map_err(edge_err)?;
            model
                .add_bindings(std::slice::from_ref(&b))
                .map_err(edge_err)?;
            made.push(b);
        }
        Ok(made)
    }

    fn endpoint_bindings(&self, endpoint_id: &str) -> Result<Vec<PortBinding>, ApiError> {
        self.endpoints
            .iter()
            .find(|e| e.id == endpoint_id)
            .map(|e| e.publish.clone())
            .ok_or_else(|| ApiError::not_found(format!("no such endpoint: {endpoint_id}")))
    }

    fn set_bindings(&mut self, endpoint_id: &str, bindings: Vec<PortBinding>) {
        if let Some(ep) = self.endpoints.iter_mut().find(|e| e.id == endpoint_id) {
            ep.publish = bindings;
        }
    }
}
