//! `vswitchctl port add|remove|list`: the switch's ports.

use crate::{args, output};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use tools::api::{PortRow, PortType, Request};

/// `port …`
#[derive(Debug, Subcommand)]
pub enum PortCmd {
    /// Attach an existing interface (system: AF_PACKET, e.g. the host end of a veth) or create
    /// a TAP (tap).
    Add(AddArgs),
    /// Detach a port (a TAP the daemon created is deleted).
    Remove {
        /// The port's interface name.
        #[arg(value_name = "IFNAME")]
        name: String,
    },
    /// Ports with type, network, state, MTU, VLAN and counters.
    List,
}

/// `port add IFNAME …`
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The interface to attach, or the TAP to create.
    #[arg(value_name = "IFNAME", value_parser = args::ifname)]
    name: String,
    /// The network to attach it to (the daemon's default if omitted).
    #[arg(long, value_name = "NET")]
    network: Option<String>,
    /// How the switch reaches the interface.
    #[arg(long = "type", value_enum, default_value_t = CliPortType::System)]
    port_type: CliPortType,
    /// Access VLAN: untagged frames on this port belong to VLAN N (1-4094).
    #[arg(long, value_name = "N", value_parser = args::vlan)]
    vlan: Option<u16>,
    /// Make it a trunk carrying these VLANs tagged (comma-separated, repeatable).
    #[arg(long, value_name = "VLANS", value_delimiter = ',', value_parser = args::vlan)]
    trunks: Option<Vec<u16>>,
}

/// The port types a user may ask for (`internal` ports are the daemon's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CliPortType {
    /// An existing interface, through AF_PACKET.
    System,
    /// A TAP device the daemon creates.
    Tap,
}

impl From<CliPortType> for PortType {
    fn from(t: CliPortType) -> PortType {
        match t {
            CliPortType::System => PortType::System,
            CliPortType::Tap => PortType::Tap,
        }
    }
}

impl PortCmd {
    /// The request for the daemon.
    pub fn request(&self) -> Request {
        match self {
            PortCmd::Add(a) => Request::PortAdd {
                name: a.name.clone(),
                network: a.network.clone(),
                port_type: a.port_type.into(),
                vlan: a.vlan,
                trunks: a.trunks.clone(),
            },
            PortCmd::Remove { name } => Request::PortRemove { name: name.clone() },
            PortCmd::List => Request::PortList {},
        }
    }

    /// Human output: a table for `list`, nothing for `add` and `remove`.
    pub fn render(&self, result: &Value) -> String {
        match self {
            PortCmd::Add(_) | PortCmd::Remove { .. } => String::new(),
            PortCmd::List => output::rows_or_json(result, port_table),
        }
    }
}

/// `port list` as a table.
fn port_table(ports: &[PortRow]) -> String {
    let rows: Vec<Vec<String>> = ports
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.port_type.to_string(),
                p.network.clone(),
                p.state.clone(),
                p.mtu.to_string(),
                p.vlan.clone(),
                p.rx_packets.to_string(),
                p.tx_packets.to_string(),
                p.rx_bytes.to_string(),
                p.tx_bytes.to_string(),
                p.drops.to_string(),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME", "TYPE", "NETWORK", "STATE", "MTU", "VLAN", "RX_PKTS", "TX_PKTS", "RX_BYTES",
            "TX_BYTES", "DROPS",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_table() {
        let result = json!([
            {"name": "veth1", "type": "system", "network": "bridge", "state": "up", "mtu": 1500,
             "vlan": "1", "rx_packets": 10, "tx_packets": 8, "rx_bytes": 1000, "tx_bytes": 800,
             "drops": 2},
            {"name": "vsw-gw0", "type": "internal", "network": "bridge", "state": "up",
             "mtu": 1500, "vlan": "trunk 10,20", "rx_packets": 0, "tx_packets": 0,
             "rx_bytes": 0, "tx_bytes": 0, "drops": 0}
        ]);
        let text = PortCmd::List.render(&result);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("NAME      TYPE       NETWORK"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("veth1     system     bridge"),
            "{text}"
        );
        let at = lines[0].find("DROPS").unwrap();
        assert_eq!(&lines[1][at..], "2");
        assert!(lines[2].contains("trunk 10,20"));
    }

    #[test]
    fn unexpected_shapes_print_json() {
        let odd = json!({"ports": "elsewhere"});
        assert_eq!(PortCmd::List.render(&odd), output::json(&odd));
        // No ports: just the header, like `docker ps`.
        let empty = PortCmd::List.render(&json!([]));
        assert_eq!(empty.lines().count(), 1);
        assert!(empty.starts_with("NAME") && empty.trim_end().ends_with("DROPS"));
        assert_eq!(
            PortCmd::Remove { name: "v".into() }.render(&json!({"x": 1})),
            ""
        );
    }
}
