//! The L3 edge: outbound NAT, published ports and isolation between networks, programmed into
//! one nftables table that vswitch owns (`table inet vswitch`).
//!
//! # Mechanism
//!
//! Rules are built as typed nftables JSON objects with the `nftables` crate (the schema netavark
//! uses) and applied by running `nft -j -f -` once per change, fed the whole batch on stdin. One
//! `nft -f` run is one netlink batch, which the kernel commits or rolls back as a single
//! transaction. Why this and not `rustables` (netlink, no binary): the JSON schema is nftables'
//! documented, stable interface (`libnftables-json(5)`), the same `nft` validates our rules and
//! prints them back for inspection and tests, and `rustables` would have us encode expressions
//! register by register with much less review behind it. The cost is one process start per change
//! (a few milliseconds, on the control plane only) and a run-time dependency on `nft`.
//!
//! Every batch deletes our table and writes it again (see [`nft`]): the rules always equal the
//! [`Model`], so a change, a rebuild after `kill -9` and a repeated apply are the same operation,
//! and no rule can be duplicated or left behind. No other table is read or written, and
//! `iptables` is never run.
//!
//! # Using it from the daemon
//!
//! - at start: [`Firewall::detect`] (logs whether NAT and publishing are on), then
//!   [`enable_ipv4_forwarding`], then [`Firewall::apply`] with the model rebuilt from the stored
//!   state;
//! - network create/rm: [`Model::add_network`] / [`Model::remove_network`], then `apply`;
//! - connect `--publish SPEC`: [`ports::parse_publish`] (before anything changes),
//!   [`PublishSpec::bind`](ports::PublishSpec::bind) (checks the model and the host),
//!   [`Model::add_bindings`], `apply`;
//! - disconnect: [`Model::remove_bindings`], `apply`.
//!
//! When `nft` or the kernel's nf_tables is missing, the firewall is *unavailable*: switching goes
//! on, [`Firewall::status`] says why NAT and publishing are off, applying a model without
//! bindings is a no-op and a binding is refused with [`FirewallError::Unavailable`].
//!
//! Everything runs in the calling thread's network namespace (the daemon's).

pub mod model;
pub mod nft;
pub mod ports;
pub mod state;

pub use model::{Model, NetworkEdge, PortBinding, PortRange, Proto};
pub use nft::{NftBackend, Ruleset};
pub use ports::{parse_publish, PublishSpec};
pub use state::{NatShow, RuleRow};

use nftables::schema::Nftables;
use state::State;

/// Why the firewall refused or failed a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirewallError {
    /// Malformed input: a bad port spec, an address not on this host, a bad network.
    #[error("{0}")]
    Invalid(String),
    /// A network the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something else holds it: a host port already published or listened on.
    #[error("{0}")]
    Conflict(String),
    /// NAT and publishing are off on this host (no `nft`, or no nf_tables in the kernel).
    #[error("{0}")]
    Unavailable(String),
    /// The kernel (through `nft`) refused the transaction; nothing of it was applied.
    #[error("nftables: {0}")]
    Apply(String),
}

/// Applies one nftables batch as one transaction.
pub trait Backend: Send {
    /// Applies the whole batch, or nothing of it.
    fn apply(&mut self, batch: &Nftables<'_>) -> Result<(), FirewallError>;
}

/// A backend that keeps the batches it is given, for tests without root.
#[derive(Debug, Default, Clone)]
pub struct RecordingBackend {
    /// Every batch applied, as JSON.
    pub batches: Vec<serde_json::Value>,
    /// When set, the next apply fails with this message.
    pub fail_next: Option<String>,
}

impl Backend for RecordingBackend {
    fn apply(&mut self, batch: &Nftables<'_>) -> Result<(), FirewallError> {
        if let Some(msg) = self.fail_next.take() {
            return Err(FirewallError::Apply(msg));
        }
        let json = serde_json::to_value(batch)
            .map_err(|e| FirewallError::Apply(format!("cannot write the batch: {e}")))?;
        self.batches.push(json);
        Ok(())
    }
}

/// The L3 edge: a backend (or the reason there is none) and what was last programmed.
pub struct Firewall {
    backend: Result<Box<dyn Backend>, String>,
    state: State,
}

impl Firewall {
    /// Probes `nft` and the kernel in this namespace; logs whether NAT and publishing are on.
    pub fn detect() -> Firewall {
        let nft = NftBackend::new();
        match nft.probe() {
            Ok(()) => {
                tracing::info!(
                    table = "inet vswitch",
                    "nftables available: NAT and published ports are on"
                );
                Firewall::with_backend(Box::new(nft))
            }
            Err(why) => {
                tracing::warn!(
                    reason = %why,
                    "nftables unavailable: switching works, but outbound NAT, published ports and \
                     isolation with forwarding on are off; --publish will be refused"
                );
                Firewall::unavailable(why)
            }
        }
    }

    /// A firewall applying through `backend`.
    pub fn with_backend(backend: Box<dyn Backend>) -> Firewall {
        Firewall {
            backend: Ok(backend),
            state: State::default(),
        }
    }

    /// A firewall that is off, for `reason`.
    pub fn unavailable(reason: impl Into<String>) -> Firewall {
        Firewall {
            backend: Err(reason.into()),
            state: State::default(),
        }
    }

    /// `Ok` when rules can be programmed; otherwise why not.
    pub fn status(&self) -> Result<(), &str> {
        self.backend.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// Refuses bindings up front when the firewall is off (before a connect changes anything).
    pub fn check_can_publish(&self) -> Result<(), FirewallError> {
        match &self.backend {
            Ok(_) => Ok(()),
            Err(why) => Err(FirewallError::Unavailable(format!(
                "ports cannot be published: nftables is unavailable on this host ({why})"
            ))),
        }
    }

    /// Programs `model`: checks it, builds our whole table and applies it in one transaction.
    /// On failure the kernel keeps the previous rules and the recorded state is unchanged.
    pub fn apply(&mut self, model: &Model) -> Result<(), FirewallError> {
        let mut check = Model {
            networks: model.networks.clone(),
            bindings: Vec::new(),
        };
        check.add_bindings(&model.bindings)?;
        let backend = match &mut self.backend {
            Ok(b) => b,
            Err(_) if model.bindings.is_empty() => return Ok(()),
            Err(_) => return self.check_can_publish(),
        };
        let ruleset = Ruleset::build(model);
        backend.apply(&ruleset.batch())?;
        tracing::debug!(
            networks = model.networks.len(),
            bindings = model.bindings.len(),
            "nftables: table inet vswitch rebuilt in one transaction"
        );
        self.state.record(model, ruleset.rows());
        Ok(())
    }

    /// Removes our table (daemon shutdown with `--cleanup`, tests); other tables are untouched.
    pub fn teardown(&mut self) -> Result<(), FirewallError> {
        if let Ok(b) = &mut self.backend {
            b.apply(&nft::teardown_batch())?;
        }
        self.state.clear();
        Ok(())
    }

    /// The model last programmed.
    pub fn programmed(&self) -> &Model {
        self.state.model()
    }

    /// What is programmed, per network, for `vswitchctl nat show`.
    pub fn list(&self) -> NatShow {
        NatShow {
            available: self.backend.is_ok(),
            reason: self.backend.as_ref().err().cloned(),
            table: format!("inet {}", nft::TABLE),
            generation: self.state.generation(),
            networks: self.state.by_network(),
        }
    }
}

/// The sysctl that turns on IPv4 forwarding; it is per network namespace.
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns on IPv4 forwarding in the calling thread's network namespace (as Docker does), logs
/// it, and returns whether it was off before.
pub fn enable_ipv4_forwarding() -> Result<bool, FirewallError> {
    let ctx = |what: &str, e: std::io::Error| {
        FirewallError::Apply(format!(
            "{what} {IP_FORWARD}: {e} (IPv4 forwarding stays as it was)"
        ))
    };
    let now = std::fs::read_to_string(IP_FORWARD).map_err(|e| ctx("reading", e))?;
    if now.trim() == "1" {
        tracing::info!("IPv4 forwarding is on in vswitchd's network namespace");
        return Ok(false);
    }
    std::fs::write(IP_FORWARD, "1").map_err(|e| ctx("writing", e))?;
    tracing::info!(
        sysctl = "net.ipv4.ip_forward",
        "turned on IPv4 forwarding in vswitchd's network namespace, as Docker does \
         (networks stay isolated by table inet vswitch)"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(with_binding: bool) -> Model {
        let mut m = Model::new();
        m.add_network(NetworkEdge::new(
            "a",
            "10.1.0.0/24".parse().unwrap(),
            "vsgw-a",
        ))
        .unwrap();
        if with_binding {
            m.add_bindings(&[PortBinding {
                network: "a".into(),
                sandbox_ip: "10.1.0.2".parse().unwrap(),
                proto: Proto::Tcp,
                host_ip: None,
                host_ports: PortRange::single(8080).unwrap(),
                container_ports: PortRange::single(80).unwrap(),
            }])
            .unwrap();
        }
        m
    }

    #[test]
    fn every_apply_is_one_batch_that_starts_by_deleting_our_table() {
        let mut fw = Firewall::with_backend(Box::new(RecordingBackend::default()));
        fw.apply(&model(true)).unwrap();
        fw.apply(&model(false)).unwrap();
        let shown = fw.list();
        assert_eq!(shown.generation, 2);
        assert!(shown.networks.iter().all(|n| n.bindings.is_empty()));
        assert!(shown
            .networks
            .iter()
            .flat_map(|n| &n.rules)
            .all(|r| r.publish.is_none()));
    }

    #[test]
    fn a_failed_apply_keeps_the_recorded_state() {
        let backend = RecordingBackend {
            fail_next: Some("kernel says no".into()),
            ..Default::default()
        };
        let mut fw = Firewall::with_backend(Box::new(backend));
        let err = fw.apply(&model(true)).unwrap_err();
        assert!(err.to_string().contains("kernel says no"));
        assert_eq!(fw.list().generation, 0);
        assert!(fw.programmed().networks.is_empty());
    }

    #[test]
    fn an_inconsistent_model_is_refused_before_the_kernel() {
        let mut fw = Firewall::with_backend(Box::new(RecordingBackend::default()));
        let mut m = model(true);
        let dup = m.bindings[0].clone();
        m.bindings.push(dup);
        assert!(matches!(fw.apply(&m), Err(FirewallError::Conflict(_))));
        assert_eq!(fw.list().generation, 0);
    }

    #[test]
    fn unavailable_refuses_publishing_but_not_switching() {
        let mut fw = Firewall::unavailable("nft not found (apt-get install nftables)");
        fw.apply(&model(false)).unwrap();
        let err = fw.apply(&model(true)).unwrap_err();
        assert!(matches!(err, FirewallError::Unavailable(_)));
        assert!(
            err.to_string().contains("apt-get install nftables"),
            "{err}"
        );
        assert!(fw.check_can_publish().is_err());
        let shown = fw.list();
        assert!(!shown.available);
        assert!(shown.reason.unwrap().contains("nft not found"));
    }

    #[test]
    fn nat_show_groups_rules_and_bindings_per_network() {
        let mut fw = Firewall::with_backend(Box::new(RecordingBackend::default()));
        fw.apply(&model(true)).unwrap();
        let shown = serde_json::to_value(fw.list()).unwrap();
        let nets = shown["networks"].as_array().unwrap();
        let a = nets.iter().find(|n| n["network"] == "a").unwrap();
        assert_eq!(a["bindings"][0]["host_ports"]["start"], 8080);
        assert!(a["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "tcp dport 8080 dnat ip to 10.1.0.2:80"
                && r["chain"] == "published"));
        let shared = nets.iter().find(|n| n["network"] == "").unwrap();
        assert_eq!(
            shared["rules"].as_array().unwrap().len(),
            3,
            "two jumps to published, one to isolation"
        );
    }
}
