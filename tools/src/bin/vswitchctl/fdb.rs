//! `vswitchctl fdb show|add|del|flush`: the MAC table (forwarding database).

use crate::{args, output};
use clap::Subcommand;
use serde_json::Value;
use switch::MacAddr;
use tools::api::{FdbRow, Request};

/// `fdb …`
#[derive(Debug, Subcommand)]
pub enum FdbCmd {
    /// The MAC table: learned and static entries with their port, VLAN and age.
    Show {
        /// Only this network's table.
        #[arg(long, value_name = "NET")]
        network: Option<String>,
    },
    /// Add a static entry: frames to MAC leave through PORT.
    Add {
        /// The address, e.g. 02:42:ac:11:00:02.
        #[arg(value_name = "MAC", value_parser = args::mac)]
        mac: MacAddr,
        /// The port frames to MAC leave through.
        #[arg(value_name = "PORT")]
        port: String,
        /// The VLAN of the entry (1-4094; the port's VLAN if omitted).
        #[arg(long, value_name = "N", value_parser = args::vlan)]
        vlan: Option<u16>,
    },
    /// Remove a MAC address from the table(s).
    Del {
        /// The address to remove.
        #[arg(value_name = "MAC", value_parser = args::mac)]
        mac: MacAddr,
        /// Only from this network's table.
        #[arg(long, value_name = "NET")]
        network: Option<String>,
    },
    /// Remove every learned entry.
    Flush {
        /// Only this network's table.
        #[arg(long, value_name = "NET")]
        network: Option<String>,
    },
}

impl FdbCmd {
    /// The request for the daemon; MACs go in canonical form (`02:42:ac:11:00:02`).
    pub fn request(&self) -> Request {
        match self {
            FdbCmd::Show { network } => Request::FdbShow {
                network: network.clone(),
            },
            FdbCmd::Add { mac, port, vlan } => Request::FdbAdd {
                mac: mac.to_string(),
                port: port.clone(),
                vlan: *vlan,
            },
            FdbCmd::Del { mac, network } => Request::FdbDel {
                mac: mac.to_string(),
                network: network.clone(),
            },
            FdbCmd::Flush { network } => Request::FdbFlush {
                network: network.clone(),
            },
        }
    }

    /// Human output: a table for `show`, nothing for the changes.
    pub fn render(&self, result: &Value) -> String {
        match self {
            FdbCmd::Show { .. } => output::rows_or_json(result, fdb_table),
            FdbCmd::Add { .. } | FdbCmd::Del { .. } | FdbCmd::Flush { .. } => String::new(),
        }
    }
}

/// `fdb show` as a table, like `ovs-appctl fdb/show`: `PORT VLAN MAC AGE`, with `static` for
/// the age of static entries. A NETWORK column comes first when the entries span several
/// networks, a REMOTE column (the VTEP) last when some entry was learned over VXLAN.
fn fdb_table(entries: &[FdbRow]) -> String {
    let several_networks = entries.iter().any(|e| e.network != entries[0].network);
    let any_remote = entries.iter().any(|e| e.remote.is_some());
    let mut header = vec!["PORT", "VLAN", "MAC", "AGE"];
    if several_networks {
        header.insert(0, "NETWORK");
    }
    if any_remote {
        header.push("REMOTE");
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let age = if e.is_static {
                "static".to_string()
            } else {
                e.age_s.to_string()
            };
            let mut row = vec![e.port.clone(), e.vlan.to_string(), e.mac.clone(), age];
            if several_networks {
                row.insert(0, e.network.clone());
            }
            if any_remote {
                row.push(e.remote.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    output::table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn show() -> FdbCmd {
        FdbCmd::Show { network: None }
    }

    #[test]
    fn show_table() {
        let result = json!([
            {"mac": "02:42:ac:11:00:02", "port": "veth1", "vlan": 1, "age_s": 12,
             "static": false, "network": "bridge"},
            {"mac": "02:42:ac:11:00:03", "port": "tap0", "vlan": 10, "age_s": 0,
             "static": true, "network": "bridge"}
        ]);
        let text = show().render(&result);
        assert_eq!(
            text,
            "PORT    VLAN   MAC                 AGE\n\
             veth1   1      02:42:ac:11:00:02   12\n\
             tap0    10     02:42:ac:11:00:03   static\n"
        );
    }

    #[test]
    fn remote_and_network_columns() {
        let result = json!([
            {"mac": "02:42:ac:11:00:02", "port": "veth1", "vlan": 1, "age_s": 3,
             "static": false, "network": "bridge"},
            {"mac": "02:42:0a:00:00:05", "port": "vxlan", "vlan": 1, "age_s": 7,
             "static": false, "network": "ov", "remote": "192.0.2.2"}
        ]);
        let text = show().render(&result);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("NETWORK   PORT") && lines[0].ends_with("AGE   REMOTE"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("bridge    veth1") && lines[1].ends_with(" 3"),
            "{text}"
        );
        let at = lines[0].find("REMOTE").unwrap();
        assert_eq!(&lines[2][at..], "192.0.2.2");
    }

    #[test]
    fn odd_or_empty() {
        assert_eq!(show().render(&json!([])), "PORT   VLAN   MAC   AGE\n");
        let odd = json!([{"mac": "x"}]);
        assert_eq!(show().render(&odd), output::json(&odd));
        let flush = FdbCmd::Flush { network: None };
        assert_eq!(flush.render(&json!({"flushed": 3})), "");
    }
}
