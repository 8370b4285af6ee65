//! The `NetworkDriver` calls of libnetwork's remote driver protocol, each handler next to the
//! JSON shapes it reads and writes (field names as Docker spells them, PascalCase).
//!
//! The life of a container on a vswitch network, as Docker drives it: `CreateNetwork` once per
//! network; per container `CreateEndpoint` (address and MAC), `Join` (the veth whose free end
//! Docker moves into the container and renames `ethN`), `ProgramExternalConnectivity` (its
//! published ports), then `RevokeExternalConnectivity`, `Leave` and `DeleteEndpoint`; finally
//! `DeleteNetwork`. Go sends nil maps and slices as `null`; every such field reads `null` as empty.

use super::options::{parse_network_options, NetworkOptions, OPT_NETWORK, OPT_PEER, OPT_SCOPE};
use super::{
    backend_err, check_id, empty, ipam, ipv6_unsupported, nullable, parse, parse_cidr, to_json,
    vswitch_network_name, Addressing, Answer, DockerBackend, EndpointInfo, EndpointSpec, IfAddr,
    NetworkDriver, NetworkSpec, PortBinding, Protocol, Scope,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use switch::MacAddr;

// ---- GetCapabilities ----------------------------------------------------------------------

/// `/NetworkDriver.GetCapabilities` answer. `Scope` is where Docker keeps the network's state:
/// `local`, each host on its own (vswitch keeps its own state, and a swarm-scope vswitch network
/// is created on each host, as Weave's `weavemesh` driver does). `ConnectivityScope` is how far
/// its endpoints reach: `global`, since an overlay joins hosts.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct CapabilitiesResponse {
    scope: &'static str,
    connectivity_scope: &'static str,
}

/// Answers `GetCapabilities` (no request body).
pub fn get_capabilities() -> Answer {
    to_json(&CapabilitiesResponse {
        scope: "local",
        connectivity_scope: "global",
    })
}

// ---- CreateNetwork ------------------------------------------------------------------------

/// `/NetworkDriver.CreateNetwork` request: `{"NetworkID", "Options", "IPv4Data", "IPv6Data"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(default, deserialize_with = "nullable")]
    options: Map<String, Value>,
    #[serde(rename = "IPv4Data", default, deserialize_with = "nullable")]
    ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", default, deserialize_with = "nullable")]
    ipv6_data: Vec<IpamData>,
}

/// One pool of a network as Docker's IPAM gave it: `{"AddressSpace", "Pool": "CIDR", "Gateway":
/// "IP/LEN", "AuxAddresses": {"NAME": "IP/LEN"}}`; Docker leaves out what is unset.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamData {
    /// The address space the pool came from (ours or Docker's).
    #[serde(default, deserialize_with = "nullable")]
    pub address_space: String,
    /// The subnet.
    #[serde(default, deserialize_with = "nullable")]
    pub pool: String,
    /// The gateway, `IP/LEN`.
    #[serde(default, deserialize_with = "nullable")]
    pub gateway: String,
    /// Addresses set aside (`--aux-address NAME=IP`), each `IP/LEN`.
    #[serde(default, deserialize_with = "nullable")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// Answers `CreateNetwork`: reads the options and the pool, then creates the vswitch network.
pub fn create_network(backend: &dyn DockerBackend, body: &[u8]) -> Answer {
    let req: CreateNetworkRequest = parse("NetworkDriver.CreateNetwork", body)?;
    let spec = network_spec(&req)?;
    backend.create_network(&spec).map_err(backend_err)?;
    tracing::info!(
        docker_id = %spec.docker_id, name = %spec.name, driver = spec.driver.as_str(),
        "docker: network created"
    );
    empty()
}

/// The vswitch network a `CreateNetwork` request asks for.
fn network_spec(req: &CreateNetworkRequest) -> Result<NetworkSpec, String> {
    check_id("NetworkID", &req.network_id)?;
    let opts: NetworkOptions = parse_network_options(&req.options)?;
    if !req.ipv6_data.is_empty() || opts.ipv6 {
        return Err(ipv6_unsupported("the network has IPv6 enabled"));
    }
    let (name, driver) = match (opts.scope, opts.network) {
        (Scope::Local, None) => (vswitch_network_name(&req.network_id), opts.driver),
        (Scope::Local, Some(_)) => {
            return Err(format!(
                "-o {OPT_NETWORK} names a cluster network: give it with -o {OPT_SCOPE}=swarm"
            ))
        }
        (Scope::Swarm, None) => {
            return Err(format!(
                "a swarm-scope network needs -o {OPT_NETWORK}=NAME, the same on every host: \
                 Docker does not tell a network driver the network's name"
            ))
        }
        (Scope::Swarm, Some(_)) if opts.driver == NetworkDriver::Macvlan || opts.parent.is_some() => {
            return Err("a swarm-scope network is an overlay: it takes no macvlan parent".into())
        }
        (Scope::Swarm, Some(_)) if !opts.peers.is_empty() => {
            return Err(format!(
                "a swarm-scope network takes no -o {OPT_PEER}: its peers are the hosts with endpoints on it"
            ))
        }
        (Scope::Swarm, Some(name)) => (name, NetworkDriver::Overlay),
    };
    let mut spec = NetworkSpec {
        docker_id: req.network_id.clone(),
        name,
        driver,
        addressing: Addressing::Docker,
        subnet: None,
        gateway: None,
        reserved: Vec::new(),
        vni: opts.vni,
        peers: opts.peers,
        parent: opts.parent,
        mtu: opts.mtu,
        internal: opts.internal,
        enable_icc: opts.enable_icc,
        enable_ip_masquerade: opts.enable_ip_masquerade,
        host_binding_ipv4: opts.host_binding_ipv4,
        scope: opts.scope,
    };
    match req.ipv4_data.as_slice() {
        [] => {}
        [data] => {
            if ipam::is_ours(&data.address_space) {
                spec.addressing = Addressing::Vswitch;
            }
            if !data.pool.is_empty() {
                spec.subnet = Some(parse_cidr("subnet", &data.pool)?);
            }
            if !data.gateway.is_empty() {
                spec.gateway = Some(data.gateway.parse::<IfAddr>()?.ip());
            }
            for addr in data.aux_addresses.values() {
                spec.reserved.push(addr.parse::<IfAddr>()?.ip());
            }
        }
        more => {
            return Err(format!(
                "a vswitch network has one IPv4 subnet, not {} (give --subnet once)",
                more.len()
            ))
        }
    }
    if spec.scope == Scope::Swarm
        && (spec.addressing != Addressing::Vswitch || spec.subnet.is_none())
    {
        return Err(format!(
            "a swarm-scope network takes its addresses from the cluster: create it with \
             --ipam-driver set to this plugin and --subnet (the same on every host), so \
             containers on different hosts never share an address (network {})",
            spec.name
        ));
    }
    Ok(spec)
}

// ---- DeleteNetwork ------------------------------------------------------------------------

/// `/NetworkDriver.DeleteNetwork` request: `{"NetworkID"}`.
#[derive(Debug, Deserialize)]
struct DeleteNetworkRequest {
    #[serde(rename = "NetworkID")]
    network_id: String,
}

/// Answers `DeleteNetwork`.
pub fn delete_network(backend: &dyn DockerBackend, body: &[u8]) -> Answer {
    let req: DeleteNetworkRequest = parse("NetworkDriver.DeleteNetwork", body)?;
    check_id("NetworkID", &req.network_id)?;
    backend
        .delete_network(&req.network_id)
        .map_err(backend_err)?;
    tracing::info!(docker_id = %req.network_id, "docker: network deleted");
    empty()
}

// ---- AllocateNetwork / FreeNetwork --------------------------------------------------------

/// `/NetworkDriver.AllocateNetwork` request: `{"NetworkID", "Options", "IPv4Data", "IPv6Data"}`,
/// sent by a swarm manager for global-scope drivers only.
#[derive(Debug, Deserialize)]
struct AllocateNetworkRequest {
    #[serde(rename = "NetworkID")]
    network_id: String,
}

/// `AllocateNetwork` answer: driver options to store with the network (none).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct AllocateNetworkResponse {
    options: BTreeMap<String, String>,
}

/// Answers `AllocateNetwork`: nothing to allocate cluster-wide (the scope is local).
pub fn allocate_network(body: &[u8]) -> Answer {
    let req: AllocateNetworkRequest = parse("NetworkDriver.AllocateNetwork", body)?;
    check_id("NetworkID", &req.network_id)?;
    to_json(&AllocateNetworkResponse {
        options: BTreeMap::new(),
    })
}

/// Answers `FreeNetwork` (`{"NetworkID"}`): nothing was allocated.
pub fn free_network(body: &[u8]) -> Answer {
    let req: DeleteNetworkRequest = parse("NetworkDriver.FreeNetwork", body)?;
    check_id("NetworkID", &req.network_id)?;
    empty()
}

// ---- CreateEndpoint -----------------------------------------------------------------------

/// `/NetworkDriver.CreateEndpoint` request: `{"NetworkID", "EndpointID", "Interface":
/// {"Address", "AddressIPv6", "MacAddress"}, "Options"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default, deserialize_with = "nullable")]
    interface: EndpointInterface,
}

/// An endpoint's interface: `{"Address": "IP/LEN", "AddressIPv6", "MacAddress"}`, empty strings
/// for what is not set.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointInterface {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    address: String,
    #[serde(
        rename = "AddressIPv6",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    address_ipv6: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    mac_address: String,
}

/// `CreateEndpoint` answer: `{"Interface": {...}}` with only what Docker did not give (Docker
/// refuses an answer that changes an address or MAC it set), or `{}` when Docker gave all.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpointResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<EndpointInterface>,
}

/// Answers `CreateEndpoint`: reserves the address (unless Docker's IPAM gave one) and the MAC.
pub fn create_endpoint(backend: &dyn DockerBackend, body: &[u8]) -> Answer {
    let req: CreateEndpointRequest = parse("NetworkDriver.CreateEndpoint", body)?;
    check_id("NetworkID", &req.network_id)?;
    check_id("EndpointID", &req.endpoint_id)?;
    let given = &req.interface;
    if !given.address_ipv6.is_empty() {
        return Err(ipv6_unsupported(&format!(
            "endpoint address {}",
            given.address_ipv6
        )));
    }
    let address = match given.address.as_str() {
        "" => None,
        text => Some(text.parse::<IfAddr>()?),
    };
    let mac = match given.mac_address.as_str() {
        "" => None,
        text => Some(text.parse::<MacAddr>().map_err(|e| e.to_string())?),
    };
    let spec = EndpointSpec {
        network: req.network_id.clone(),
        endpoint: req.endpoint_id.clone(),
        address,
        mac,
    };
    let info: EndpointInfo = backend.create_endpoint(&spec).map_err(backend_err)?;
    let chosen = EndpointInterface {
        address: match (address, info.address) {
            (None, Some(a)) => a.to_string(),
            _ => String::new(),
        },
        address_ipv6: String::new(),
        mac_address: match mac {
            None => info.mac.to_string(),
            Some(_) => String::new(),
        },
    };
    let interface =
        (!chosen.address.is_empty() || !chosen.mac_address.is_empty()).then_some(chosen);
    tracing::info!(
        network = %req.network_id, endpoint = %req.endpoint_id, mac = %info.mac,
        address = ?info.address.map(|a| a.to_string()),
        "docker: endpoint created"
    );
    to_json(&CreateEndpointResponse { interface })
}

// ---- EndpointOperInfo ---------------------------------------------------------------------

/// `/NetworkDriver.EndpointOperInfo` request (and those of `DeleteEndpoint` and `Leave`):
/// `{"NetworkID", "EndpointID"}`.
#[derive(Debug, Deserialize)]
struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
}

impl EndpointRequest {
    /// Reads and checks the ids.
    fn parse(call: &str, body: &[u8]) -> Result<EndpointRequest, String> {
        let req: EndpointRequest = parse(call, body)?;
        check_id("NetworkID", &req.network_id)?;
        check_id("EndpointID", &req.endpoint_id)?;
        Ok(req)
    }
}

/// `EndpointOperInfo` answer: `{"Value": {...}}`, string values only (Docker reads
/// `MacAddress` as a string), shown by `docker inspect` as the endpoint's driver info.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointInfoResponse {
    value: BTreeMap<&'static str, String>,
}

/// Answers `EndpointOperInfo`: the endpoint's MAC, address and switch port.
pub fn endpoint_oper_info(backend: &dyn DockerBackend, body: &[u8]) -> Answer {
    let req = EndpointRequest::parse("NetworkDriver.EndpointOperInfo", body)?;
    let info = backend
        .endpoint_info(&req.network_id, &req.endpoint_id)
        .map_err(backend_err)?;
    let mut value = BTreeMap::new();
    value.insert("MacAddress", info.mac.to_string());
    if let Some(a) = info.address {
        value.insert("vswitch.address", a.to_string());
    }
    if let Some(port) = info.port {
        value.insert("vswitch.port", port);
    }
    to_json(&EndpointInfoResponse { value })
}

// ---- DeleteEndpoint -----------------------------------------------------------------------

/// Answers `DeleteEndpoint` (`{"NetworkID", "EndpointID"}`).
pub fn delete_endpoint(backend: &dyn DockerBackend, body: &[u8]) -> Answer {
    let req = EndpointRequest::parse("NetworkDriver.DeleteEndpoint", body)?;
    backend
        .delete_endpoint(&req.network_id, &req.endpoint_id)
        .map_err(backend_err)?;
    tracing::info!(network = %req.network_id, endpoint = %req.endpoint_id, "docker: endpoint deleted");
    empty()
}

// ---- Join ---------------------------------------------------------------------------------

/// `/NetworkDriver.Join` request: `{"NetworkID", "EndpointID", "SandboxKey": "/var/run/docker/
/// netns/…", "Options"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JoinRequest {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default, deserialize_with = "nullable")]
    sandbox_key: String,
}

/// `Join` answer: `{"InterfaceName": {"SrcName", "DstPrefix"}, "Gateway": "IP",
/// "StaticRoutes": [...], "DisableGatewayService": true}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct JoinResponse {
    interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty")]
    gateway: String,
    static_routes: Vec<StaticRouteJson>,
    /// Always true: vswitch gives its networks their way out itself, so Docker must never
    /// attach the container to its `docker_gwbridge` network for one.
    disable_gateway_service: bool,
}

/// The interface Docker moves into the sandbox: `SrcName` in the daemon's namespace, renamed
/// `DstPrefix` and a number (`eth0`, `eth1`, …) inside.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct InterfaceName {
    src_name: String,
    dst_prefix: &'static str,
}

/// A route for the sandbox: `{"Destination": "CIDR", "RouteType": 0 (via NextHop) | 1 (on
/// link), "NextHop": "IP"}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct StaticRouteJson {
    destination: String,
    route_type: u8,
    #[serde(skip_serializing_if = "String::is_empty")]
    next_hop: String,
}

/// libnetwork's route types (`types.NEXTHOP`, `types.CONNECTED`).
const ROUTE_NEXTHOP: u8 = 0;
const ROUTE_CONNECTED: u8 = 1;

/// Answers `Join`: the backend makes the veth pair and attaches its host end to the switch.
pub fn join(backend: &dyn DockerBackend, body: &[u8]) -> Answer {
    let req: JoinRequest = parse("NetworkDriver.Join", body)?;
    check_id("NetworkID", &req.network_id)?;
    check_id("EndpointID", &req.endpoint_id)?;
    let info = backend
        .join(&req.network_id, &req.endpoint_id, &req.sandbox_key)
        .map_err(backend_err)?;
    let static_routes = info
        .static_routes
        .iter()
        .map(|r| StaticRouteJson {
            destination: r.destination.to_string(),
            route_type: if r.next_hop.is_some() {
                ROUTE_NEXTHOP
            } else {
                ROUTE_CONNECTED
            },
            next_hop: r.next_hop.map(|h| h.to_string()).unwrap_or_default(),
        })
        .collect();
    tracing::info!(
        network = %req.network_id, endpoint = %req.endpoint_id, ifname = %info.ifname,
        sandbox = %req.sandbox_key, "docker: endpoint joined"
    );
    to_json(&JoinResponse {
        interface_name: InterfaceName {
            src_name: info.ifname,
            dst_prefix: "eth",
        },
        gateway: info.gateway.map(|g| g.to_string()).unwrap_or_default(),
        static_routes,
        disable_gateway_service: true,
    })
}

// ---- Leave --------------------------------------------------------------------------------

/// Answers `Leave` (`{"NetworkID", "EndpointID"}`).
pub fn leave(backend: &dyn DockerBackend, body: &[u8]) -> Answer {
    let req = EndpointRequest::parse("NetworkDriver.Leave", body)?;
    backend
        .leave(&req.network_id, &req.endpoint_id)
        .map_err(backend_err)?;
    tracing::info!(network = %req.network_id, endpoint = %req.endpoint_id, "docker: endpoint left");
    empty()
}

// ---- DiscoverNew / DiscoverDelete ---------------------------------------------------------

/// `/NetworkDriver.DiscoverNew` and `DiscoverDelete` request: `{"DiscoveryType": 1 (node),
/// "DiscoveryData": {...}}`, a swarm node appearing or leaving.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DiscoveryNotification {
    discovery_type: i64,
    #[serde(default)]
    discovery_data: Value,
}

/// Answers `DiscoverNew`/`DiscoverDelete`: noted; vswitch learns its peers from its own
/// configuration or its cluster store, not from Docker's swarm.
pub fn discover(body: &[u8]) -> Answer {
    let n: DiscoveryNotification = parse("NetworkDriver.DiscoverNew", body)?;
    tracing::debug!(kind = n.discovery_type, data = %n.discovery_data, "docker: discovery notice");
    empty()
}

// ---- ProgramExternalConnectivity / RevokeExternalConnectivity -----------------------------

/// `/NetworkDriver.ProgramExternalConnectivity` request: `{"NetworkID", "EndpointID",
/// "Options": {"com.docker.network.portmap": [PortBinding...],
/// "com.docker.network.endpoint.exposedports": [...]}}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProgramExternalConnectivityRequest {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default, deserialize_with = "nullable")]
    options: Map<String, Value>,
}

/// The option key of the published ports.
pub const PORT_MAP: &str = "com.docker.network.portmap";

/// A published port as Docker sends it (libnetwork `types.PortBinding`): `{"Proto": 6,
/// "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PortBindingJson {
    proto: u8,
    #[serde(default)]
    port: u16,
    #[serde(rename = "HostIP", default, deserialize_with = "nullable")]
    host_ip: String,
    #[serde(default)]
    host_port: u16,
    #[serde(default)]
    host_port_end: u16,
}

/// Reads the published ports of a `ProgramExternalConnectivity` request. A binding to the IPv6
/// wildcard `::` (which Docker adds next to the IPv4 one) is left out: vswitch has no IPv6 yet.
fn port_bindings(options: &Map<String, Value>) -> Result<Vec<PortBinding>, String> {
    let raw = match options.get(PORT_MAP) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(v) => v.clone(),
    };
    let raw: Vec<PortBindingJson> =
        serde_json::from_value(raw).map_err(|e| format!("malformed {PORT_MAP}: {e}"))?;
    let mut out = Vec::new();
    for b in raw {
        let protocol = match b.proto {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            132 => Protocol::Sctp,
            other => {
                return Err(format!(
                    "cannot publish a port of IP protocol {other}: only tcp, udp and sctp"
                ))
            }
        };
        if b.port == 0 {
            return Err("cannot publish container port 0".into());
        }
        let host_ip = match b.host_ip.as_str() {
            "" | "0.0.0.0" => None,
            "::" => continue,
            text => Some(super::parse_ipv4("host address of a published port", text)?),
        };
        if b.host_port_end != 0 && b.host_port_end < b.host_port {
            return Err(format!(
                "invalid host port range {}-{}: the end is below the start",
                b.host_port, b.host_port_end
            ));
        }
        out.push(PortBinding {
            protocol,
            container_port: b.port,
            host_ip,
            host_port: b.host_port,
            host_port_end: b.host_port_end,
        });
    }
    Ok(out)
}

/// Answers `ProgramExternalConnectivity`: hands the published ports to the backend (the
/// firewall makes them real).
pub fn program_external_connectivity(backend: &dyn DockerBackend, body: &[u8]) -> Answer {
    let req: ProgramExternalConnectivityRequest =
        parse("NetworkDriver.ProgramExternalConnectivity", body)?;
    check_id("NetworkID", &req.network_id)?;
    check_id("EndpointID", &req.endpoint_id)?;
    let bindings = port_bindings(&req.options)?;
    backend
        .publish(&req.network_id, &req.endpoint_id, &bindings)
        .map_err(backend_err)?;
    tracing::info!(
        network = %req.network_id, endpoint = %req.endpoint_id, ports = bindings.len(),
        "docker: external connectivity programmed"
    );
    empty()
}

/// Answers `RevokeExternalConnectivity` (`{"NetworkID", "EndpointID"}`).
pub fn revoke_external_connectivity(backend: &dyn DockerBackend, body: &[u8]) -> Answer {
    let req = EndpointRequest::parse("NetworkDriver.RevokeExternalConnectivity", body)?;
    backend
        .unpublish(&req.network_id, &req.endpoint_id)
        .map_err(backend_err)?;
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::super::memory::MemoryBackend;
    use super::super::{handle, NetworkDriver, Reply, Scope};
    use super::*;
    use serde_json::json;

    const NET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const NET2: &str = "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const EP: &str = "e123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const EP2: &str = "f123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn call(b: &MemoryBackend, call: &str, body: Value) -> Reply {
        handle(b, call, body.to_string().as_bytes())
    }

    fn ok(b: &MemoryBackend, c: &str, body: Value) -> Value {
        let r = call(b, c, body);
        assert_eq!(r.status, 200, "{c}: {:?}", r.body);
        assert!(r.error().is_none(), "{c}: {:?}", r.body);
        r.body
    }

    fn refused(b: &MemoryBackend, c: &str, body: Value, want: &str) {
        let before = b.snapshot();
        let r = call(b, c, body);
        assert_eq!(r.status, 500, "{c}: {:?}", r.body);
        let e = r
            .error()
            .unwrap_or_else(|| panic!("no Err in {:?}", r.body));
        assert!(e.contains(want), "{c}: {e:?} lacks {want:?}");
        assert_eq!(
            b.snapshot(),
            before,
            "{c} changed the backend although refused"
        );
    }

    /// Docker's CreateNetwork for a network on Docker's default IPAM.
    fn create_body(id: &str, subnet: &str, gw: &str, generic: Value) -> Value {
        json!({
            "NetworkID": id,
            "Options": {
                "com.docker.network.enable_ipv6": false,
                "com.docker.network.generic": generic,
            },
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": subnet, "Gateway": gw}],
            "IPv6Data": [],
        })
    }

    fn network(b: &MemoryBackend) {
        ok(
            b,
            "NetworkDriver.CreateNetwork",
            create_body(NET, "172.30.0.0/16", "172.30.0.1/16", json!({})),
        );
    }

    fn endpoint(b: &MemoryBackend, ep: &str, addr: &str) -> Value {
        ok(
            b,
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET, "EndpointID": ep, "Interface": {"Address": addr, "AddressIPv6": "", "MacAddress": ""}, "Options": {}}),
        )
    }

    #[test]
    fn capabilities_are_local_with_global_connectivity() {
        let b = MemoryBackend::new();
        let body = ok(&b, "NetworkDriver.GetCapabilities", Value::Null);
        assert_eq!(
            body,
            json!({"Scope": "local", "ConnectivityScope": "global"})
        );
    }

    #[test]
    fn create_network_builds_the_spec() {
        let b = MemoryBackend::new();
        ok(
            &b,
            "NetworkDriver.CreateNetwork",
            json!({
                "NetworkID": NET,
                "Options": {
                    "com.docker.network.enable_ipv6": false,
                    "com.docker.network.internal": true,
                    "com.docker.network.generic": {
                        "vswitch.driver": "overlay", "vswitch.vni": "42",
                        "vswitch.peer": "192.0.2.2,192.0.2.3",
                        "com.docker.network.driver.mtu": "1450",
                    },
                },
                "IPv4Data": [{
                    "AddressSpace": "LocalDefault", "Pool": "10.9.0.0/24", "Gateway": "10.9.0.1/24",
                    "AuxAddresses": {"router": "10.9.0.250/24"},
                }],
                "IPv6Data": null,
            }),
        );
        let spec = b.network(NET).expect("network created");
        assert_eq!(spec.name, format!("docker-{}", &NET[..12]));
        assert_eq!(spec.driver, NetworkDriver::Overlay);
        assert_eq!(spec.addressing, Addressing::Docker);
        assert_eq!(spec.subnet.unwrap().to_string(), "10.9.0.0/24");
        assert_eq!(spec.gateway.unwrap().to_string(), "10.9.0.1");
        assert_eq!(
            spec.reserved,
            vec!["10.9.0.250".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert_eq!(spec.vni, Some(42));
        assert_eq!(spec.peers.len(), 2);
        assert_eq!(spec.mtu, Some(1450));
        assert!(spec.internal);
        assert_eq!(spec.scope, Scope::Local);
    }

    /// `-o vswitch.scope=swarm -o vswitch.network=NAME` on our IPAM: the cluster network
    /// NAME, an overlay; anything less is refused with what to give.
    #[test]
    fn a_swarm_network_is_named_by_its_cluster_network() {
        let b = MemoryBackend::new();
        let c = "NetworkDriver.CreateNetwork";
        let ours = |generic: Value| {
            let mut body = create_body(NET, "10.9.0.0/24", "10.9.0.1/24", generic);
            body["IPv4Data"][0]["AddressSpace"] = json!(ipam::LOCAL_ADDRESS_SPACE);
            body
        };
        refused(
            &b,
            c,
            ours(json!({"vswitch.scope": "swarm"})),
            "needs -o vswitch.network=NAME",
        );
        refused(
            &b,
            c,
            ours(json!({"vswitch.network": "blue"})),
            "-o vswitch.scope=swarm",
        );
        refused(
            &b,
            c,
            ours(
                json!({"vswitch.scope": "swarm", "vswitch.network": "blue", "vswitch.peer": "192.0.2.2"}),
            ),
            "takes no -o vswitch.peer",
        );
        refused(
            &b,
            c,
            ours(json!({"vswitch.scope": "swarm", "vswitch.network": "a/b"})),
            "invalid network name",
        );
        refused(
            &b,
            c,
            create_body(
                NET,
                "10.9.0.0/24",
                "10.9.0.1/24",
                json!({"vswitch.scope": "swarm", "vswitch.network": "blue"}),
            ),
            "--ipam-driver",
        );
        ok(
            &b,
            "IpamDriver.RequestPool",
            json!({"AddressSpace": ipam::LOCAL_ADDRESS_SPACE, "Pool": "10.9.0.0/24", "Options": {}, "V6": false}),
        );
        ok(
            &b,
            c,
            ours(json!({"vswitch.scope": "swarm", "vswitch.network": "blue", "vswitch.vni": "77"})),
        );
        let spec = b.network(NET).expect("network created");
        assert_eq!(spec.name, "blue");
        assert_eq!(spec.driver, NetworkDriver::Overlay);
        assert_eq!(spec.scope, Scope::Swarm);
        assert_eq!(spec.addressing, Addressing::Vswitch);
        assert_eq!(spec.vni, Some(77));
    }

    #[test]
    fn create_network_is_idempotent_and_conflicts_on_change() {
        let b = MemoryBackend::new();
        network(&b);
        network(&b); // dockerd replays its networks on restart
        refused(
            &b,
            "NetworkDriver.CreateNetwork",
            create_body(
                NET,
                "172.30.0.0/16",
                "172.30.0.1/16",
                json!({"vswitch.driver": "macvlan", "parent": "eth9"}),
            ),
            "already exists",
        );
    }

    #[test]
    fn create_network_refusals() {
        let b = MemoryBackend::new();
        let c = "NetworkDriver.CreateNetwork";
        refused(
            &b,
            c,
            json!("not an object"),
            "malformed NetworkDriver.CreateNetwork",
        );
        refused(&b, c, json!({"Options": {}}), "missing field `NetworkID`");
        refused(
            &b,
            c,
            create_body("not/an/id", "10.1.0.0/24", "", json!({})),
            "invalid NetworkID",
        );
        refused(
            &b,
            c,
            create_body(
                NET,
                "10.1.0.0/24",
                "10.1.0.1/24",
                json!({"vswitch.bogus": "1"}),
            ),
            "unknown option -o vswitch.bogus",
        );
        let mut v6 = create_body(NET, "10.1.0.0/24", "10.1.0.1/24", json!({}));
        v6["IPv6Data"] =
            json!([{"AddressSpace": "LocalDefault", "Pool": "fd00::/64", "Gateway": "fd00::1/64"}]);
        refused(&b, c, v6, "IPv6 is not supported");
        let mut v6flag = create_body(NET, "10.1.0.0/24", "10.1.0.1/24", json!({}));
        v6flag["Options"]["com.docker.network.enable_ipv6"] = json!(true);
        refused(&b, c, v6flag, "IPv6 is not supported");
        refused(
            &b,
            c,
            create_body(NET, "10.1.0.1/24", "", json!({})),
            "host bits are set",
        );
        refused(
            &b,
            c,
            create_body(NET, "10.1.0.0/24", "10.1.0.1", json!({})),
            "ADDRESS/PREFIX",
        );
        let mut two = create_body(NET, "10.1.0.0/24", "10.1.0.1/24", json!({}));
        two["IPv4Data"] = json!([{"Pool": "10.1.0.0/24"}, {"Pool": "10.2.0.0/24"}]);
        refused(&b, c, two, "one IPv4 subnet");
        // The backend's refusal (overlap with an existing network) comes through as it is.
        network(&b);
        refused(
            &b,
            c,
            create_body(NET2, "172.30.1.0/24", "172.30.1.1/24", json!({})),
            "overlap",
        );
    }

    #[test]
    fn delete_network() {
        let b = MemoryBackend::new();
        network(&b);
        refused(
            &b,
            "NetworkDriver.DeleteNetwork",
            json!({"NetworkID": NET2}),
            "no vswitch network",
        );
        refused(
            &b,
            "NetworkDriver.DeleteNetwork",
            json!({}),
            "missing field",
        );
        ok(&b, "NetworkDriver.DeleteNetwork", json!({"NetworkID": NET}));
        assert!(b.network(NET).is_none());
    }

    #[test]
    fn create_endpoint_answers_only_what_docker_did_not_give() {
        let b = MemoryBackend::new();
        network(&b);
        // Docker's IPAM gave the address: we answer the MAC only.
        let body = endpoint(&b, EP, "172.30.0.5/16");
        assert_eq!(
            body,
            json!({"Interface": {"MacAddress": "02:42:ac:1e:00:05"}})
        );
        // Docker gave address and MAC: nothing to answer.
        let body = ok(
            &b,
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET, "EndpointID": EP2, "Interface": {"Address": "172.30.0.6/16", "MacAddress": "02:00:00:00:00:01"}}),
        );
        assert_eq!(body, json!({}));
    }

    #[test]
    fn create_endpoint_without_address_gets_ours() {
        let b = MemoryBackend::new();
        network(&b);
        let body = ok(
            &b,
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET, "EndpointID": EP, "Interface": null, "Options": null}),
        );
        assert_eq!(
            body,
            json!({"Interface": {"Address": "172.30.0.2/16", "MacAddress": "02:42:ac:1e:00:02"}})
        );
    }

    #[test]
    fn create_endpoint_refusals() {
        let b = MemoryBackend::new();
        network(&b);
        let c = "NetworkDriver.CreateEndpoint";
        refused(
            &b,
            c,
            json!({"NetworkID": NET2, "EndpointID": EP, "Interface": {"Address": "10.0.0.2/24"}}),
            "no vswitch network",
        );
        refused(
            &b,
            c,
            json!({"NetworkID": NET, "EndpointID": EP, "Interface": {"AddressIPv6": "fd00::2/64"}}),
            "IPv6 is not supported",
        );
        refused(
            &b,
            c,
            json!({"NetworkID": NET, "EndpointID": EP, "Interface": {"Address": "172.30.0.2"}}),
            "ADDRESS/PREFIX",
        );
        refused(
            &b,
            c,
            json!({"NetworkID": NET, "EndpointID": EP, "Interface": {"MacAddress": "zz"}}),
            "invalid MAC",
        );
        refused(
            &b,
            c,
            json!({"NetworkID": NET, "EndpointID": ""}),
            "invalid EndpointID",
        );
        refused(
            &b,
            c,
            json!({"NetworkID": NET, "EndpointID": EP, "Interface": {"Address": "10.99.0.2/24"}}),
            "outside",
        );
    }

    #[test]
    fn endpoint_oper_info() {
        let b = MemoryBackend::new();
        network(&b);
        endpoint(&b, EP, "172.30.0.5/16");
        let body = ok(
            &b,
            "NetworkDriver.EndpointOperInfo",
            json!({"NetworkID": NET, "EndpointID": EP}),
        );
        assert_eq!(body["Value"]["MacAddress"], "02:42:ac:1e:00:05");
        assert_eq!(body["Value"]["vswitch.address"], "172.30.0.5/16");
        refused(
            &b,
            "NetworkDriver.EndpointOperInfo",
            json!({"NetworkID": NET, "EndpointID": EP2}),
            "no endpoint",
        );
    }

    #[test]
    fn join_and_leave() {
        let b = MemoryBackend::new();
        network(&b);
        endpoint(&b, EP, "172.30.0.5/16");
        let body = ok(
            &b,
            "NetworkDriver.Join",
            json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/var/run/docker/netns/abc", "Options": {}}),
        );
        let src = body["InterfaceName"]["SrcName"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(!src.is_empty() && src.len() < 16, "{src}");
        assert_eq!(body["InterfaceName"]["DstPrefix"], "eth");
        assert_eq!(body["Gateway"], "172.30.0.1");
        assert_eq!(body["DisableGatewayService"], true);
        assert_eq!(body["StaticRoutes"], json!([]));
        // Joined twice is refused, and changes nothing.
        refused(
            &b,
            "NetworkDriver.Join",
            json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x"}),
            "already joined",
        );
        let info = ok(
            &b,
            "NetworkDriver.EndpointOperInfo",
            json!({"NetworkID": NET, "EndpointID": EP}),
        );
        assert_eq!(
            info["Value"]["vswitch.port"],
            json!(b.endpoint_port(NET, EP).unwrap())
        );
        ok(
            &b,
            "NetworkDriver.Leave",
            json!({"NetworkID": NET, "EndpointID": EP}),
        );
        refused(
            &b,
            "NetworkDriver.Leave",
            json!({"NetworkID": NET, "EndpointID": EP}),
            "not joined",
        );
        refused(
            &b,
            "NetworkDriver.Join",
            json!({"NetworkID": NET, "EndpointID": EP2, "SandboxKey": "/x"}),
            "no endpoint",
        );
        refused(
            &b,
            "NetworkDriver.Join",
            json!({"NetworkID": 7}),
            "malformed",
        );
    }

    #[test]
    fn join_reports_routes_and_no_gateway() {
        let b = MemoryBackend::new();
        ok(
            &b,
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": NET, "Options": {"com.docker.network.internal": true}, "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.7.0.0/24", "Gateway": "10.7.0.1/24"}]}),
        );
        endpoint(&b, EP, "10.7.0.9/24");
        b.set_static_routes(vec![super::super::StaticRoute {
            destination: "10.8.0.0/16".parse().unwrap(),
            next_hop: Some("10.7.0.254".parse().unwrap()),
        }]);
        let body = ok(
            &b,
            "NetworkDriver.Join",
            json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x"}),
        );
        // The in-memory backend gives internal networks no gateway, as Docker's bridge does.
        assert!(body.get("Gateway").is_none(), "{body}");
        assert_eq!(
            body["StaticRoutes"],
            json!([{"Destination": "10.8.0.0/16", "RouteType": 0, "NextHop": "10.7.0.254"}])
        );
    }

    #[test]
    fn delete_endpoint() {
        let b = MemoryBackend::new();
        network(&b);
        endpoint(&b, EP, "172.30.0.5/16");
        refused(
            &b,
            "NetworkDriver.DeleteNetwork",
            json!({"NetworkID": NET}),
            "endpoints",
        );
        ok(
            &b,
            "NetworkDriver.DeleteEndpoint",
            json!({"NetworkID": NET, "EndpointID": EP}),
        );
        refused(
            &b,
            "NetworkDriver.DeleteEndpoint",
            json!({"NetworkID": NET, "EndpointID": EP}),
            "no endpoint",
        );
        ok(&b, "NetworkDriver.DeleteNetwork", json!({"NetworkID": NET}));
    }

    #[test]
    fn published_ports_pass_through() {
        let b = MemoryBackend::new();
        network(&b);
        endpoint(&b, EP, "172.30.0.5/16");
        let c = "NetworkDriver.ProgramExternalConnectivity";
        ok(
            &b,
            c,
            json!({"NetworkID": NET, "EndpointID": EP, "Options": {
                "com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}],
                "com.docker.network.portmap": [
                    {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
                    {"Proto": 6, "IP": "", "Port": 80, "HostIP": "::", "HostPort": 8080, "HostPortEnd": 8080},
                    {"Proto": 17, "IP": "", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 0, "HostPortEnd": 0},
                ],
            }}),
        );
        let bound = b.bindings(NET, EP);
        assert_eq!(
            bound,
            vec![
                PortBinding {
                    protocol: Protocol::Tcp,
                    container_port: 80,
                    host_ip: None,
                    host_port: 8080,
                    host_port_end: 8080
                },
                PortBinding {
                    protocol: Protocol::Udp,
                    container_port: 53,
                    host_ip: Some(std::net::Ipv4Addr::LOCALHOST),
                    host_port: 0,
                    host_port_end: 0
                },
            ]
        );
        refused(
            &b,
            c,
            json!({"NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.portmap": [{"Proto": 1, "Port": 1}]}}),
            "IP protocol 1",
        );
        refused(
            &b,
            c,
            json!({"NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.portmap": [{"Proto": 6, "Port": 0}]}}),
            "port 0",
        );
        refused(
            &b,
            c,
            json!({"NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostIP": "2001:db8::1", "HostPort": 80}]}}),
            "IPv6 is not supported",
        );
        refused(
            &b,
            c,
            json!({"NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostPort": 90, "HostPortEnd": 85}]}}),
            "below the start",
        );
        refused(
            &b,
            c,
            json!({"NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.portmap": "80:80"}}),
            "malformed com.docker.network.portmap",
        );
        refused(
            &b,
            c,
            json!({"NetworkID": NET, "EndpointID": EP2, "Options": {}}),
            "no endpoint",
        );
        ok(
            &b,
            "NetworkDriver.RevokeExternalConnectivity",
            json!({"NetworkID": NET, "EndpointID": EP}),
        );
        assert!(b.bindings(NET, EP).is_empty());
    }

    #[test]
    fn discovery_and_swarm_allocation_are_accepted() {
        let b = MemoryBackend::new();
        ok(
            &b,
            "NetworkDriver.DiscoverNew",
            json!({"DiscoveryType": 1, "DiscoveryData": {"Address": "192.0.2.9", "self": false}}),
        );
        ok(
            &b,
            "NetworkDriver.DiscoverDelete",
            json!({"DiscoveryType": 1, "DiscoveryData": null}),
        );
        let body = ok(
            &b,
            "NetworkDriver.AllocateNetwork",
            json!({"NetworkID": NET, "Options": {}, "IPv4Data": [], "IPv6Data": []}),
        );
        assert_eq!(body, json!({"Options": {}}));
        ok(&b, "NetworkDriver.FreeNetwork", json!({"NetworkID": NET}));
        refused(
            &b,
            "NetworkDriver.DiscoverNew",
            json!({"DiscoveryData": {}}),
            "missing field `DiscoveryType`",
        );
        refused(
            &b,
            "NetworkDriver.FreeNetwork",
            json!({}),
            "missing field `NetworkID`",
        );
        assert!(
            b.calls().is_empty(),
            "discovery and allocation must not reach the backend"
        );
    }

    #[test]
    fn truncated_and_garbage_bodies_are_refused() {
        let b = MemoryBackend::new();
        for c in [
            "NetworkDriver.CreateNetwork",
            "NetworkDriver.DeleteNetwork",
            "NetworkDriver.CreateEndpoint",
            "NetworkDriver.EndpointOperInfo",
            "NetworkDriver.DeleteEndpoint",
            "NetworkDriver.Join",
            "NetworkDriver.Leave",
            "NetworkDriver.ProgramExternalConnectivity",
            "NetworkDriver.RevokeExternalConnectivity",
        ] {
            for body in [&b"{\"NetworkID\": \"ab"[..], b"", b"\xff\xfe", b"[]"] {
                let r = handle(&b, c, body);
                assert_eq!(r.status, 500, "{c} {body:?}");
                assert!(
                    r.error().unwrap().contains("malformed"),
                    "{c}: {:?}",
                    r.body
                );
            }
        }
        assert!(b.calls().is_empty());
    }
}
