//! `vswitchctl stats [PORT]`: per-port counters and drops by reason.

use crate::output;
use clap::Args;
use serde_json::Value;
use tools::api::{Request, StatsRow};

/// `stats [PORT]`
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this port (every port if omitted).
    #[arg(value_name = "PORT")]
    port: Option<String>,
}

impl StatsArgs {
    /// The request for the daemon.
    pub fn request(&self) -> Request {
        Request::Stats {
            port: self.port.clone(),
        }
    }

    /// Human output: one block per port.
    pub fn render(&self, result: &Value) -> String {
        output::rows_or_json(result, |ports: &[StatsRow]| {
            ports.iter().map(port_block).collect::<Vec<_>>().join("\n")
        })
    }
}

/// One port's counters:
///
/// ```text
/// veth1:
///   rx_packets          120
///   …
///   drop vlan_not_allowed  3
/// ```
fn port_block(s: &StatsRow) -> String {
    let mut rows = vec![
        vec!["rx_packets".to_string(), s.rx_packets.to_string()],
        vec!["rx_bytes".to_string(), s.rx_bytes.to_string()],
        vec!["tx_packets".to_string(), s.tx_packets.to_string()],
        vec!["tx_bytes".to_string(), s.tx_bytes.to_string()],
        vec!["learn_refused".to_string(), s.learn_refused.to_string()],
    ];
    if s.drops.is_empty() {
        rows.push(vec!["drops".to_string(), "0".to_string()]);
    }
    for (reason, count) in &s.drops {
        rows.push(vec![format!("drop {reason}"), count.to_string()]);
    }
    let mut block = format!("{}:\n", s.port);
    for line in output::table(&[], &rows).lines() {
        block.push_str("  ");
        block.push_str(line);
        block.push('\n');
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blocks() {
        let all = StatsArgs { port: None };
        let result = json!([
            {"port": "veth1", "rx_packets": 120, "rx_bytes": 15360, "tx_packets": 118,
             "tx_bytes": 15104, "learn_refused": 0,
             "drops": {"vlan_not_allowed": 3, "malformed": 1}},
            {"port": "tap0", "rx_packets": 0, "rx_bytes": 0, "tx_packets": 0, "tx_bytes": 0,
             "learn_refused": 2, "drops": {}}
        ]);
        let text = all.render(&result);
        assert_eq!(
            text,
            "veth1:\n\
            \x20 rx_packets              120\n\
            \x20 rx_bytes                15360\n\
            \x20 tx_packets              118\n\
            \x20 tx_bytes                15104\n\
            \x20 learn_refused           0\n\
            \x20 drop malformed          1\n\
            \x20 drop vlan_not_allowed   3\n\
            \n\
            tap0:\n\
            \x20 rx_packets      0\n\
            \x20 rx_bytes        0\n\
            \x20 tx_packets      0\n\
            \x20 tx_bytes        0\n\
            \x20 learn_refused   2\n\
            \x20 drops           0\n"
        );
    }

    #[test]
    fn one_port_as_an_object() {
        let one = StatsArgs {
            port: Some("veth1".into()),
        };
        let result = json!({"port": "veth1", "rx_packets": 1, "rx_bytes": 60, "tx_packets": 0,
                            "tx_bytes": 0, "learn_refused": 0, "drops": {}});
        assert!(one.render(&result).starts_with("veth1:\n  rx_packets"));
        let odd = json!({"veth1": {"rx": 1}});
        assert_eq!(one.render(&odd), output::json(&odd));
    }
}
