//! The real [`DockerBackend`]: the daemon itself, shared with the API server as
//! `Arc<Mutex<Daemon>>`. Each plugin call takes the lock, runs one daemon operation (the
//! `docker_*` functions of `networks.rs` and `endpoints.rs`, which validate first, undo their
//! steps on failure and save before they return) and turns its [`ApiError`] into a
//! [`BackendError`] of the same kind.
//!
//! A Docker network is a vswitch network (`docker-<12 digits>`, Docker's id as its own), so
//! `vswitchctl network ls/inspect`, `fdb show`, `trace` and `capture` see it; a Docker endpoint
//! is a vswitch endpoint without a sandbox record, its host end a port of the network.

use super::{
    AddressKind, BackendError, BackendResult, DockerBackend, EndpointInfo, EndpointSpec, ErrorKind,
    IfAddr, JoinInfo, NetworkSpec, PoolInfo, PoolSpec, PortBinding, Protocol,
};
use crate::api;
use crate::daemon::firewall::{PortRange, Proto, PublishSpec};
use crate::daemon::{ApiError, Daemon};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

/// The daemon as the plugin's backend.
pub struct DaemonBackend {
    daemon: Arc<Mutex<Daemon>>,
}

impl DaemonBackend {
    /// The backend of `daemon`, the one the API server serves.
    pub fn new(daemon: Arc<Mutex<Daemon>>) -> DaemonBackend {
        DaemonBackend { daemon }
    }

    fn lock(&self) -> MutexGuard<'_, Daemon> {
        // A panic while holding the lock leaves the daemon as its last saved step left it.
        self.daemon.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A daemon refusal as a backend one, of the same kind.
fn refused(e: ApiError) -> BackendError {
    let kind = match e.kind {
        api::ErrorKind::NotFound => ErrorKind::NotFound,
        api::ErrorKind::Conflict => ErrorKind::Conflict,
        api::ErrorKind::Invalid => ErrorKind::Invalid,
        api::ErrorKind::Internal => ErrorKind::Internal,
    };
    BackendError::new(kind, e.message)
}

/// A published port as `network connect --publish` gives it: Docker's host port 0 (pick one)
/// and SCTP are refused, since vswitch publishes explicit TCP and UDP ports.
fn publish_spec(b: &PortBinding) -> Result<PublishSpec, ApiError> {
    let proto = match b.protocol {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
        Protocol::Sctp => {
            return Err(ApiError::invalid(
                "published SCTP ports are not supported: publish tcp or udp",
            ))
        }
    };
    if b.host_port == 0 {
        return Err(ApiError::invalid(format!(
            "port {}/{}: give the host port (docker run -p HOST_PORT:{}); vswitch does not pick one",
            b.container_port,
            b.protocol.as_str(),
            b.container_port
        )));
    }
    let range = |start, end| PortRange::new(start, end).map_err(super::super::edge::edge_err);
    Ok(PublishSpec {
        host_ip: b.host_ip,
        host_ports: range(b.host_port, b.host_port_end.max(b.host_port))?,
        container_ports: range(b.container_port, b.container_port)?,
        proto,
    })
}

impl DockerBackend for DaemonBackend {
    fn create_network(&self, spec: &NetworkSpec) -> BackendResult<()> {
        self.lock().docker_network_create(spec).map_err(refused)
    }

    fn delete_network(&self, docker_id: &str) -> BackendResult<()> {
        self.lock()
            .docker_network_delete(docker_id)
            .map_err(refused)
    }

    fn create_endpoint(&self, spec: &EndpointSpec) -> BackendResult<EndpointInfo> {
        self.lock().docker_endpoint_create(spec).map_err(refused)
    }

    fn endpoint_info(&self, network: &str, endpoint: &str) -> BackendResult<EndpointInfo> {
        self.lock()
            .docker_endpoint_info(network, endpoint)
            .map_err(refused)
    }

    fn delete_endpoint(&self, network: &str, endpoint: &str) -> BackendResult<()> {
        self.lock()
            .docker_endpoint_delete(network, endpoint)
            .map_err(refused)
    }

    fn join(&self, network: &str, endpoint: &str, sandbox_key: &str) -> BackendResult<JoinInfo> {
        self.lock()
            .docker_endpoint_join(network, endpoint, sandbox_key)
            .map_err(refused)
    }

    fn leave(&self, network: &str, endpoint: &str) -> BackendResult<()> {
        self.lock()
            .docker_endpoint_leave(network, endpoint)
            .map_err(refused)
    }

    fn publish(
        &self,
        network: &str,
        endpoint: &str,
        bindings: &[PortBinding],
    ) -> BackendResult<()> {
        let specs = bindings
            .iter()
            .map(publish_spec)
            .collect::<Result<Vec<_>, _>>()
            .map_err(refused)?;
        self.lock()
            .docker_endpoint_publish(network, endpoint, &specs)
            .map_err(refused)
    }

    fn unpublish(&self, network: &str, endpoint: &str) -> BackendResult<()> {
        self.lock()
            .docker_endpoint_publish(network, endpoint, &[])
            .map_err(refused)
    }

    fn request_pool(&self, spec: &PoolSpec) -> BackendResult<PoolInfo> {
        self.lock().docker_pool_request(spec).map_err(refused)
    }

    fn release_pool(&self, pool: &str) -> BackendResult<()> {
        self.lock().docker_pool_release(pool).map_err(refused)
    }

    fn request_address(
        &self,
        pool: &str,
        address: Option<Ipv4Addr>,
        kind: AddressKind,
    ) -> BackendResult<IfAddr> {
        self.lock()
            .docker_address_request(pool, address, kind)
            .map_err(refused)
    }

    fn release_address(&self, pool: &str, address: Ipv4Addr) -> BackendResult<()> {
        self.lock()
            .docker_address_release(pool, address)
            .map_err(refused)
    }
}
