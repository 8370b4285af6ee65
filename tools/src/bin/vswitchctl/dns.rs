//! `vswitchctl dns stats`: the counters of the embedded DNS server (127.0.0.11 in sandboxes).

use crate::output;
use clap::Subcommand;
use serde_json::Value;
use tools::api::Request;

/// The counters in the order shown, with the label a person reads.
const COUNTERS: [(&str, &str); 14] = [
    ("queries", "queries"),
    ("answered_locally", "answered (local names)"),
    ("nxdomain", "nxdomain"),
    ("forwarded", "forwarded"),
    ("forward_answers", "forwarded answers"),
    ("failures", "failures (servfail)"),
    ("rejected", "rejected"),
    ("dropped_malformed", "dropped malformed"),
    ("dropped_other", "dropped (no resources)"),
    ("upstream_mismatches", "upstream mismatches"),
    ("cache_hits", "cache hits"),
    ("cache_misses", "cache misses"),
    ("cache_evictions", "cache evictions"),
    ("cache_entries", "cache entries"),
];

/// `dns …`
#[derive(Debug, Subcommand)]
pub enum DnsCmd {
    /// Queries, local answers, NXDOMAIN, forwarded, failures, drops and the forward cache's
    /// hits, misses, evictions and size since vswitchd started.
    Stats,
}

impl DnsCmd {
    /// The request for the daemon.
    pub fn request(&self) -> Request {
        match self {
            DnsCmd::Stats => Request::DnsStats {},
        }
    }

    /// Human output: one counter a line.
    pub fn render(&self, result: &Value) -> String {
        let Some(map) = result.as_object() else {
            return output::json(result);
        };
        let rows: Vec<Vec<String>> = COUNTERS
            .iter()
            .filter_map(|(key, label)| {
                let n = map.get(*key)?.as_u64()?;
                Some(vec![label.to_string(), n.to_string()])
            })
            .collect();
        if rows.is_empty() {
            return output::json(result);
        }
        output::table(&[], &rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counters_a_line_each() {
        let r = json!({"queries": 12, "answered_locally": 7, "nxdomain": 2, "forwarded": 3,
                       "forward_answers": 3, "failures": 0, "rejected": 0,
                       "dropped_malformed": 1, "dropped_other": 0, "upstream_mismatches": 0,
                       "cache_hits": 5, "cache_misses": 3, "cache_evictions": 0,
                       "cache_entries": 3});
        let text = DnsCmd::Stats.render(&r);
        assert_eq!(text.lines().count(), 14, "{text}");
        let line = |label: &str| {
            text.lines()
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("no {label}:\n{text}"))
                .split_whitespace()
                .last()
                .unwrap()
                .to_string()
        };
        assert_eq!(line("queries"), "12");
        assert_eq!(line("nxdomain"), "2");
        assert_eq!(line("dropped malformed"), "1");
        assert_eq!(line("cache hits"), "5");
        assert_eq!(DnsCmd::Stats.render(&json!([1])), output::json(&json!([1])));
        assert_eq!(DnsCmd::Stats.request(), Request::DnsStats {});
    }
}
