//! What the firewall last programmed: the model, its rules as `nft` text, and a generation
//! number; the source of `vswitchctl nat show`.
//!
//! This record lives in memory only. The daemon's stored state (networks, endpoints, bindings) is
//! the source of truth: after `kill -9` the daemon rebuilds the [`Model`] from it and applies it,
//! and since every apply replaces the whole of our table in one transaction, whatever the crashed
//! run left there is replaced, never duplicated.

use super::model::{Model, PortBinding};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One programmed rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRow {
    /// The chain of `table inet vswitch` it is in.
    pub chain: String,
    /// The network it belongs to (`None`: shared by all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The binding it implements, `HOST_IP:PORTS->SANDBOX_IP:PORTS/PROTO`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<String>,
    /// The rule in `nft` syntax.
    pub rule: String,
}

/// The rules and bindings of one network, as `nat show` prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRules {
    /// The network (empty for the rules shared by all networks).
    pub network: String,
    /// Its published ports.
    pub bindings: Vec<PortBinding>,
    /// Its rules, in programmed order.
    pub rules: Vec<RuleRow>,
}

/// The answer of `vswitchctl nat show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatShow {
    /// Whether NAT and publishing are on; when not, why.
    pub available: bool,
    /// Why the firewall is off, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `inet vswitch`.
    pub table: String,
    /// How many transactions this run has applied.
    pub generation: u64,
    /// Per network (and one entry with an empty name for the shared rules).
    pub networks: Vec<NetworkRules>,
}

/// The last successful apply.
#[derive(Debug, Clone, Default)]
pub struct State {
    generation: u64,
    model: Model,
    rules: Vec<RuleRow>,
}

impl State {
    /// Records a successful apply of `model` as `rules`.
    pub fn record(&mut self, model: &Model, rules: Vec<RuleRow>) {
        self.generation += 1;
        self.model = model.clone();
        self.rules = rules;
    }

    /// Records that our table was removed.
    pub fn clear(&mut self) {
        self.generation += 1;
        self.model = Model::default();
        self.rules.clear();
    }

    /// How many transactions have been applied.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The model last programmed.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The rules last programmed, in order.
    pub fn rules(&self) -> &[RuleRow] {
        &self.rules
    }

    /// Rules and bindings grouped per network (the shared rules first, under an empty name).
    pub fn by_network(&self) -> Vec<NetworkRules> {
        let mut map: BTreeMap<String, NetworkRules> = BTreeMap::new();
        for name in self.model.networks.keys() {
            map.insert(
                name.clone(),
                NetworkRules {
                    network: name.clone(),
                    ..Default::default()
                },
            );
        }
        for r in &self.rules {
            let key = r.network.clone().unwrap_or_default();
            map.entry(key.clone())
                .or_insert_with(|| NetworkRules {
                    network: key,
                    ..Default::default()
                })
                .rules
                .push(r.clone());
        }
        for b in &self.model.bindings {
            if let Some(n) = map.get_mut(&b.network) {
                n.bindings.push(b.clone());
            }
        }
        map.into_values().collect()
    }
}
