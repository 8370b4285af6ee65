//! The Docker plugin endpoint: libnetwork's remote network driver and remote IPAM driver, as
//! JSON over HTTP/1.1 on a unix socket, translated into calls on a [`DockerBackend`].
//!
//! Docker finds a plugin by its socket file, `/run/docker/plugins/NAME.sock`, and names the
//! driver after the file: `docker network create -d NAME --ipam-driver NAME …`. Every call is a
//! `POST /Interface.Method` with a JSON body and a JSON answer; a failure is HTTP 500 with
//! `{"Err": "…"}`, which Docker's plugin client shows to the user as it is.
//!
//! The pieces, in the shape of libnetwork's `drivers/remote` (one file of shapes, one handler per
//! call), with each request and response shape kept next to its handler:
//! - [`network`]: the `NetworkDriver` calls (networks, endpoints, join and leave, published ports);
//! - [`ipam`]: the `IpamDriver` calls (address spaces, pools, addresses);
//! - [`options`]: the `-o` options of `docker network create`, read into a [`NetworkSpec`];
//! - [`server`]: [`DockerPlugin`], the socket and the HTTP server thread (never the datapath);
//! - [`backend`]: [`DaemonBackend`], the real backend: the daemon itself;
//! - [`memory`]: [`memory::MemoryBackend`], an in-memory backend for tests.
//!
//! A swarm-scope network (`-o vswitch.scope=swarm -o vswitch.network=NAME --ipam-driver
//! PLUGIN --subnet S`, the same on every host) is the cluster network NAME: Docker sees a
//! local-scope network on each host (no Docker swarm, as with Weave's `weavemesh`), the
//! daemon joins the cluster network in etcd, and this plugin's IPAM driver hands out the
//! cluster's addresses for it. `DeleteNetwork` on one host only leaves it (see `swarm.rs`).
//!
//! The handlers only translate: Docker's JSON in, one backend call, Docker's JSON out. What a
//! network, an endpoint or a pool *is* stays with the daemon, behind [`DockerBackend`], in
//! vswitch's terms. A request that cannot be read, names an unknown network or endpoint, or asks
//! for what vswitch cannot do (IPv6, an unknown option) is refused before the backend is called,
//! or by the backend before it changes anything.

pub mod backend;
pub mod ipam;
pub mod memory;
pub mod network;
pub mod options;
pub mod server;

pub use backend::DaemonBackend;
pub use server::DockerPlugin;

use ::ipam::Cidr;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use switch::MacAddr;

/// The media type of the plugin protocol, sent as the answers' `Content-Type`.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// What kind of failure a backend reports, as the daemon's API errors classify them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The network, endpoint, pool or address named does not exist.
    NotFound,
    /// It exists already, is in use, or overlaps something that exists.
    Conflict,
    /// The request is not valid (a bad value, a combination that makes no sense).
    Invalid,
    /// Something failed inside the daemon (netlink, the state store).
    Internal,
}

impl ErrorKind {
    /// The kind's name, as the daemon's API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Internal => "internal",
        }
    }
}

/// A failed backend call: its kind and the message the Docker user sees. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The message, complete enough to be shown as it is.
    pub message: String,
}

impl BackendError {
    /// A failure of kind `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> BackendError {
        BackendError {
            kind,
            message: message.into(),
        }
    }

    /// Something named does not exist.
    pub fn not_found(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::NotFound, message)
    }

    /// Something exists already or is in use.
    pub fn conflict(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::Conflict, message)
    }

    /// The request is not valid.
    pub fn invalid(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::Invalid, message)
    }

    /// Something failed inside the daemon.
    pub fn internal(message: impl Into<String>) -> BackendError {
        BackendError::new(ErrorKind::Internal, message)
    }
}

/// The result of a backend call.
pub type BackendResult<T> = Result<T, BackendError>;

/// An IPv4 interface address: the address and the prefix length of its subnet, `172.18.0.2/16`
/// (Docker's form for endpoint and gateway addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfAddr {
    ip: Ipv4Addr,
    subnet: Cidr,
}

impl IfAddr {
    /// The address `ip` on a subnet of `prefix_len` bits; refuses a prefix over 32.
    pub fn new(ip: Ipv4Addr, prefix_len: u8) -> Result<IfAddr, String> {
        let subnet = Cidr::containing(ip, prefix_len).map_err(|e| e.to_string())?;
        Ok(IfAddr { ip, subnet })
    }

    /// The address `ip` on `subnet` (which should contain it).
    pub fn on(ip: Ipv4Addr, subnet: Cidr) -> IfAddr {
        IfAddr { ip, subnet }
    }

    /// The address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The prefix length of its subnet.
    pub fn prefix_len(&self) -> u8 {
        self.subnet.prefix_len()
    }

    /// The subnet the address is on.
    pub fn subnet(&self) -> Cidr {
        self.subnet
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix_len())
    }
}

impl FromStr for IfAddr {
    type Err = String;

    /// Reads `A.B.C.D/LEN`; an IPv6 address is refused with a message saying IPv6 is not supported.
    fn from_str(s: &str) -> Result<IfAddr, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid address {s:?}: expected ADDRESS/PREFIX"))?;
        if ip.contains(':') {
            return Err(ipv6_unsupported(s));
        }
        let ip = ip
            .parse()
            .map_err(|_| format!("invalid address {s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix_len =
            len.parse::<u8>().ok().filter(|l| *l <= 32).ok_or_else(|| {
                format!("invalid address {s:?}: the prefix length must be 0 to 32")
            })?;
        IfAddr::new(ip, prefix_len)
    }
}

/// The message for any IPv6 data while vswitch has no IPv6.
pub fn ipv6_unsupported(what: &str) -> String {
    format!("IPv6 is not supported by vswitch yet ({what}); create the network without --ipv6")
}

/// Reads an IPv4 address, or says that IPv6 is not supported.
pub fn parse_ipv4(what: &str, s: &str) -> Result<Ipv4Addr, String> {
    if s.contains(':') {
        return Err(ipv6_unsupported(&format!("{what} {s}")));
    }
    s.parse()
        .map_err(|_| format!("invalid {what} {s:?}: not an IPv4 address"))
}

/// Reads a subnet `A.B.C.D/LEN`, or says that IPv6 is not supported.
pub fn parse_cidr(what: &str, s: &str) -> Result<Cidr, String> {
    if s.contains(':') {
        return Err(ipv6_unsupported(&format!("{what} {s}")));
    }
    s.parse::<Cidr>()
        .map_err(|e| format!("invalid {what}: {e}"))
}

/// A vswitch network driver that a Docker network can use (`-o vswitch.driver=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkDriver {
    /// A switch on this host, with its gateway on a TAP in the daemon's namespace.
    #[default]
    Bridge,
    /// A VXLAN segment joining several hosts.
    Overlay,
    /// A switch whose uplink is a parent interface of the host.
    Macvlan,
}

impl NetworkDriver {
    /// The driver's name in vswitch (`network create --driver`).
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkDriver::Bridge => "bridge",
            NetworkDriver::Overlay => "overlay",
            NetworkDriver::Macvlan => "macvlan",
        }
    }
}

/// Where a network exists: on this host only, or on every host of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// This host only.
    #[default]
    Local,
    /// The whole cluster (`-o vswitch.scope=swarm`; needs the cluster client).
    Swarm,
}

/// Who hands out a network's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// Docker's own IPAM (its default driver, or another one): the subnet, gateway and every
    /// endpoint address arrive ready-made; the backend records them.
    Docker,
    /// This plugin's IPAM driver (`--ipam-driver` with the same plugin): the pool already exists
    /// in the backend, made by [`DockerBackend::request_pool`].
    Vswitch,
}

/// A network to create, in vswitch's terms, from `CreateNetwork` and its `-o` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Docker's network id (64 hex digits): the label that ties the two together.
    pub docker_id: String,
    /// The vswitch network's name: `docker-` and the 12 digits `docker network ls` shows; for
    /// a swarm-scope network, the cluster network's (`-o vswitch.network=NAME`).
    pub name: String,
    /// The vswitch driver.
    pub driver: NetworkDriver,
    /// Who hands out the addresses.
    pub addressing: Addressing,
    /// The subnet, when the network has one.
    pub subnet: Option<Cidr>,
    /// The gateway address, when the network has one.
    pub gateway: Option<Ipv4Addr>,
    /// Addresses never handed out (Docker's `--aux-address`).
    pub reserved: Vec<Ipv4Addr>,
    /// The VXLAN network identifier of an overlay.
    pub vni: Option<u32>,
    /// The VTEPs of the other hosts of an overlay.
    pub peers: Vec<Ipv4Addr>,
    /// The parent interface of a macvlan network.
    pub parent: Option<String>,
    /// The MTU of the network's ports.
    pub mtu: Option<u32>,
    /// No traffic in or out of the network (`--internal`).
    pub internal: bool,
    /// Whether endpoints may talk to each other; None: the default (yes).
    pub enable_icc: Option<bool>,
    /// Whether traffic leaving the network is masqueraded; None: the default (yes).
    pub enable_ip_masquerade: Option<bool>,
    /// The host address published ports bind to by default.
    pub host_binding_ipv4: Option<Ipv4Addr>,
    /// This host or the cluster.
    pub scope: Scope,
}

/// The vswitch name of the network with Docker id `docker_id`: `docker-` and its first 12
/// characters, the short id `docker network ls` prints.
pub fn vswitch_network_name(docker_id: &str) -> String {
    let short: String = docker_id.chars().take(12).collect();
    format!("docker-{short}")
}

/// An endpoint to create: what Docker asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Docker's network id.
    pub network: String,
    /// Docker's endpoint id.
    pub endpoint: String,
    /// The address Docker's IPAM (or ours) already chose; None: the backend chooses.
    pub address: Option<IfAddr>,
    /// The MAC the user asked for (`--mac-address`); None: the backend chooses.
    pub mac: Option<MacAddr>,
}

/// An endpoint as the backend holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Its address, if the network has addresses.
    pub address: Option<IfAddr>,
    /// Its MAC address.
    pub mac: MacAddr,
    /// The switch port of its host end, once joined.
    pub port: Option<String>,
}

/// What a joined endpoint gives Docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinInfo {
    /// The name of the veth end, in the daemon's namespace, that Docker moves into the sandbox.
    pub ifname: String,
    /// The default gateway, if the network has one.
    pub gateway: Option<Ipv4Addr>,
    /// Routes to add in the sandbox besides the default one.
    pub static_routes: Vec<StaticRoute>,
}

/// A route for the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticRoute {
    /// The destination.
    pub destination: Cidr,
    /// The next hop; None: the destination is on the link.
    pub next_hop: Option<Ipv4Addr>,
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// SCTP (IP protocol 132).
    Sctp,
}

impl Protocol {
    /// The protocol's name, lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A published port (`docker run -p [HOST_IP:]HOST_PORT:PORT/PROTO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortBinding {
    /// The protocol.
    pub protocol: Protocol,
    /// The port inside the container.
    pub container_port: u16,
    /// The host address to listen on; None: every address (or the network's
    /// `host_binding_ipv4`).
    pub host_ip: Option<Ipv4Addr>,
    /// The first host port; 0: the backend picks one.
    pub host_port: u16,
    /// The last host port of a range; equal to `host_port` (or 0) for a single port.
    pub host_port_end: u16,
}

/// A pool to create for Docker's `RequestPool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// The subnet (`--subnet`); None: the next free default pool.
    pub subnet: Option<Cidr>,
    /// The part of the subnet endpoint addresses come from (`--ip-range`).
    pub ip_range: Option<Cidr>,
    /// The address space's scope: local pools, or cluster-wide ones.
    pub scope: Scope,
}

/// A pool the backend made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    /// Its id, which Docker passes back in later calls.
    pub id: String,
    /// Its subnet.
    pub subnet: Cidr,
    /// Its gateway, if it has one.
    pub gateway: Option<Ipv4Addr>,
}

/// What an address is requested for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    /// The network's gateway (`RequestAddressType: com.docker.network.gateway`), asked for when
    /// the user gave `--gateway`.
    Gateway,
    /// An endpoint, or an auxiliary address.
    Endpoint,
}

/// What the daemon must provide for the plugin, in vswitch's terms. Every call either succeeds
/// or changes nothing and says why. Calls may come from several threads; the daemon serialises
/// them as it does API requests.
pub trait DockerBackend: Send + Sync {
    /// Creates the network (labelled with `spec.docker_id`, named `spec.name`, so `vswitchctl
    /// network ls/inspect` shows it). Creating it again with the same spec succeeds and changes
    /// nothing (dockerd replays its networks); with another spec it is a conflict.
    fn create_network(&self, spec: &NetworkSpec) -> BackendResult<()>;

    /// Deletes the network with Docker id `docker_id`, its gateway and uplink ports. A pool
    /// made through [`DockerBackend::request_pool`] is not the network's to drop: Docker
    /// releases it itself, and (as seen from dockerd 20.10) *before* it deletes the network:
    /// `ReleaseAddress` of the gateway, `ReleasePool`, then `DeleteNetwork`.
    fn delete_network(&self, docker_id: &str) -> BackendResult<()>;

    /// Creates an endpoint: reserves its address (unless Docker gave one) and its MAC. Creating
    /// the same endpoint again with the same request returns what it has.
    fn create_endpoint(&self, spec: &EndpointSpec) -> BackendResult<EndpointInfo>;

    /// The endpoint as it is.
    fn endpoint_info(&self, network: &str, endpoint: &str) -> BackendResult<EndpointInfo>;

    /// Deletes the endpoint (leaving first if needed) and gives its address back.
    fn delete_endpoint(&self, network: &str, endpoint: &str) -> BackendResult<()>;

    /// Makes the endpoint's veth pair in the daemon's namespace, attaches the host end as a port
    /// of the network, and returns the other end's name (Docker moves it into the sandbox at
    /// `sandbox_key` and renames it `ethN`) with the gateway.
    fn join(&self, network: &str, endpoint: &str, sandbox_key: &str) -> BackendResult<JoinInfo>;

    /// Detaches the endpoint's port and removes its veth pair.
    fn leave(&self, network: &str, endpoint: &str) -> BackendResult<()>;

    /// Sets the ports published to the endpoint (replacing any it had), through the same code
    /// as `network connect --publish`.
    fn publish(&self, network: &str, endpoint: &str, bindings: &[PortBinding])
        -> BackendResult<()>;

    /// Removes every port published to the endpoint.
    fn unpublish(&self, network: &str, endpoint: &str) -> BackendResult<()>;

    /// Creates an address pool (the `ipam` crate's rules: no overlap, Docker's default order).
    fn request_pool(&self, spec: &PoolSpec) -> BackendResult<PoolInfo>;

    /// Drops a pool. Docker calls this before `DeleteNetwork` for a network on the pool: the
    /// network keeps working with the addresses it has until it is deleted.
    fn release_pool(&self, pool: &str) -> BackendResult<()>;

    /// Hands out an address of the pool: `address` if given and free, else the next free one
    /// (no quick reuse of released ones). For [`AddressKind::Gateway`], makes `address` the
    /// pool's gateway.
    fn request_address(
        &self,
        pool: &str,
        address: Option<Ipv4Addr>,
        kind: AddressKind,
    ) -> BackendResult<IfAddr>;

    /// Gives an address back to its pool (releasing the gateway is accepted and keeps it).
    fn release_address(&self, pool: &str, address: Ipv4Addr) -> BackendResult<()>;
}

/// An answer to one plugin call: the HTTP status and the JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// 200 for success, 500 for a refused call, 404 for an unknown call.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
}

impl Reply {
    /// A success.
    pub fn ok(body: Value) -> Reply {
        Reply { status: 200, body }
    }

    /// A refused call: HTTP 500 with `{"Err": message}`, which Docker's plugin client reads for
    /// every driver (an HTTP 200 `Err` would be missed by its IPAM client, which reads `Error`).
    pub fn err(message: impl Into<String>) -> Reply {
        Reply::err_status(500, message)
    }

    /// A failure with another status (404: no such call, which Docker takes as "not
    /// implemented"; 405, 413: not a plugin call).
    pub fn err_status(status: u16, message: impl Into<String>) -> Reply {
        Reply {
            status,
            body: json!({ "Err": message.into() }),
        }
    }

    /// The error message, if this is a failure.
    pub fn error(&self) -> Option<&str> {
        self.body.get("Err").and_then(Value::as_str)
    }
}

/// What a handler returns: the answer's JSON, or the message of a refusal.
pub type Answer = Result<Value, String>;

/// `/Plugin.Activate`: the plugin implements a network driver and an IPAM driver.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct ActivateResponse {
    implements: [&'static str; 2],
}

fn activate() -> Answer {
    to_json(&ActivateResponse {
        implements: ["NetworkDriver", "IpamDriver"],
    })
}

/// Answers one plugin call: `call` is the path without its leading `/` (e.g.
/// `NetworkDriver.CreateNetwork`), `body` the request's JSON.
pub fn handle(backend: &dyn DockerBackend, call: &str, body: &[u8]) -> Reply {
    let answer = match call {
        "Plugin.Activate" => activate(),
        "NetworkDriver.GetCapabilities" => network::get_capabilities(),
        "NetworkDriver.CreateNetwork" => network::create_network(backend, body),
        "NetworkDriver.DeleteNetwork" => network::delete_network(backend, body),
        "NetworkDriver.AllocateNetwork" => network::allocate_network(body),
        "NetworkDriver.FreeNetwork" => network::free_network(body),
        "NetworkDriver.CreateEndpoint" => network::create_endpoint(backend, body),
        "NetworkDriver.EndpointOperInfo" => network::endpoint_oper_info(backend, body),
        "NetworkDriver.DeleteEndpoint" => network::delete_endpoint(backend, body),
        "NetworkDriver.Join" => network::join(backend, body),
        "NetworkDriver.Leave" => network::leave(backend, body),
        "NetworkDriver.DiscoverNew" => network::discover(body),
        "NetworkDriver.DiscoverDelete" => network::discover(body),
        "NetworkDriver.ProgramExternalConnectivity" => {
            network::program_external_connectivity(backend, body)
        }
        "NetworkDriver.RevokeExternalConnectivity" => {
            network::revoke_external_connectivity(backend, body)
        }
        "IpamDriver.GetCapabilities" => ipam::get_capabilities(),
        "IpamDriver.GetDefaultAddressSpaces" => ipam::get_default_address_spaces(),
        "IpamDriver.RequestPool" => ipam::request_pool(backend, body),
        "IpamDriver.ReleasePool" => ipam::release_pool(backend, body),
        "IpamDriver.RequestAddress" => ipam::request_address(backend, body),
        "IpamDriver.ReleaseAddress" => ipam::release_address(backend, body),
        _ => {
            return Reply::err_status(
                404,
                format!(
                    "unknown plugin call {call:?}: vswitch implements NetworkDriver and IpamDriver"
                ),
            )
        }
    };
    match answer {
        Ok(body) => Reply::ok(body),
        Err(message) => Reply::err(format!("vswitch: {message}")),
    }
}

/// Reads a request body as `T`, naming the call in the error.
pub(crate) fn parse<T: DeserializeOwned>(call: &str, body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed {call} request: {e}"))
}

/// Serialises an answer.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Answer {
    serde_json::to_value(value).map_err(|e| format!("cannot encode the answer: {e}"))
}

/// The empty success answer (`{}`: no `Err`).
pub(crate) fn empty() -> Answer {
    Ok(json!({}))
}

/// Deserialises a field that Go may send as `null` (a nil map or slice) as its default.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Checks a Docker id (network or endpoint): 1 to 64 letters or digits.
pub(crate) fn check_id(what: &str, id: &str) -> Result<(), String> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {id:?}: expected Docker's id (1 to 64 hex digits)"
        ))
    }
}

/// A backend failure as the refusal message.
pub(crate) fn backend_err(e: BackendError) -> String {
    e.message
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryBackend;
    use super::*;

    #[test]
    fn activate_says_both_drivers() {
        let b = MemoryBackend::new();
        let r = handle(&b, "Plugin.Activate", b"");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            json!({"Implements": ["NetworkDriver", "IpamDriver"]})
        );
    }

    #[test]
    fn unknown_call_is_404_with_err() {
        let b = MemoryBackend::new();
        let r = handle(&b, "VolumeDriver.Create", b"{}");
        assert_eq!(r.status, 404);
        assert!(r.error().unwrap().contains("VolumeDriver.Create"));
    }

    #[test]
    fn if_addr_round_trip_and_errors() {
        let a: IfAddr = "172.18.0.2/16".parse().unwrap();
        assert_eq!(a.to_string(), "172.18.0.2/16");
        assert_eq!(a.subnet().to_string(), "172.18.0.0/16");
        assert!("172.18.0.2".parse::<IfAddr>().is_err());
        assert!("172.18.0.2/33".parse::<IfAddr>().is_err());
        assert!("nonsense/8".parse::<IfAddr>().is_err());
        let e = "fd00::2/64".parse::<IfAddr>().unwrap_err();
        assert!(e.contains("IPv6 is not supported"), "{e}");
    }

    /// Every call, fed random bytes and damaged copies of valid bodies: always an answer (200,
    /// or 500 with an `Err`), never a panic; the backend survives.
    #[test]
    fn garbage_never_panics() {
        const CALLS: [&str; 21] = [
            "Plugin.Activate",
            "NetworkDriver.GetCapabilities",
            "NetworkDriver.CreateNetwork",
            "NetworkDriver.DeleteNetwork",
            "NetworkDriver.AllocateNetwork",
            "NetworkDriver.FreeNetwork",
            "NetworkDriver.CreateEndpoint",
            "NetworkDriver.EndpointOperInfo",
            "NetworkDriver.DeleteEndpoint",
            "NetworkDriver.Join",
            "NetworkDriver.Leave",
            "NetworkDriver.DiscoverNew",
            "NetworkDriver.DiscoverDelete",
            "NetworkDriver.ProgramExternalConnectivity",
            "NetworkDriver.RevokeExternalConnectivity",
            "IpamDriver.GetCapabilities",
            "IpamDriver.GetDefaultAddressSpaces",
            "IpamDriver.RequestPool",
            "IpamDriver.ReleasePool",
            "IpamDriver.RequestAddress",
            "IpamDriver.ReleaseAddress",
        ];
        let net = "a".repeat(64);
        let seeds = [
            json!({"NetworkID": net, "Options": {"com.docker.network.generic": {"vswitch.driver": "overlay", "vswitch.vni": "7"}}, "IPv4Data": [{"AddressSpace": "vswitch-local", "Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}]}),
            json!({"NetworkID": net, "EndpointID": net, "Interface": {"Address": "10.1.0.2/24", "MacAddress": "02:42:0a:01:00:02"}}),
            json!({"NetworkID": net, "EndpointID": net, "Options": {"com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}]}}),
            json!({"AddressSpace": "vswitch-local", "Pool": "10.1.0.0/24", "SubPool": "10.1.0.128/25", "Options": {}, "V6": false}),
            json!({"PoolID": "10.1.0.0/24", "Address": "10.1.0.9", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
        ];
        let b = memory::MemoryBackend::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..3000 {
            let call = CALLS[(next() % CALLS.len() as u64) as usize];
            let mut body = seeds[round % seeds.len()].to_string().into_bytes();
            if round % 3 == 0 {
                body = (0..next() % 64).map(|_| next() as u8).collect();
            } else {
                for _ in 0..1 + next() % 4 {
                    let i = (next() % body.len() as u64) as usize;
                    body[i] = next() as u8;
                }
            }
            let r = handle(&b, call, &body);
            assert!(
                r.status == 200 || (r.status == 500 && r.error().is_some()),
                "{call}: {r:?}"
            );
        }
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("NetworkID", &"a".repeat(64)).is_ok());
        assert!(check_id("NetworkID", "").is_err());
        assert!(check_id("NetworkID", &"a".repeat(65)).is_err());
        assert!(check_id("NetworkID", "../etc").is_err());
    }

    #[test]
    fn network_names_use_the_short_id() {
        assert_eq!(
            vswitch_network_name("0123456789abcdef0123"),
            "docker-0123456789ab"
        );
    }
}
