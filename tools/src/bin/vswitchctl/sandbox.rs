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

    /// Human output: a table for `ls`, how to use the DNS server for an adopted namespace,
    /// nothing for the others.
    pub fn render(&self, result: &Value) -> String {
        match self {
            SandboxCmd::Ls => output::rows_or_json(result, sandbox_table),
            SandboxCmd::Create {
                name,
                netns: Some(_),
            } => adopted_hint(name),
            _ => String::new(),
        }
    }
}

/// What an adopted namespace's programs need to use the DNS server: `ip netns exec NAME`
/// reads `/etc/netns/NAME/resolv.conf`, programs started otherwise read their own.
fn adopted_hint(name: &str) -> String {
    format!(
        "sandbox {name} adopted. Once connected to a network, its DNS server is 127.0.0.11:53 \
         (UDP and TCP).\n\
         Programs run with `ip netns exec {name}` use it (/etc/netns/{name}/resolv.conf); \
         programs started otherwise in that namespace\n\
         read their own /etc/resolv.conf: give them `nameserver 127.0.0.11` (e.g. bind-mount \
         /etc/netns/{name}/resolv.conf over it).\n"
    )
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
    fn adopting_says_how_to_use_the_resolver() {
        let adopt = SandboxCmd::Create {
            name: "c1".into(),
            netns: Some("/proc/1/ns/net".into()),
        };
        let text = adopt.render(&json!({"name": "c1", "netns": "/run/netns/c1"}));
        assert!(text.contains("127.0.0.11"), "{text}");
        assert!(text.contains("/etc/netns/c1/resolv.conf"), "{text}");
        let made = SandboxCmd::Create {
            name: "c1".into(),
            netns: None,
        };
        assert_eq!(made.render(&json!({})), "");
    }

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
