//! The `IpamDriver` calls of libnetwork's remote IPAM protocol, each handler next to the JSON
//! shapes it reads and writes.
//!
//! With `docker network create --ipam-driver NAME`, Docker asks this plugin for the network's
//! pool (`RequestPool`, answered with the pool's gateway so Docker does not ask again), for each
//! endpoint's address (`RequestAddress`), and gives them back (`ReleaseAddress`, `ReleasePool`).
//! The pools live in the daemon's `ipam` crate: Docker's default pool order, no overlap, no
//! quick reuse of released addresses. Docker does not replay these calls after a restart
//! (`RequiresRequestReplay` is false): the daemon keeps its pools in its own state.

use super::{
    backend_err, empty, ipv6_unsupported, nullable, parse, parse_cidr, parse_ipv4, to_json,
    AddressKind, Answer, DockerBackend, PoolSpec, Scope,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The address space of local pools (`GetDefaultAddressSpaces`).
pub const LOCAL_ADDRESS_SPACE: &str = "vswitch-local";
/// The address space of cluster-wide pools.
pub const GLOBAL_ADDRESS_SPACE: &str = "vswitch-global";

/// The pool data key (and address option value) Docker uses for a gateway.
pub const GATEWAY: &str = "com.docker.network.gateway";
/// The `RequestAddress` option saying what the address is for.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";

/// True when `space` is one of this plugin's address spaces: the pool is ours.
pub fn is_ours(space: &str) -> bool {
    space == LOCAL_ADDRESS_SPACE || space == GLOBAL_ADDRESS_SPACE
}

// ---- GetCapabilities ----------------------------------------------------------------------

/// `/IpamDriver.GetCapabilities` answer: no MAC needed to choose an address, and no replay of
/// the pools and addresses after a Docker restart (the daemon keeps them).
#[derive(Debug, Serialize)]
struct CapabilitiesResponse {
    #[serde(rename = "RequiresMACAddress")]
    requires_mac_address: bool,
    #[serde(rename = "RequiresRequestReplay")]
    requires_request_replay: bool,
}

/// Answers `GetCapabilities`.
pub fn get_capabilities() -> Answer {
    to_json(&CapabilitiesResponse {
        requires_mac_address: false,
        requires_request_replay: false,
    })
}

// ---- GetDefaultAddressSpaces --------------------------------------------------------------

/// `/IpamDriver.GetDefaultAddressSpaces` answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct AddressSpacesResponse {
    local_default_address_space: &'static str,
    global_default_address_space: &'static str,
}

/// Answers `GetDefaultAddressSpaces`.
pub fn get_default_address_spaces() -> Answer {
    to_json(&AddressSpacesResponse {
        local_default_address_space: LOCAL_ADDRESS_SPACE,
        global_default_address_space: GLOBAL_ADDRESS_SPACE,
    })
}

// ---- RequestPool --------------------------------------------------------------------------

/// `/IpamDriver.RequestPool` request: `{"AddressSpace", "Pool": "CIDR" or "", "SubPool": "CIDR"
/// or "", "Options": {--ipam-opt}, "V6": bool}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestPoolRequest {
    address_space: String,
    #[serde(default, deserialize_with = "nullable")]
    pool: String,
    #[serde(default, deserialize_with = "nullable")]
    sub_pool: String,
    #[serde(default, deserialize_with = "nullable")]
    options: BTreeMap<String, String>,
    #[serde(rename = "V6", default)]
    v6: bool,
}

/// `RequestPool` answer: `{"PoolID", "Pool": "CIDR", "Data": {"com.docker.network.gateway":
/// "IP/LEN"}}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RequestPoolResponse {
    #[serde(rename = "PoolID")]
    pool_id: String,
    pool: String,
    data: BTreeMap<&'static str, String>,
}

/// Answers `RequestPool`.
pub fn request_pool(backend: &dyn DockerBackend, body: &[u8]) -> Answer {
    let req: RequestPoolRequest = parse("IpamDriver.RequestPool", body)?;
    if req.v6 {
        return Err(ipv6_unsupported("an IPv6 pool was requested"));
    }
    let scope = match req.address_space.as_str() {
        LOCAL_ADDRESS_SPACE => Scope::Local,
        GLOBAL_ADDRESS_SPACE => Scope::Swarm,
        other => {
            return Err(format!(
                "unknown address space {other:?}: this IPAM driver has {LOCAL_ADDRESS_SPACE} and {GLOBAL_ADDRESS_SPACE}"
            ))
        }
    };
    // Docker's own keys (`com.docker.…`) are its business; anything else is a user's
    // `--ipam-opt`, which this driver has none of.
    if let Some(key) = req.options.keys().find(|k| !k.starts_with("com.docker.")) {
        return Err(format!(
            "unknown IPAM option --ipam-opt {key}: the vswitch IPAM driver takes none"
        ));
    }
    let subnet = match req.pool.as_str() {
        "" => None,
        text => Some(parse_cidr("subnet", text)?),
    };
    let ip_range = match req.sub_pool.as_str() {
        "" => None,
        text => Some(parse_cidr("ip range", text)?),
    };
    let spec = PoolSpec {
        subnet,
        ip_range,
        scope,
    };
    let pool = backend.request_pool(&spec).map_err(backend_err)?;
    let mut data = BTreeMap::new();
    if let Some(gw) = pool.gateway {
        data.insert(GATEWAY, format!("{gw}/{}", pool.subnet.prefix_len()));
    }
    tracing::info!(pool = %pool.id, subnet = %pool.subnet, "docker: address pool requested");
    to_json(&RequestPoolResponse {
        pool_id: pool.id,
        pool: pool.subnet.to_string(),
        data,
    })
}

// ---- ReleasePool --------------------------------------------------------------------------

/// `/IpamDriver.ReleasePool` request: `{"PoolID"}`.
#[derive(Debug, Deserialize)]
struct ReleasePoolRequest {
    #[serde(rename = "PoolID")]
    pool_id: String,
}

/// Answers `ReleasePool`.
pub fn release_pool(backend: &dyn DockerBackend, body: &[u8]) -> Answer {
    let req: ReleasePoolRequest = parse("IpamDriver.ReleasePool", body)?;
    backend.release_pool(&req.pool_id).map_err(backend_err)?;
    tracing::info!(pool = %req.pool_id, "docker: address pool released");
    empty()
}

// ---- RequestAddress -----------------------------------------------------------------------

/// `/IpamDriver.RequestAddress` request: `{"PoolID", "Address": "IP" or "", "Options":
/// {"RequestAddressType": "com.docker.network.gateway"} or other Docker keys}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestAddressRequest {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(default, deserialize_with = "nullable")]
    address: String,
    #[serde(default, deserialize_with = "nullable")]
    options: BTreeMap<String, String>,
}

/// `RequestAddress` answer: `{"Address": "IP/LEN", "Data": {}}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RequestAddressResponse {
    address: String,
    data: BTreeMap<String, String>,
}

/// Answers `RequestAddress`.
pub fn request_address(backend: &dyn DockerBackend, body: &[u8]) -> Answer {
    let req: RequestAddressRequest = parse("IpamDriver.RequestAddress", body)?;
    let address = match req.address.as_str() {
        "" => None,
        // Docker sends a bare address; accept `IP/LEN` too.
        text => Some(parse_ipv4(
            "address",
            text.split('/').next().unwrap_or(text),
        )?),
    };
    let kind = match req.options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) {
        Some(GATEWAY) => AddressKind::Gateway,
        _ => AddressKind::Endpoint,
    };
    let got = backend
        .request_address(&req.pool_id, address, kind)
        .map_err(backend_err)?;
    tracing::debug!(pool = %req.pool_id, address = %got, ?kind, "docker: address requested");
    to_json(&RequestAddressResponse {
        address: got.to_string(),
        data: BTreeMap::new(),
    })
}

// ---- ReleaseAddress -----------------------------------------------------------------------

/// `/IpamDriver.ReleaseAddress` request: `{"PoolID", "Address": "IP"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReleaseAddressRequest {
    #[serde(rename = "PoolID")]
    pool_id: String,
    address: String,
}

/// Answers `ReleaseAddress`.
pub fn release_address(backend: &dyn DockerBackend, body: &[u8]) -> Answer {
    let req: ReleaseAddressRequest = parse("IpamDriver.ReleaseAddress", body)?;
    let text = req.address.split('/').next().unwrap_or(&req.address);
    let ip = parse_ipv4("address", text)?;
    backend
        .release_address(&req.pool_id, ip)
        .map_err(backend_err)?;
    tracing::debug!(pool = %req.pool_id, address = %ip, "docker: address released");
    empty()
}

#[cfg(test)]
mod tests {
    use super::super::memory::MemoryBackend;
    use super::super::{handle, Reply};
    use super::*;
    use serde_json::{json, Value};

    fn call(b: &MemoryBackend, call: &str, body: Value) -> Reply {
        handle(b, call, body.to_string().as_bytes())
    }

    fn ok(b: &MemoryBackend, c: &str, body: Value) -> Value {
        let r = call(b, c, body);
        assert_eq!(r.status, 200, "{c}: {:?}", r.body);
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

    fn pool(b: &MemoryBackend, subnet: &str, range: &str) -> Value {
        ok(
            b,
            "IpamDriver.RequestPool",
            json!({"AddressSpace": LOCAL_ADDRESS_SPACE, "Pool": subnet, "SubPool": range, "Options": {}, "V6": false}),
        )
    }

    #[test]
    fn capabilities_and_address_spaces() {
        let b = MemoryBackend::new();
        assert_eq!(
            ok(&b, "IpamDriver.GetCapabilities", Value::Null),
            json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
        );
        assert_eq!(
            ok(&b, "IpamDriver.GetDefaultAddressSpaces", Value::Null),
            json!({"LocalDefaultAddressSpace": "vswitch-local", "GlobalDefaultAddressSpace": "vswitch-global"})
        );
    }

    #[test]
    fn default_pools_follow_dockers_order_and_carry_the_gateway() {
        let b = MemoryBackend::new();
        let p = pool(&b, "", "");
        assert_eq!(p["Pool"], "172.17.0.0/16");
        assert_eq!(p["Data"][GATEWAY], "172.17.0.1/16");
        let p2 = pool(&b, "", "");
        assert_eq!(p2["Pool"], "172.18.0.0/16");
        assert_ne!(p["PoolID"], p2["PoolID"]);
    }

    #[test]
    fn overlap_is_refused_with_a_clear_error() {
        let b = MemoryBackend::new();
        pool(&b, "10.20.0.0/16", "");
        refused(
            &b,
            "IpamDriver.RequestPool",
            json!({"AddressSpace": LOCAL_ADDRESS_SPACE, "Pool": "10.20.5.0/24"}),
            "overlapping subnets: 10.20.5.0/24 overlaps the existing pool 10.20.0.0/16",
        );
    }

    #[test]
    fn request_pool_refusals() {
        let b = MemoryBackend::new();
        let c = "IpamDriver.RequestPool";
        refused(
            &b,
            c,
            json!({"AddressSpace": LOCAL_ADDRESS_SPACE, "V6": true}),
            "IPv6 is not supported",
        );
        refused(
            &b,
            c,
            json!({"AddressSpace": "LocalDefault"}),
            "unknown address space",
        );
        refused(
            &b,
            c,
            json!({"AddressSpace": LOCAL_ADDRESS_SPACE, "Pool": "fd00::/64"}),
            "IPv6 is not supported",
        );
        refused(
            &b,
            c,
            json!({"AddressSpace": LOCAL_ADDRESS_SPACE, "Pool": "10.0.0.0/33"}),
            "invalid subnet",
        );
        refused(
            &b,
            c,
            json!({"AddressSpace": LOCAL_ADDRESS_SPACE, "Pool": "10.0.0.0/24", "SubPool": "10.1.0.0/25"}),
            "not inside the subnet",
        );
        refused(
            &b,
            c,
            json!({"AddressSpace": LOCAL_ADDRESS_SPACE, "Options": {"color": "blue"}}),
            "--ipam-opt color",
        );
        refused(
            &b,
            c,
            json!({"Pool": "10.0.0.0/24"}),
            "missing field `AddressSpace`",
        );
        refused(&b, c, json!(42), "malformed IpamDriver.RequestPool");
    }

    #[test]
    fn addresses_in_order_without_quick_reuse() {
        let b = MemoryBackend::new();
        let p = pool(&b, "10.5.0.0/24", "");
        let id = p["PoolID"].as_str().unwrap().to_string();
        let a1 = ok(
            &b,
            "IpamDriver.RequestAddress",
            json!({"PoolID": id, "Address": "", "Options": null}),
        );
        assert_eq!(a1, json!({"Address": "10.5.0.2/24", "Data": {}}));
        ok(
            &b,
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": id, "Address": "10.5.0.2"}),
        );
        let a2 = ok(
            &b,
            "IpamDriver.RequestAddress",
            json!({"PoolID": id, "Address": ""}),
        );
        assert_eq!(
            a2["Address"], "10.5.0.3/24",
            "a released address is not handed out at once"
        );
        let a3 = ok(
            &b,
            "IpamDriver.RequestAddress",
            json!({"PoolID": id, "Address": "10.5.0.77"}),
        );
        assert_eq!(a3["Address"], "10.5.0.77/24");
        refused(
            &b,
            "IpamDriver.RequestAddress",
            json!({"PoolID": id, "Address": "10.5.0.77"}),
            "already allocated",
        );
        refused(
            &b,
            "IpamDriver.RequestAddress",
            json!({"PoolID": id, "Address": "10.6.0.1"}),
            "outside the subnet",
        );
        refused(
            &b,
            "IpamDriver.RequestAddress",
            json!({"PoolID": id, "Address": "fd00::1"}),
            "IPv6 is not supported",
        );
        refused(
            &b,
            "IpamDriver.RequestAddress",
            json!({"PoolID": "10.99.0.0/24"}),
            "no address pool",
        );
        refused(
            &b,
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": id, "Address": "10.5.0.200"}),
            "not allocated",
        );
        refused(
            &b,
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": id, "Address": "bogus"}),
            "not an IPv4 address",
        );
        refused(
            &b,
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": id}),
            "missing field `Address`",
        );
    }

    #[test]
    fn gateway_requests() {
        let b = MemoryBackend::new();
        let p = pool(&b, "10.6.0.0/24", "");
        let id = p["PoolID"].as_str().unwrap().to_string();
        let gw_opts = json!({REQUEST_ADDRESS_TYPE: GATEWAY});
        // The pool's own gateway, asked for again (no --gateway): the same.
        let g = ok(
            &b,
            "IpamDriver.RequestAddress",
            json!({"PoolID": id, "Address": "", "Options": gw_opts}),
        );
        assert_eq!(g["Address"], "10.6.0.1/24");
        // --gateway 10.6.0.254: the pool's gateway moves there.
        let g = ok(
            &b,
            "IpamDriver.RequestAddress",
            json!({"PoolID": id, "Address": "10.6.0.254", "Options": gw_opts}),
        );
        assert_eq!(g["Address"], "10.6.0.254/24");
        let a = ok(
            &b,
            "IpamDriver.RequestAddress",
            json!({"PoolID": id, "Address": ""}),
        );
        assert_eq!(
            a["Address"], "10.6.0.1/24",
            "the old gateway address is free again"
        );
        // Docker releases the gateway when it removes the network: accepted.
        ok(
            &b,
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": id, "Address": "10.6.0.254"}),
        );
        ok(
            &b,
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": id, "Address": "10.6.0.1"}),
        );
        ok(&b, "IpamDriver.ReleasePool", json!({"PoolID": id}));
        refused(
            &b,
            "IpamDriver.ReleasePool",
            json!({"PoolID": id}),
            "no address pool",
        );
    }

    #[test]
    fn a_network_on_our_pool_uses_it() {
        let b = MemoryBackend::new();
        let p = pool(&b, "10.7.0.0/24", "");
        let id = p["PoolID"].as_str().unwrap().to_string();
        let net = "a".repeat(64);
        let ep = "b".repeat(64);
        let r = call(
            &b,
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": net, "Options": {}, "IPv4Data": [{"AddressSpace": LOCAL_ADDRESS_SPACE, "Pool": "10.7.0.0/24", "Gateway": "10.7.0.1/24"}]}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(
            b.network(&net).unwrap().addressing,
            super::super::Addressing::Vswitch
        );
        let a = ok(
            &b,
            "IpamDriver.RequestAddress",
            json!({"PoolID": id, "Address": ""}),
        );
        let r = call(
            &b,
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": net, "EndpointID": ep, "Interface": {"Address": a["Address"]}}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        // Deleting the network keeps the pool: Docker releases it itself afterwards.
        call(
            &b,
            "NetworkDriver.DeleteEndpoint",
            json!({"NetworkID": net, "EndpointID": ep}),
        );
        ok(
            &b,
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": id, "Address": "10.7.0.2"}),
        );
        ok(&b, "NetworkDriver.DeleteNetwork", json!({"NetworkID": net}));
        ok(&b, "IpamDriver.ReleasePool", json!({"PoolID": id}));
    }
}
