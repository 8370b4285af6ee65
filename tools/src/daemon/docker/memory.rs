//! An in-memory [`DockerBackend`], for tests: it keeps networks, endpoints and published ports in
//! maps and pools in the `ipam` crate, makes no interface and touches no kernel state. It follows
//! the contract of the trait (idempotent re-creation, nothing changed on a refusal), so the
//! handlers can be tested against it without root, and a real dockerd can be pointed at it.

use super::{
    AddressKind, Addressing, BackendError, BackendResult, DockerBackend, EndpointInfo,
    EndpointSpec, IfAddr, JoinInfo, NetworkSpec, PoolInfo, PoolSpec, PortBinding, StaticRoute,
};
use ipam::{DefaultIpam, IpamDriver, IpamError, PoolId, PoolRequest};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};
use switch::MacAddr;

/// A network as the in-memory backend holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NetworkRecord {
    spec: NetworkSpec,
    /// The pool its addresses come from.
    pool: Option<PoolId>,
    /// True when the pool was made for the network (Docker's IPAM), false when it came from
    /// `RequestPool` and is released by Docker.
    owns_pool: bool,
}

/// An endpoint as the in-memory backend holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EndpointRecord {
    spec: EndpointSpec,
    address: Option<IfAddr>,
    mac: MacAddr,
    /// True when the backend allocated the address in the network's pool.
    allocated: bool,
    /// The host end's name, once joined.
    port: Option<String>,
    bindings: Vec<PortBinding>,
}

/// Everything the backend holds; compared before and after a refused call in tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    ipam: DefaultIpam,
    networks: BTreeMap<String, NetworkRecord>,
    endpoints: BTreeMap<(String, String), EndpointRecord>,
    static_routes: Vec<StaticRoute>,
}

/// The in-memory backend.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<Snapshot>,
    calls: Mutex<Vec<String>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    /// A copy of everything the backend holds.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    /// The backend calls so far, one line each (`create_network docker-0123456789ab`, …).
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The spec of the network with Docker id `docker_id`.
    pub fn network(&self, docker_id: &str) -> Option<NetworkSpec> {
        self.lock().networks.get(docker_id).map(|n| n.spec.clone())
    }

    /// The switch port of a joined endpoint.
    pub fn endpoint_port(&self, network: &str, endpoint: &str) -> Option<String> {
        self.lock()
            .endpoints
            .get(&key(network, endpoint))
            .and_then(|e| e.port.clone())
    }

    /// The ports published to an endpoint.
    pub fn bindings(&self, network: &str, endpoint: &str) -> Vec<PortBinding> {
        self.lock()
            .endpoints
            .get(&key(network, endpoint))
            .map(|e| e.bindings.clone())
            .unwrap_or_default()
    }

    /// Sets the routes every later join returns.
    pub fn set_static_routes(&self, routes: Vec<StaticRoute>) {
        self.lock().static_routes = routes;
    }

    fn lock(&self) -> MutexGuard<'_, Snapshot> {
        // A panic while holding the lock leaves consistent maps (each call changes them last).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, line: String) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(line);
        }
    }
}

fn key(network: &str, endpoint: &str) -> (String, String) {
    (network.to_string(), endpoint.to_string())
}

/// Docker's MAC for an address: 02:42 and the four bytes of the address.
pub fn mac_for(ip: Ipv4Addr) -> MacAddr {
    let [a, b, c, d] = ip.octets();
    MacAddr([0x02, 0x42, a, b, c, d])
}

/// The kind of an `ipam` crate error.
pub fn ipam_error(e: IpamError) -> BackendError {
    match e {
        IpamError::UnknownPool { .. } | IpamError::NotAllocated { .. } => {
            BackendError::not_found(e.to_string())
        }
        IpamError::AddressInUse { .. }
        | IpamError::OverlappingSubnets { .. }
        | IpamError::PoolExhausted { .. }
        | IpamError::NoDefaultSubnet => BackendError::conflict(e.to_string()),
        _ => BackendError::invalid(e.to_string()),
    }
}

fn no_network(docker_id: &str) -> BackendError {
    BackendError::not_found(format!("no vswitch network with Docker id {docker_id}"))
}

fn no_endpoint(network: &str, endpoint: &str) -> BackendError {
    BackendError::not_found(format!(
        "no endpoint {endpoint} on the vswitch network with Docker id {network}"
    ))
}

impl Snapshot {
    fn endpoint_mut(
        &mut self,
        network: &str,
        endpoint: &str,
    ) -> BackendResult<&mut EndpointRecord> {
        self.endpoints
            .get_mut(&key(network, endpoint))
            .ok_or_else(|| no_endpoint(network, endpoint))
    }

    fn info(e: &EndpointRecord) -> EndpointInfo {
        EndpointInfo {
            address: e.address,
            mac: e.mac,
            port: e.port.clone(),
        }
    }
}

impl DockerBackend for MemoryBackend {
    fn create_network(&self, spec: &NetworkSpec) -> BackendResult<()> {
        self.record(format!("create_network {}", spec.name));
        let mut s = self.lock();
        if let Some(existing) = s.networks.get(&spec.docker_id) {
            return if existing.spec == *spec {
                Ok(())
            } else {
                Err(BackendError::conflict(format!(
                    "network {} (Docker id {}) already exists with other settings",
                    spec.name, spec.docker_id
                )))
            };
        }
        let (pool, owns_pool) = match (spec.addressing, spec.subnet) {
            (_, None) => (None, false),
            (Addressing::Vswitch, Some(subnet)) => {
                let id = s
                    .ipam
                    .pools()
                    .find(|(_, p)| p.subnet() == subnet)
                    .map(|(id, _)| id.clone())
                    .ok_or_else(|| {
                        BackendError::not_found(format!(
                            "no vswitch address pool {subnet}: request it through the vswitch IPAM driver"
                        ))
                    })?;
                (Some(id), false)
            }
            (Addressing::Docker, Some(subnet)) => {
                let id = s
                    .ipam
                    .request_pool(PoolRequest {
                        subnet: Some(subnet),
                        gateway: spec.gateway,
                        reserved: spec.reserved.clone(),
                        ..PoolRequest::default()
                    })
                    .map_err(ipam_error)?;
                (Some(id), true)
            }
        };
        s.networks.insert(
            spec.docker_id.clone(),
            NetworkRecord {
                spec: spec.clone(),
                pool,
                owns_pool,
            },
        );
        Ok(())
    }

    fn delete_network(&self, docker_id: &str) -> BackendResult<()> {
        self.record(format!("delete_network {docker_id}"));
        let mut s = self.lock();
        let net = s
            .networks
            .get(docker_id)
            .ok_or_else(|| no_network(docker_id))?;
        let left = s.endpoints.keys().filter(|(n, _)| n == docker_id).count();
        if left > 0 {
            return Err(BackendError::conflict(format!(
                "network {} still has {left} endpoints",
                net.spec.name
            )));
        }
        if let (Some(pool), true) = (net.pool.clone(), net.owns_pool) {
            s.ipam.release_pool(&pool).map_err(ipam_error)?;
        }
        s.networks.remove(docker_id);
        Ok(())
    }

    fn create_endpoint(&self, spec: &EndpointSpec) -> BackendResult<EndpointInfo> {
        self.record(format!("create_endpoint {}", spec.endpoint));
        let mut s = self.lock();
        let net = s
            .networks
            .get(&spec.network)
            .ok_or_else(|| no_network(&spec.network))?
            .clone();
        if let Some(existing) = s.endpoints.get(&key(&spec.network, &spec.endpoint)) {
            return if existing.spec == *spec {
                Ok(Snapshot::info(existing))
            } else {
                Err(BackendError::conflict(format!(
                    "endpoint {} exists with another address or MAC",
                    spec.endpoint
                )))
            };
        }
        let (address, allocated) = match (&net.pool, spec.address) {
            (None, given) => (given, false),
            (Some(pool), Some(given)) => {
                let subnet = s.ipam.pool(pool).map(|p| p.subnet());
                if let Some(subnet) = subnet.filter(|s| !s.contains(given.ip())) {
                    return Err(BackendError::invalid(format!(
                        "address {} is outside the subnet {subnet}",
                        given.ip()
                    )));
                }
                if net.owns_pool {
                    s.ipam
                        .request_address(pool, &spec.endpoint, Some(given.ip()))
                        .map_err(ipam_error)?;
                }
                (Some(given), net.owns_pool)
            }
            (Some(pool), None) => {
                let ip = s
                    .ipam
                    .request_address(pool, &spec.endpoint, None)
                    .map_err(ipam_error)?;
                let subnet = s.ipam.pool(pool).map(|p| p.subnet());
                (subnet.map(|sn| IfAddr::on(ip, sn)), true)
            }
        };
        let mac = spec
            .mac
            .or(address.map(|a| mac_for(a.ip())))
            .unwrap_or(MacAddr([0x02, 0x42, 0, 0, 0, 1]));
        let rec = EndpointRecord {
            spec: spec.clone(),
            address,
            mac,
            allocated,
            port: None,
            bindings: Vec::new(),
        };
        let info = Snapshot::info(&rec);
        s.endpoints.insert(key(&spec.network, &spec.endpoint), rec);
        Ok(info)
    }

    fn endpoint_info(&self, network: &str, endpoint: &str) -> BackendResult<EndpointInfo> {
        let mut s = self.lock();
        Ok(Snapshot::info(s.endpoint_mut(network, endpoint)?))
    }

    fn delete_endpoint(&self, network: &str, endpoint: &str) -> BackendResult<()> {
        self.record(format!("delete_endpoint {endpoint}"));
        let mut s = self.lock();
        let ep = s.endpoint_mut(network, endpoint)?.clone();
        let pool = s.networks.get(network).and_then(|n| n.pool.clone());
        if let (true, Some(addr), Some(pool)) = (ep.allocated, ep.address, pool) {
            s.ipam
                .release_address(&pool, addr.ip())
                .map_err(ipam_error)?;
        }
        s.endpoints.remove(&key(network, endpoint));
        Ok(())
    }

    fn join(&self, network: &str, endpoint: &str, sandbox_key: &str) -> BackendResult<JoinInfo> {
        self.record(format!("join {endpoint} {sandbox_key}"));
        let mut s = self.lock();
        let net = s
            .networks
            .get(network)
            .ok_or_else(|| no_network(network))?
            .clone();
        let gateway = match (net.spec.internal, net.spec.gateway, &net.pool) {
            (true, _, _) => None,
            (false, Some(gw), _) => Some(gw),
            (false, None, Some(pool)) => s.ipam.pool(pool).and_then(|p| p.gateway()),
            (false, None, None) => None,
        };
        let routes = s.static_routes.clone();
        let ep = s.endpoint_mut(network, endpoint)?;
        if let Some(port) = &ep.port {
            return Err(BackendError::conflict(format!(
                "endpoint {endpoint} is already joined (port {port})"
            )));
        }
        let short: String = endpoint.chars().take(8).collect();
        ep.port = Some(format!("vmh{short}"));
        Ok(JoinInfo {
            ifname: format!("vmc{short}"),
            gateway,
            static_routes: routes,
        })
    }

    fn leave(&self, network: &str, endpoint: &str) -> BackendResult<()> {
        self.record(format!("leave {endpoint}"));
        let mut s = self.lock();
        let ep = s.endpoint_mut(network, endpoint)?;
        if ep.port.take().is_none() {
            return Err(BackendError::conflict(format!(
                "endpoint {endpoint} is not joined"
            )));
        }
        Ok(())
    }

    fn publish(
        &self,
        network: &str,
        endpoint: &str,
        bindings: &[PortBinding],
    ) -> BackendResult<()> {
        self.record(format!("publish {endpoint} {}", bindings.len()));
        let mut s = self.lock();
        s.endpoint_mut(network, endpoint)?;
        for b in bindings.iter().filter(|b| b.host_port != 0) {
            let taken = s.endpoints.iter().any(|((n, e), rec)| {
                (n.as_str(), e.as_str()) != (network, endpoint)
                    && rec.bindings.iter().any(|o| {
                        o.protocol == b.protocol
                            && o.host_port == b.host_port
                            && (o.host_ip.is_none()
                                || b.host_ip.is_none()
                                || o.host_ip == b.host_ip)
                    })
            });
            if taken {
                return Err(BackendError::conflict(format!(
                    "host port {}/{} is already published",
                    b.host_port,
                    b.protocol.as_str()
                )));
            }
        }
        s.endpoint_mut(network, endpoint)?.bindings = bindings.to_vec();
        Ok(())
    }

    fn unpublish(&self, network: &str, endpoint: &str) -> BackendResult<()> {
        self.record(format!("unpublish {endpoint}"));
        self.lock()
            .endpoint_mut(network, endpoint)?
            .bindings
            .clear();
        Ok(())
    }

    fn request_pool(&self, spec: &PoolSpec) -> BackendResult<PoolInfo> {
        self.record(format!("request_pool {:?}", spec.subnet));
        let mut s = self.lock();
        let id = s
            .ipam
            .request_pool(PoolRequest {
                subnet: spec.subnet,
                ip_range: spec.ip_range,
                ..PoolRequest::default()
            })
            .map_err(ipam_error)?;
        let pool = s
            .ipam
            .pool(&id)
            .ok_or_else(|| BackendError::internal(format!("pool {id} vanished")))?;
        Ok(PoolInfo {
            id: id.to_string(),
            subnet: pool.subnet(),
            gateway: pool.gateway(),
        })
    }

    fn release_pool(&self, pool: &str) -> BackendResult<()> {
        self.record(format!("release_pool {pool}"));
        self.lock()
            .ipam
            .release_pool(&PoolId::new(pool))
            .map_err(ipam_error)
    }

    fn request_address(
        &self,
        pool: &str,
        address: Option<Ipv4Addr>,
        kind: AddressKind,
    ) -> BackendResult<IfAddr> {
        self.record(format!("request_address {pool} {address:?} {kind:?}"));
        let mut s = self.lock();
        let id = PoolId::new(pool);
        let p = s
            .ipam
            .pool(&id)
            .ok_or_else(|| ipam_error(IpamError::UnknownPool { id: id.clone() }))?
            .clone();
        let subnet = p.subnet();
        match kind {
            AddressKind::Gateway => {
                let gw = match (address, p.gateway()) {
                    (None, Some(gw)) => gw,
                    (Some(want), Some(gw)) if want == gw => gw,
                    (want, _) => {
                        // Move the gateway: only while no address is handed out.
                        if p.allocated().next().is_some() {
                            return Err(BackendError::conflict(format!(
                                "cannot move the gateway of pool {subnet}: it has addresses in use"
                            )));
                        }
                        let mut ipam = s.ipam.clone();
                        ipam.release_pool(&id).map_err(ipam_error)?;
                        ipam.request_pool(PoolRequest {
                            subnet: Some(subnet),
                            ip_range: p.ip_range(),
                            gateway: want,
                            reserved: p.reserved().collect(),
                            ..PoolRequest::default()
                        })
                        .map_err(ipam_error)?;
                        let gw = ipam.pool(&id).and_then(|p| p.gateway());
                        s.ipam = ipam;
                        gw.ok_or_else(|| BackendError::internal("the new pool has no gateway"))?
                    }
                };
                Ok(IfAddr::on(gw, subnet))
            }
            AddressKind::Endpoint => {
                let ip = s
                    .ipam
                    .request_address(&id, "docker", address)
                    .map_err(ipam_error)?;
                Ok(IfAddr::on(ip, subnet))
            }
        }
    }

    fn release_address(&self, pool: &str, address: Ipv4Addr) -> BackendResult<()> {
        self.record(format!("release_address {pool} {address}"));
        let mut s = self.lock();
        let id = PoolId::new(pool);
        let gateway = s.ipam.pool(&id).and_then(|p| p.gateway());
        if gateway == Some(address) {
            return Ok(());
        }
        s.ipam.release_address(&id, address).map_err(ipam_error)
    }
}
