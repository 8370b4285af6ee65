//! `vswitchctl sandbox create|rm|ls`: sandboxes, the network namespaces endpoints live in.

use crate::output;
use clap::Subcommand;
use serde_json::Value;
use tools::api::{Request, SandboxRow};

/// `sandbox …`
#[derive(Debug, Subcommand)]
pub enum SandboxCmd {
    /// Create a sandbox: a network namespace at /run/netns/NAME (`ip netns exec NAME` works).
    Create {
        /// The sandbox's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// Adopt an existing namespace instead (e.g. /proc/PID/ns/net of a container).
        #[arg(long, value_name = "PATH")]
        netns: Option<String>,
    },
    /// Remove a sandbox (its endpoints are disconnected first).
    Rm {
        /// The sandbox's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// List sandboxes with their endpoints.
    Ls,
}

impl SandboxCmd {
    /// The request for the daemon.
    pub fn request(&self) -> Request {
        match self {
            SandboxCmd::Create { name, netns } => Request::SandboxCreate {
                name: name.clone(),
                netns: netns.clone(),
            },
            SandboxCmd::Rm { name } => Request::SandboxRm { name: name.clone() },
            SandboxCmd::Ls => Request::SandboxLs {},
        }
    }

    /// Human output: a table for `ls`, nothing for the others.
    pub fn render(&self, result: &Value) -> String {
        match self {
            SandboxCmd::Ls => output::rows_or_json(result, sandbox_table),
            _ => String::new(),
        }
    }
}

/// One line per endpoint (a sandbox without endpoints gets one line too).
fn sandbox_table(sandboxes: &[SandboxRow]) -> String {
    let mut rows = Vec::new();
    for s in sandboxes {
        if s.endpoints.is_empty() {
            rows.push(vec![
                s.name.clone(),
                s.netns.clone(),
                "-".into(),
                "".into(),
                "".into(),
            ]);
        }
        for e in &s.endpoints {
            rows.push(vec![
                s.name.clone(),
                s.netns.clone(),
                e.network.clone(),
                e.interface.clone(),
                e.ipv4.clone().unwrap_or_default(),
            ]);
        }
    }
    output::table(&["SANDBOX", "NETNS", "NETWORK", "INTERFACE", "IPV4"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ls_table_has_a_line_per_endpoint() {
        let r = json!([
            {"name": "a", "netns": "/run/netns/a", "endpoints": [
                {"network": "bridge", "interface": "eth0", "ipv4": "172.17.0.2/16"},
                {"network": "blue", "interface": "eth1", "ipv4": "172.18.0.2/16"}]},
            {"name": "b", "netns": "/run/netns/b", "endpoints": []}
        ]);
        let text = SandboxCmd::Ls.render(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].contains("eth0") && lines[1].contains("172.17.0.2/16"));
        assert!(lines[3].starts_with("b "));
    }
}
