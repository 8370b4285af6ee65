//! The key layout in etcd: building keys and telling which object a key belongs to.
//!
//! Under a prefix (default `/vswitch/`):
//!
//! | key | value | lifetime |
//! |-----|-------|----------|
//! | `endpoints/NET/ID` | `{"mac", "ip", "node"}` | the owning node's lease |
//! | `networks/NET` | the [`NetworkSpec`](super::NetworkSpec) as JSON, VNI filled in | until removed |
//! | `nodes/NODE` | `{"vtep": "ADDR:PORT", "started": UNIX_SECS}` | the node's lease |
//! | `pool/NET/IP` | the owner of the address | until released |
//! | `pool/NET/next` | the last address handed out automatically (the cursor) | with the network |
//! | `vnis/VNI` | the network's name (decimal VNI: one claim per VNI) | with the network |
//!
//! What every host follows is one key range, [`Keys::watched`]: from the prefix up to
//! `pool/`, i.e. `endpoints/`, `networks/` and `nodes/`, the keys sorting in that order. The
//! address pools and the VNI claims sort after it: they are read and written by the host that
//! allocates (compare-and-swap), and never sent to every watcher, so a connect costs each
//! other host one watch event (its endpoint), not three (the address and the cursor too).
//!
//! Names (networks, nodes, endpoint ids) are non-empty, without `/` or control characters.

use std::net::Ipv4Addr;

use super::error::ClusterError;

/// The name of the IPAM cursor key inside `pool/NET/` (not an address, so no clash).
const CURSOR: &str = "next";

/// The longest name accepted as a key component.
const MAX_NAME: usize = 200;

/// The object a key stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `nodes/NODE`.
    Node(String),
    /// `networks/NET`.
    Network(String),
    /// `vnis/VNI`.
    Vni(u32),
    /// `pool/NET/IP`.
    Address {
        /// The network.
        network: String,
        /// The address.
        ip: Ipv4Addr,
    },
    /// `pool/NET/next`.
    Cursor {
        /// The network.
        network: String,
    },
    /// `endpoints/NET/ID`.
    Endpoint {
        /// The network.
        network: String,
        /// The endpoint id.
        id: String,
    },
}

/// Builds and parses the keys under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The prefix, always ending in `/`.
    prefix: String,
}

impl Keys {
    /// The layout under `prefix` (a `/` is appended when missing).
    pub fn new(prefix: &str) -> Keys {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `nodes/NODE`.
    pub fn node(&self, node: &str) -> String {
        format!("{}nodes/{node}", self.prefix)
    }

    /// `nodes/`.
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    /// `networks/NET`.
    pub fn network(&self, network: &str) -> String {
        format!("{}networks/{network}", self.prefix)
    }

    /// `vnis/VNI`.
    pub fn vni(&self, vni: u32) -> String {
        format!("{}vnis/{vni}", self.prefix)
    }

    /// `vnis/`.
    pub fn vnis(&self) -> String {
        format!("{}vnis/", self.prefix)
    }

    /// `pool/NET/`: every address and the cursor of a network.
    pub fn ipam(&self, network: &str) -> String {
        format!("{}pool/{network}/", self.prefix)
    }

    /// `pool/NET/IP`.
    pub fn address(&self, network: &str, ip: Ipv4Addr) -> String {
        format!("{}pool/{network}/{ip}", self.prefix)
    }

    /// `pool/NET/next`.
    pub fn cursor(&self, network: &str) -> String {
        format!("{}pool/{network}/{CURSOR}", self.prefix)
    }

    /// The key range every host reads on resync and watches, `[start, end)`: `endpoints/`,
    /// `networks/` and `nodes/`, not the pools and VNI claims (see the module's table).
    pub fn watched(&self) -> (String, String) {
        (self.prefix.clone(), format!("{}pool/", self.prefix))
    }

    /// `endpoints/NET/`.
    pub fn endpoints(&self, network: &str) -> String {
        format!("{}endpoints/{network}/", self.prefix)
    }

    /// `endpoints/NET/ID`.
    pub fn endpoint(&self, network: &str, id: &str) -> String {
        format!("{}endpoints/{network}/{id}", self.prefix)
    }

    /// What `key` stands for; `None` for a key outside the layout (ignored, never an error).
    pub fn parse(&self, key: &str) -> Option<Key> {
        let rest = key.strip_prefix(&self.prefix)?;
        let (kind, rest) = rest.split_once('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        match (kind, parts.as_slice()) {
            ("nodes", [node]) => Some(Key::Node(node.to_string())),
            ("networks", [network]) => Some(Key::Network(network.to_string())),
            ("vnis", [text]) => {
                let vni: u32 = text.parse().ok()?;
                // Only the canonical spelling, so one VNI has exactly one key.
                (vni.to_string() == *text).then_some(Key::Vni(vni))
            }
            ("pool", [network, CURSOR]) => Some(Key::Cursor {
                network: network.to_string(),
            }),
            ("pool", [network, ip]) => Some(Key::Address {
                network: network.to_string(),
                ip: ip.parse().ok()?,
            }),
            ("endpoints", [network, id]) => Some(Key::Endpoint {
                network: network.to_string(),
                id: id.to_string(),
            }),
            _ => None,
        }
    }
}

/// Refuses a name that cannot be one key component.
pub fn check_name(what: &'static str, name: &str) -> Result<(), ClusterError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_NAME {
        Some("longer than 200 bytes")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ClusterError::BadName {
            what,
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_documented_keys() {
        let keys = Keys::new("/vswitch");
        assert_eq!(keys.prefix(), "/vswitch/");
        assert_eq!(keys.node("h1"), "/vswitch/nodes/h1");
        assert_eq!(keys.network("blue"), "/vswitch/networks/blue");
        assert_eq!(keys.vni(4096), "/vswitch/vnis/4096");
        assert_eq!(
            keys.address("blue", Ipv4Addr::new(10, 0, 0, 2)),
            "/vswitch/pool/blue/10.0.0.2"
        );
        assert_eq!(keys.cursor("blue"), "/vswitch/pool/blue/next");
        assert_eq!(keys.endpoint("blue", "ep1"), "/vswitch/endpoints/blue/ep1");
    }

    /// The watched range holds every key a host follows and none of the pools or claims.
    #[test]
    fn the_watched_range_is_endpoints_networks_and_nodes() {
        let keys = Keys::new("/p/");
        let (start, end) = keys.watched();
        let inside = |k: &str| k >= start.as_str() && k < end.as_str();
        for k in [
            keys.endpoint("net", "e"),
            keys.network("net"),
            keys.node("n"),
        ] {
            assert!(inside(&k), "{k} is not watched");
        }
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        for k in [keys.address("net", ip), keys.cursor("net"), keys.vni(42)] {
            assert!(!inside(&k), "{k} is watched");
        }
    }

    #[test]
    fn parses_what_it_builds() {
        let keys = Keys::new("/p/");
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        let cases = [
            (keys.node("n"), Key::Node("n".into())),
            (keys.network("net"), Key::Network("net".into())),
            (keys.vni(42), Key::Vni(42)),
            (
                keys.address("net", ip),
                Key::Address {
                    network: "net".into(),
                    ip,
                },
            ),
            (
                keys.cursor("net"),
                Key::Cursor {
                    network: "net".into(),
                },
            ),
            (
                keys.endpoint("net", "e"),
                Key::Endpoint {
                    network: "net".into(),
                    id: "e".into(),
                },
            ),
        ];
        for (text, key) in cases {
            assert_eq!(keys.parse(&text), Some(key), "{text}");
        }
    }

    #[test]
    fn ignores_keys_outside_the_layout() {
        let keys = Keys::new("/p/");
        for key in [
            "/q/nodes/n",
            "/p/nodes/",
            "/p/nodes/a/b",
            "/p/vnis/x",
            "/p/vnis/042",
            "/p/pool/net/999.1.1.1",
            "/p/endpoints/net",
            "/p/endpoints//e",
            "/p/other/x",
            "/p/",
        ] {
            assert_eq!(keys.parse(key), None, "{key}");
        }
    }

    #[test]
    fn refuses_names_that_break_the_layout() {
        for bad in ["", "a/b", "x\n", ".", ".."] {
            assert!(check_name("network", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("network", &"a".repeat(201)).is_err());
        assert!(check_name("network", "blue-1_x.y").is_ok());
    }
}
