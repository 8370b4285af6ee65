//! `vswitchctl network create|rm|ls|inspect`: networks, as `docker network` shows them.

use crate::{args, output};
use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::net::IpAddr;
use tools::api::{NetworkRow, NetworkSpec, Request};
use tools::daemon::Driver;

/// How many characters of a network id `network ls` shows (as docker does).
const SHORT_ID: usize = 12;

/// `network …`
#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network (default driver: bridge) and print its id.
    Create(CreateArgs),
    /// Remove a network (refused while it has ports or endpoints).
    Rm {
        /// The network's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// List networks.
    Ls,
    /// One network in detail, as JSON (like `docker network inspect`).
    Inspect {
        /// The network's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Connect a sandbox to a network: a veth pair, an address, routes.
    Connect {
        /// The network's name.
        #[arg(value_name = "NET")]
        network: String,
        /// The sandbox's name.
        #[arg(value_name = "SANDBOX")]
        sandbox: String,
        /// Ask for this address (else the next free one).
        #[arg(long, value_name = "IP", value_parser = args::ip)]
        ip: Option<IpAddr>,
        /// Publish a port: [HOST_IP:]HOST_PORT:PORT[/tcp|udp], ranges as 8000-8010:80-90
        /// (repeatable; checked by vswitchd).
        #[arg(long, short = 'p', value_name = "SPEC")]
        publish: Vec<String>,
        /// Another DNS name of the sandbox on this network (its own name resolves too);
        /// repeat for several. Sandboxes sharing the network resolve it at 127.0.0.11.
        #[arg(long = "alias", value_name = "NAME", value_parser = args::alias)]
        aliases: Vec<String>,
    },
    /// Disconnect a sandbox from a network (its address is released).
    Disconnect {
        /// The network's name.
        #[arg(value_name = "NET")]
        network: String,
        /// The sandbox's name.
        #[arg(value_name = "SANDBOX")]
        sandbox: String,
    },
    /// VXLAN peers of an overlay network.
    #[command(subcommand)]
    Peer(PeerCmd),
}

/// `network peer add|rm NET IP`
#[derive(Debug, Subcommand)]
pub enum PeerCmd {
    /// Add a remote VTEP to the network's flood list.
    Add {
        #[arg(value_name = "NET")]
        network: String,
        #[arg(value_name = "IP", value_parser = args::ip)]
        ip: IpAddr,
    },
    /// Remove a remote VTEP (and the MACs learned behind it).
    Rm {
        #[arg(value_name = "NET")]
        network: String,
        #[arg(value_name = "IP", value_parser = args::ip)]
        ip: IpAddr,
    },
}

/// `network create NAME …`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The new network's name.
    #[arg(value_name = "NAME")]
    name: String,
    /// The network driver.
    #[arg(long, short = 'd', value_name = "DRIVER", value_parser = drivers())]
    driver: Option<String>,
    /// The subnet, e.g. 172.18.0.0/16 (from the default pools if omitted).
    #[arg(long, value_name = "CIDR", value_parser = args::cidr)]
    subnet: Option<String>,
    /// The gateway address (the subnet's first address if omitted).
    #[arg(long, value_name = "IP", value_parser = args::ip)]
    gateway: Option<IpAddr>,
    /// Allocate container addresses from this part of the subnet only.
    #[arg(long = "ip-range", value_name = "CIDR", value_parser = args::cidr)]
    ip_range: Option<String>,
    /// VXLAN network identifier of an overlay network (1-16777215).
    #[arg(long, value_name = "N", value_parser = args::vni)]
    vni: Option<u32>,
    /// A VXLAN peer (remote VTEP) of an overlay network; repeat for several.
    #[arg(long = "peer", value_name = "IP", value_parser = args::ip)]
    peers: Vec<IpAddr>,
    /// The parent interface of a macvlan network.
    #[arg(long, value_name = "IF", value_parser = args::ifname)]
    parent: Option<String>,
    /// The network's MTU (68-65535).
    #[arg(long, value_name = "N", value_parser = args::mtu)]
    mtu: Option<u32>,
    /// Restrict external access: no route off the network.
    #[arg(long)]
    internal: bool,
    /// `swarm`: one network for the whole cluster (an overlay, vswitchd started with
    /// `--cluster`); `local` (the default): this host only.
    #[arg(long, value_name = "SCOPE", value_parser = ["local", "swarm"])]
    scope: Option<String>,
    /// A driver option, as Docker names it: com.docker.network.bridge.enable_icc=BOOL,
    /// com.docker.network.bridge.enable_ip_masquerade=BOOL,
    /// com.docker.network.bridge.host_binding_ipv4=IP, com.docker.network.driver.mtu=N
    /// (repeatable).
    #[arg(long = "opt", short = 'o', value_name = "KEY=VALUE", value_parser = driver_opt)]
    opts: Vec<DriverOpt>,
}

/// `-o com.docker.network.bridge.enable_icc=BOOL`.
const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
/// `-o com.docker.network.bridge.enable_ip_masquerade=BOOL`.
const OPT_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
/// `-o com.docker.network.bridge.host_binding_ipv4=IP`.
const OPT_HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";
/// `-o com.docker.network.driver.mtu=N`.
const OPT_MTU: &str = "com.docker.network.driver.mtu";

/// One `-o KEY=VALUE` of `network create`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverOpt {
    /// Sandboxes of the network may talk to each other.
    Icc(bool),
    /// Outbound traffic is masqueraded.
    Masquerade(bool),
    /// The default host address of published ports.
    HostBinding(IpAddr),
    /// The network's MTU.
    Mtu(u32),
}

/// Parses `KEY=VALUE` with Docker's option names.
fn driver_opt(s: &str) -> Result<DriverOpt, String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    let boolean = |v: &str| match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{key}: {v:?} is not true or false")),
    };
    match key {
        OPT_ICC => boolean(value).map(DriverOpt::Icc),
        OPT_MASQUERADE => boolean(value).map(DriverOpt::Masquerade),
        OPT_HOST_BINDING => args::ip(value).map(DriverOpt::HostBinding),
        OPT_MTU => args::mtu(value).map(DriverOpt::Mtu),
        _ => Err(format!(
            "unknown option {key:?} (known: {OPT_ICC}, {OPT_MASQUERADE}, {OPT_HOST_BINDING}, {OPT_MTU})"
        )),
    }
}

impl CreateArgs {
    /// The spec: the flags, then the `-o` options over them.
    fn spec(&self) -> NetworkSpec {
        let mut spec = NetworkSpec {
            name: self.name.clone(),
            driver: self.driver.clone(),
            subnet: self.subnet.clone(),
            gateway: self.gateway.map(|ip| ip.to_string()),
            ip_range: self.ip_range.clone(),
            vni: self.vni,
            peers: self.peers.iter().map(IpAddr::to_string).collect(),
            parent: self.parent.clone(),
            mtu: self.mtu,
            internal: self.internal,
            scope: self.scope.clone(),
            ..NetworkSpec::default()
        };
        for o in &self.opts {
            match o {
                DriverOpt::Icc(b) => spec.enable_icc = Some(*b),
                DriverOpt::Masquerade(b) => spec.enable_ip_masquerade = Some(*b),
                DriverOpt::HostBinding(ip) => spec.host_binding_ipv4 = Some(ip.to_string()),
                DriverOpt::Mtu(m) => spec.mtu = Some(*m),
            }
        }
        spec
    }
}

/// The network drivers (DESIGN.md), as the daemon names them.
fn drivers() -> PossibleValuesParser {
    PossibleValuesParser::new(Driver::ALL.map(|d| PossibleValue::new(d.name()).help(d.about())))
}

impl NetworkCmd {
    /// The request for the daemon.
    pub fn request(&self) -> Request {
        match self {
            NetworkCmd::Create(a) => Request::NetworkCreate(a.spec()),
            NetworkCmd::Rm { name } => Request::NetworkRm { name: name.clone() },
            NetworkCmd::Ls => Request::NetworkLs {},
            NetworkCmd::Inspect { name } => Request::NetworkInspect { name: name.clone() },
            NetworkCmd::Connect {
                network,
                sandbox,
                ip,
                publish,
                aliases,
            } => Request::NetworkConnect {
                network: network.clone(),
                sandbox: sandbox.clone(),
                ip: ip.map(|ip| ip.to_string()),
                publish: publish.clone(),
                aliases: aliases.clone(),
            },
            NetworkCmd::Disconnect { network, sandbox } => Request::NetworkDisconnect {
                network: network.clone(),
                sandbox: sandbox.clone(),
            },
            NetworkCmd::Peer(PeerCmd::Add { network, ip }) => Request::NetworkPeerAdd {
                network: network.clone(),
                ip: ip.to_string(),
            },
            NetworkCmd::Peer(PeerCmd::Rm { network, ip }) => Request::NetworkPeerRm {
                network: network.clone(),
                ip: ip.to_string(),
            },
        }
    }

    /// Human output: the new id for `create`, a table for `ls`, the JSON for `inspect`.
    pub fn render(&self, result: &Value) -> String {
        match self {
            NetworkCmd::Create(_) => match created_id(result) {
                Some(id) => format!("{id}\n"),
                None => output::json(result),
            },
            NetworkCmd::Rm { .. } => String::new(),
            NetworkCmd::Ls => output::rows_or_json(result, network_table),
            NetworkCmd::Inspect { .. } => output::json(result),
            NetworkCmd::Connect { .. } => {
                let mut text = match (result.get("interface"), result.get("ipv4")) {
                    (Some(Value::String(i)), Some(Value::String(a))) => format!("{i} {a}\n"),
                    _ => String::new(),
                };
                for p in result["ports"].as_array().into_iter().flatten() {
                    if let Some(p) = p.as_str() {
                        text.push_str(&format!("published {p}\n"));
                    }
                }
                text
            }
            NetworkCmd::Disconnect { .. } | NetworkCmd::Peer(_) => String::new(),
        }
    }
}

/// The id in `create`'s result: the result itself if it is a string, else its `id` (or `Id`).
fn created_id(result: &Value) -> Option<&str> {
    match result {
        Value::String(id) => Some(id),
        Value::Object(map) => map.get("id").or_else(|| map.get("Id"))?.as_str(),
        _ => None,
    }
}

/// `network ls` as a table, like `docker network ls`.
fn network_table(networks: &[NetworkRow]) -> String {
    let rows: Vec<Vec<String>> = networks
        .iter()
        .map(|n| {
            vec![
                n.id.chars().take(SHORT_ID).collect(),
                n.name.clone(),
                n.driver.clone(),
                n.scope.clone(),
            ]
        })
        .collect();
    output::table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create() -> NetworkCmd {
        NetworkCmd::Create(CreateArgs {
            name: "n".into(),
            driver: None,
            subnet: None,
            gateway: None,
            ip_range: None,
            vni: None,
            peers: vec![],
            parent: None,
            mtu: None,
            internal: false,
            opts: vec![],
            scope: None,
        })
    }

    #[test]
    fn docker_options_fill_the_spec() {
        let o = |s: &str| driver_opt(s);
        assert_eq!(
            o("com.docker.network.bridge.enable_icc=false"),
            Ok(DriverOpt::Icc(false))
        );
        assert!(o("com.docker.network.bridge.enable_icc=maybe").is_err());
        assert!(o("com.docker.network.bridge.nope=1")
            .unwrap_err()
            .contains("unknown option"));
        assert!(o("no-equals").is_err());
        let NetworkCmd::Create(mut a) = create() else {
            unreachable!()
        };
        a.opts = vec![
            DriverOpt::Icc(false),
            DriverOpt::Masquerade(false),
            DriverOpt::HostBinding("192.0.2.1".parse().unwrap()),
            DriverOpt::Mtu(1400),
        ];
        let spec = a.spec();
        assert_eq!(spec.enable_icc, Some(false));
        assert_eq!(spec.enable_ip_masquerade, Some(false));
        assert_eq!(spec.host_binding_ipv4.as_deref(), Some("192.0.2.1"));
        assert_eq!(spec.mtu, Some(1400));
    }

    #[test]
    fn ls_table() {
        let result = json!([
            {"id": "3f1c2a9b8d7e6f5a4b3c2d1e", "name": "bridge", "driver": "bridge",
             "scope": "local", "ports": 2},
            {"id": "9a8b", "name": "overlay-one", "driver": "overlay", "scope": "global",
             "ports": 0}
        ]);
        assert_eq!(
            NetworkCmd::Ls.render(&result),
            "NETWORK ID     NAME          DRIVER    SCOPE\n\
             3f1c2a9b8d7e   bridge        bridge    local\n\
             9a8b           overlay-one   overlay   global\n"
        );
    }

    #[test]
    fn create_prints_the_id() {
        assert_eq!(create().render(&json!("abc123")), "abc123\n");
        assert_eq!(
            create().render(&json!({"id": "abc123", "name": "n"})),
            "abc123\n"
        );
        assert_eq!(
            create().render(&json!({"Id": "abc123", "Name": "n"})),
            "abc123\n"
        );
        let odd = json!({"created": true});
        assert_eq!(create().render(&odd), output::json(&odd));
    }

    #[test]
    fn inspect_prints_json_and_rm_nothing() {
        let doc = json!([{"Name": "n", "Id": "abc", "Driver": "bridge", "Scope": "local"}]);
        let inspect = NetworkCmd::Inspect { name: "n".into() };
        assert_eq!(inspect.render(&doc), output::json(&doc));
        assert!(
            inspect.render(&doc).contains("\n  {\n    \"Driver\""),
            "pretty JSON"
        );
        assert_eq!(NetworkCmd::Rm { name: "n".into() }.render(&json!(null)), "");
    }
}
