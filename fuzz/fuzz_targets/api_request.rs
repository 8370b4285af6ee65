//! Any bytes as an API request line: parsed or refused, never a panic. A request that parses
//! survives a round trip unchanged, an argument-less command is exactly `{"cmd": …}` (extra
//! fields are refused), and the names, subnets and VLANs it carries go through the daemon's
//! own checks without a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tools::api::{self, NetworkSpec, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<Request>(data) else {
        return;
    };
    let line = serde_json::to_vec(&req).expect("a parsed request serialises");
    let again: Request = serde_json::from_slice(&line).expect("a serialised request parses");
    assert_eq!(again, req, "round trip changed the request");
    check_fields(&req, &line);
});

/// What the daemon checks of each request's fields, run on whatever the fuzzer made.
fn check_fields(req: &Request, line: &[u8]) {
    match req {
        Request::PortList {} | Request::NetworkLs {} | Request::SandboxLs {} => {
            let v: serde_json::Value = serde_json::from_slice(line).expect("JSON");
            let keys: Vec<&String> = v.as_object().expect("an object").keys().collect();
            assert_eq!(keys, ["cmd"], "an argument-less command carried fields");
        }
        Request::PortAdd {
            name, vlan, trunks, ..
        } => {
            let _ = tools::netlink::validate_ifname(name);
            for v in vlan.iter().chain(trunks.iter().flatten()) {
                let _ = api::check_vlan((*v).into());
            }
        }
        Request::NetworkCreate(spec) => check_spec(spec),
        Request::NetworkRm { name } | Request::NetworkInspect { name } => {
            let _ = api::check_name("network", name);
        }
        Request::NetworkConnect {
            network, sandbox, ..
        }
        | Request::NetworkDisconnect { network, sandbox } => {
            let _ = api::check_name("network", network);
            let _ = tools::netns::validate_netns_name(sandbox);
        }
        Request::SandboxCreate { name, .. } | Request::SandboxRm { name } => {
            // A valid name is one path component under /run/netns, never `.`, `..` or an option.
            if tools::netns::validate_netns_name(name).is_ok() {
                assert!(!name.starts_with(['.', '-']) && !name.contains(['/', '\n', ' ', '\0']));
            }
        }
        Request::FdbAdd { vlan: Some(v), .. } => {
            let _ = api::check_vlan((*v).into());
        }
        _ => {}
    }
}

/// `network create`'s limits and its subnet through the IPAM's checks.
fn check_spec(spec: &NetworkSpec) {
    let _ = api::check_name("network", &spec.name);
    if let Some(mtu) = spec.mtu {
        let _ = api::check_mtu(mtu.into());
    }
    if let Some(vni) = spec.vni {
        let _ = api::check_vni(vni.into());
    }
    for text in [&spec.subnet, &spec.ip_range].into_iter().flatten() {
        if let Ok(cidr) = text.parse::<ipam::Cidr>() {
            let _ = ipam::check_usable_subnet(cidr);
        }
    }
}
