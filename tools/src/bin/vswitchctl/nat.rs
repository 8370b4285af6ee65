//! `vswitchctl nat show`: what the L3 edge has programmed in `table inet vswitch`.

use crate::output;
use clap::Subcommand;
use serde_json::Value;
use tools::api::Request;

/// `nat …`
#[derive(Debug, Subcommand)]
pub enum NatCmd {
    /// The rules and published ports programmed now, per network (`--json` for all of it).
    Show,
}

impl NatCmd {
    /// The request for the daemon.
    pub fn request(&self) -> Request {
        match self {
            NatCmd::Show => Request::NatShow {},
        }
    }

    /// A status line, the published ports, then the rules as a table.
    pub fn render(&self, result: &Value) -> String {
        let s = |v: &Value| v.as_str().unwrap_or("").to_string();
        let mut out = String::new();
        if result["available"].as_bool() == Some(true) {
            out.push_str(&format!(
                "table {}: {} transaction(s) applied by this run\n",
                s(&result["table"]),
                result["generation"].as_u64().unwrap_or(0)
            ));
        } else {
            out.push_str(&format!(
                "NAT and published ports are off: {}\n",
                s(&result["reason"])
            ));
        }
        let nets = result["networks"].as_array().cloned().unwrap_or_default();
        let mut published = Vec::new();
        let mut rules = Vec::new();
        for n in &nets {
            let name = match s(&n["network"]) {
                x if x.is_empty() => "*".to_string(),
                x => x,
            };
            for b in n["bindings"].as_array().into_iter().flatten() {
                let range = |r: &Value| {
                    let (a, z) = (r["start"].as_u64(), r["end"].as_u64());
                    match (a, z) {
                        (Some(a), Some(z)) if a != z => format!("{a}-{z}"),
                        (Some(a), _) => a.to_string(),
                        _ => "?".into(),
                    }
                };
                published.push(vec![
                    name.clone(),
                    format!(
                        "{}:{}",
                        b["host_ip"].as_str().unwrap_or("0.0.0.0"),
                        range(&b["host_ports"])
                    ),
                    format!("{}:{}", s(&b["sandbox_ip"]), range(&b["container_ports"])),
                    s(&b["proto"]),
                ]);
            }
            for r in n["rules"].as_array().into_iter().flatten() {
                rules.push(vec![name.clone(), s(&r["chain"]), s(&r["rule"])]);
            }
        }
        if !published.is_empty() {
            out.push('\n');
            out.push_str(&output::table(
                &["NETWORK", "HOST", "SANDBOX", "PROTO"],
                &published,
            ));
        }
        if !rules.is_empty() {
            out.push('\n');
            out.push_str(&output::table(&["NETWORK", "CHAIN", "RULE"], &rules));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn show_lists_bindings_and_rules() {
        let r = json!({"available": true, "table": "inet vswitch", "generation": 3,
            "networks": [{"network": "a", "bindings": [{"network": "a", "sandbox_ip": "10.1.0.2",
                "proto": "tcp", "host_ports": {"start": 8080, "end": 8080},
                "container_ports": {"start": 80, "end": 80}}],
                "rules": [{"chain": "published", "rule": "tcp dport 8080 dnat ip to 10.1.0.2:80"}]}]});
        let text = NatCmd::Show.render(&r);
        assert!(text.starts_with("table inet vswitch: 3"), "{text}");
        assert!(
            text.contains("0.0.0.0:8080") && text.contains("10.1.0.2:80"),
            "{text}"
        );
        assert!(text.contains("dnat ip to 10.1.0.2:80"), "{text}");
        let off = json!({"available": false, "reason": "nft not found", "networks": []});
        assert!(NatCmd::Show.render(&off).contains("off: nft not found"));
    }
}
