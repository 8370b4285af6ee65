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
    // Receive-queue depth, in frames: shown once the port ever had frames waiting.
    if s.rx_queue_max > 0 {
        rows.push(vec![
            "rx_queue_peak".to_string(),
            s.rx_queue_peak.to_string(),
        ]);
        rows.push(vec!["rx_queue_max".to_string(), s.rx_queue_max.to_string()]);
    }
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
    fn every_drop_reason_is_shown_by_its_name() {
        let all = StatsArgs { port: None };
        let drops: serde_json::Map<String, Value> = switch::DropReason::ALL
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name().to_string(), json!(i + 1)))
            .collect();
        let result = json!([{"port": "vtep", "rx_packets": 0, "rx_bytes": 0, "tx_packets": 0,
                             "tx_bytes": 0, "learn_refused": 0, "drops": drops}]);
        let text = all.render(&result);
        for (i, r) in switch::DropReason::ALL.iter().enumerate() {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(r.name()))
                .unwrap_or_else(|| panic!("no line for {r}:\n{text}"));
            assert!(line.ends_with(&format!(" {}", i + 1)), "{line}");
        }
        for name in [
            "recv_truncated",
            "vtep_recv_error",
            "overlay_send_failed",
            "bad_rx_frame",
            "too_big_for_ingress_port",
            "mac_move_refused",
        ] {
            assert!(text.contains(&format!("drop {name} ")), "{name}:\n{text}");
        }
    }

    #[test]
    fn queue_depth_is_shown_once_frames_waited() {
        let all = StatsArgs { port: None };
        let result = json!([
            {"port": "veth1", "rx_packets": 9, "rx_bytes": 540, "tx_packets": 0,
             "tx_bytes": 0, "learn_refused": 0, "rx_queue_peak": 3, "rx_queue_max": 41,
             "drops": {"tx_queue_full": 2}},
            {"port": "veth2", "rx_packets": 1, "rx_bytes": 60, "tx_packets": 0,
             "tx_bytes": 0, "learn_refused": 0, "drops": {}}
        ]);
        let text = all.render(&result);
        let (first, second) = text.split_once("\n\n").unwrap();
        let words: Vec<Vec<&str>> = first
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        for want in [
            &["rx_queue_peak", "3"][..],
            &["rx_queue_max", "41"],
            &["drop", "tx_queue_full", "2"],
        ] {
            assert!(words.iter().any(|w| w == want), "{want:?}:\n{first}");
        }
        // An older daemon's rows (no queue figures) and ports never read late show none.
        assert!(!second.contains("rx_queue"), "{second}");
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
