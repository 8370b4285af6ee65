//! The nftables backend: builds the whole of `table inet vswitch` from a [`Model`] as one batch
//! (pure, testable without root) and applies it with one `nft -j -f -` run, one transaction.
//!
//! The batch always starts with `add table` + `delete table` + `add table`: whatever the table
//! held before (rules of an older model, or of a run that was killed) is gone in the same
//! transaction that writes the new content, so nothing is ever duplicated and no other table is
//! touched. If the kernel refuses any part, the transaction is rolled back whole and the previous
//! rules stay.
//!
//! The chains mirror Docker's iptables recipe:
//!
//! | chain | hook (type, priority) | what |
//! |---|---|---|
//! | `prerouting` | prerouting (nat, dstnat) | to a local address (`fib daddr type local`) → `published` |
//! | `output` | output (nat, dstnat) | the host to its own non-loopback addresses → `published` |
//! | `published` | (regular) | one DNAT per published port: Docker's `DOCKER` nat chain |
//! | `postrouting` | postrouting (nat, srcnat) | masquerade out of a network, and the hairpin |
//! | `forward` | forward (filter, filter) | internal networks, published traffic, then isolation |
//! | `isolation-1`, `isolation-2` | (regular) | Docker's `DOCKER-ISOLATION-STAGE-1/2` |

use super::model::{Model, NetworkEdge, PortBinding, Proto};
use super::state::RuleRow;
use super::{Backend, FirewallError};
use nftables::expr::{self, Expression, NamedExpression, Payload, PayloadField};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{self, Match, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The one table vswitch owns.
pub const TABLE: &str = "vswitch";
/// Its family: `inet`, so that IPv6 rules can join the same table later.
pub const FAMILY: NfFamily = NfFamily::INet;

/// nftables' standard priorities (`dstnat`, `srcnat`, `filter`).
const PRIO_DSTNAT: i32 = -100;
const PRIO_SRCNAT: i32 = 100;
const PRIO_FILTER: i32 = 0;

/// The longest comment nftables keeps on a rule.
const MAX_COMMENT: usize = 120;

/// One rule being built: its nftables statements and the same rule in `nft` syntax, written
/// side by side so that `nat show` prints exactly what is programmed.
struct RuleBuilder {
    chain: &'static str,
    network: Option<String>,
    binding: Option<String>,
    stmts: Vec<Statement<'static>>,
    text: Vec<String>,
}

fn s(v: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(v.into()))
}

fn meta(key: expr::MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(expr::Meta { key }))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn ports(start: u16, end: u16) -> (Expression<'static>, String) {
    if start == end {
        (Expression::Number(u32::from(start)), start.to_string())
    } else {
        (
            Expression::Range(Box::new(expr::Range {
                range: [
                    Expression::Number(u32::from(start)),
                    Expression::Number(u32::from(end)),
                ],
            })),
            format!("{start}-{end}"),
        )
    }
}

impl RuleBuilder {
    fn new(chain: &'static str, network: Option<&str>) -> Self {
        RuleBuilder {
            chain,
            network: network.map(str::to_owned),
            binding: None,
            stmts: Vec::new(),
            text: Vec::new(),
        }
    }

    fn binding(mut self, b: &PortBinding) -> Self {
        self.binding = Some(b.to_string());
        self
    }

    fn matches(
        mut self,
        left: Expression<'static>,
        op: Operator,
        right: Expression<'static>,
        text: String,
    ) -> Self {
        self.stmts.push(Statement::Match(Match { left, right, op }));
        self.text.push(text);
        self
    }

    fn iif(self, name: &str, eq: bool) -> Self {
        let op = if eq { Operator::EQ } else { Operator::NEQ };
        let t = format!("iifname {}\"{name}\"", if eq { "" } else { "!= " });
        self.matches(meta(expr::MetaKey::Iifname), op, s(name), t)
    }

    fn oif(self, name: &str, eq: bool) -> Self {
        let op = if eq { Operator::EQ } else { Operator::NEQ };
        let t = format!("oifname {}\"{name}\"", if eq { "" } else { "!= " });
        self.matches(meta(expr::MetaKey::Oifname), op, s(name), t)
    }

    fn ip(self, field: &'static str, addr: Ipv4Addr) -> Self {
        let t = format!("ip {field} {addr}");
        self.matches(payload("ip", field), Operator::EQ, s(addr.to_string()), t)
    }

    fn ip_prefix(self, field: &'static str, addr: Ipv4Addr, len: u8, eq: bool) -> Self {
        let prefix = Expression::Named(NamedExpression::Prefix(expr::Prefix {
            addr: Box::new(s(addr.to_string())),
            len: u32::from(len),
        }));
        let op = if eq { Operator::EQ } else { Operator::NEQ };
        let t = format!("ip {field} {}{addr}/{len}", if eq { "" } else { "!= " });
        self.matches(payload("ip", field), op, prefix, t)
    }

    fn l4port(self, proto: Proto, field: &'static str, start: u16, end: u16) -> Self {
        let (e, t) = ports(start, end);
        let p = proto.as_str();
        self.matches(
            payload(p, field),
            Operator::EQ,
            e,
            format!("{p} {field} {t}"),
        )
    }

    fn daddr_local(self) -> Self {
        let mut flags = HashSet::new();
        flags.insert(expr::FibFlag::Daddr);
        let fib = Expression::Named(NamedExpression::Fib(expr::Fib {
            result: expr::FibResult::Type,
            flags,
        }));
        self.matches(fib, Operator::EQ, s("local"), "fib daddr type local".into())
    }

    fn ct_dnat(self) -> Self {
        let ct = Expression::Named(NamedExpression::CT(expr::CT {
            key: "status".into(),
            family: None,
            dir: None,
        }));
        self.matches(ct, Operator::IN, s("dnat"), "ct status dnat".into())
    }

    fn verdict(mut self, stmt: Statement<'static>, text: String) -> Self {
        self.stmts.push(stmt);
        self.text.push(text);
        self
    }

    fn accept(self) -> Self {
        self.verdict(Statement::Accept(None), "accept".into())
    }

    fn drop(self) -> Self {
        self.verdict(Statement::Drop(None), "drop".into())
    }

    fn jump(self, target: &'static str) -> Self {
        let j = stmt::JumpTarget {
            target: target.into(),
        };
        self.verdict(Statement::Jump(j), format!("jump {target}"))
    }

    fn masquerade(self) -> Self {
        self.verdict(Statement::Masquerade(None), "masquerade".into())
    }

    fn dnat(self, addr: Ipv4Addr, port: u16) -> Self {
        let nat = NAT {
            addr: Some(s(addr.to_string())),
            family: Some(stmt::NATFamily::IP),
            port: Some(Expression::Number(u32::from(port))),
            flags: None,
        };
        self.verdict(
            Statement::DNAT(Some(nat)),
            format!("dnat ip to {addr}:{port}"),
        )
    }

    fn comment(&self) -> String {
        let mut c = String::from("vswitch");
        if let Some(n) = &self.network {
            c.push_str(" net=");
            c.push_str(n);
        }
        if let Some(b) = &self.binding {
            c.push_str(" publish=");
            c.push_str(b);
        }
        if c.len() > MAX_COMMENT {
            let mut cut = MAX_COMMENT;
            while !c.is_char_boundary(cut) {
                cut -= 1;
            }
            c.truncate(cut);
        }
        c
    }
}

/// The whole ruleset for a model: the rules in order, each with its `nft` text.
pub struct Ruleset {
    rules: Vec<RuleBuilder>,
}

impl Ruleset {
    /// Builds the rules of our table from the model. Pure: no syscall, no `nft`.
    pub fn build(model: &Model) -> Ruleset {
        let mut rules = Vec::new();
        let nets: Vec<&NetworkEdge> = model.networks.values().collect();

        // Published ports: DNAT for traffic to this host's addresses, from outside and from itself.
        rules.push(
            RuleBuilder::new("prerouting", None)
                .daddr_local()
                .jump("published"),
        );
        rules.push(
            RuleBuilder::new("output", None)
                .ip_prefix("daddr", Ipv4Addr::new(127, 0, 0, 0), 8, false)
                .daddr_local()
                .jump("published"),
        );
        for b in &model.bindings {
            let Some(net) = model.networks.get(&b.network) else {
                continue;
            };
            if net.internal {
                continue;
            }
            let host_ip = b.effective_host_ip(Some(net));
            for (hp, cp) in b.host_ports.ports().zip(b.container_ports.ports()) {
                let mut r = RuleBuilder::new("published", Some(&net.name)).binding(b);
                if let Some(ip) = host_ip {
                    r = r.ip("daddr", ip);
                }
                rules.push(r.l4port(b.proto, "dport", hp, hp).dnat(b.sandbox_ip, cp));
            }
        }

        // Outbound: masquerade a network's subnet leaving through anything but its gateway;
        // hairpin: a DNAT'd connection from a network back into it is masqueraded too, so that
        // the reply comes back through the host and is translated again.
        for net in nets.iter().filter(|n| !n.internal) {
            let (addr, len) = (net.subnet.network(), net.subnet.prefix_len());
            if net.masquerade {
                rules.push(
                    RuleBuilder::new("postrouting", Some(&net.name))
                        .ip_prefix("saddr", addr, len, true)
                        .oif(&net.gateway_if, false)
                        .masquerade(),
                );
            }
            if model.bindings_of(&net.name).next().is_some() {
                rules.push(
                    RuleBuilder::new("postrouting", Some(&net.name))
                        .ct_dnat()
                        .ip_prefix("saddr", addr, len, true)
                        .oif(&net.gateway_if, true)
                        .masquerade(),
                );
            }
        }

        // Forwarding: internal networks first (nothing in or out but their own gateway), then
        // the published ports (accepted even across networks, as Docker's proxy allows), then
        // isolation between networks.
        for net in nets.iter().filter(|n| n.internal) {
            rules.push(
                RuleBuilder::new("forward", Some(&net.name))
                    .iif(&net.gateway_if, true)
                    .oif(&net.gateway_if, false)
                    .drop(),
            );
            rules.push(
                RuleBuilder::new("forward", Some(&net.name))
                    .oif(&net.gateway_if, true)
                    .iif(&net.gateway_if, false)
                    .drop(),
            );
        }
        for b in &model.bindings {
            let Some(net) = model.networks.get(&b.network) else {
                continue;
            };
            if net.internal {
                continue;
            }
            let (c0, c1) = (b.container_ports.start, b.container_ports.end);
            rules.push(
                RuleBuilder::new("forward", Some(&net.name))
                    .binding(b)
                    .ct_dnat()
                    .oif(&net.gateway_if, true)
                    .ip("daddr", b.sandbox_ip)
                    .l4port(b.proto, "dport", c0, c1)
                    .accept(),
            );
            rules.push(
                RuleBuilder::new("forward", Some(&net.name))
                    .binding(b)
                    .ct_dnat()
                    .iif(&net.gateway_if, true)
                    .ip("saddr", b.sandbox_ip)
                    .l4port(b.proto, "sport", c0, c1)
                    .accept(),
            );
        }
        if !nets.is_empty() {
            rules.push(RuleBuilder::new("forward", None).jump("isolation-1"));
        }
        for net in &nets {
            rules.push(
                RuleBuilder::new("isolation-1", Some(&net.name))
                    .iif(&net.gateway_if, true)
                    .oif(&net.gateway_if, false)
                    .jump("isolation-2"),
            );
        }
        for net in &nets {
            rules.push(
                RuleBuilder::new("isolation-2", Some(&net.name))
                    .oif(&net.gateway_if, true)
                    .drop(),
            );
        }
        Ruleset { rules }
    }

    /// The rules as rows (chain, network, `nft` text), in the order they are programmed.
    pub fn rows(&self) -> Vec<RuleRow> {
        self.rules
            .iter()
            .map(|r| RuleRow {
                chain: r.chain.to_owned(),
                network: r.network.clone(),
                publish: r.binding.clone(),
                rule: r.text.join(" "),
            })
            .collect()
    }

    /// The one nftables transaction that replaces our table's content with these rules.
    pub fn batch(&self) -> Nftables<'static> {
        let mut objs = Vec::with_capacity(self.rules.len() + 12);
        // `add` first so that `delete` cannot fail on a table that is not there yet.
        objs.push(cmd_add(NfListObject::Table(table())));
        objs.push(NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(
            table(),
        ))));
        objs.push(cmd_add(NfListObject::Table(table())));
        objs.extend(
            chains()
                .into_iter()
                .map(|c| cmd_add(NfListObject::Chain(c))),
        );
        for r in &self.rules {
            objs.push(cmd_add(NfListObject::Rule(Rule {
                family: FAMILY,
                table: TABLE.into(),
                chain: r.chain.into(),
                expr: Cow::Owned(r.stmts.clone()),
                handle: None,
                index: None,
                comment: Some(Cow::Owned(r.comment())),
            })));
        }
        Nftables {
            objects: Cow::Owned(objs),
        }
    }
}

/// The transaction that removes our table (and only it), whether or not it exists.
pub fn teardown_batch() -> Nftables<'static> {
    let objs = vec![
        cmd_add(NfListObject::Table(table())),
        NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(table()))),
    ];
    Nftables {
        objects: Cow::Owned(objs),
    }
}

fn cmd_add(obj: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(obj))
}

fn table() -> Table<'static> {
    Table {
        family: FAMILY,
        name: TABLE.into(),
        handle: None,
    }
}

fn chains() -> Vec<Chain<'static>> {
    let base = |name: &'static str, ty: NfChainType, hook: NfHook, prio: i32| Chain {
        family: FAMILY,
        table: TABLE.into(),
        name: name.into(),
        newname: None,
        handle: None,
        _type: Some(ty),
        hook: Some(hook),
        prio: Some(prio),
        dev: None,
        policy: Some(NfChainPolicy::Accept),
    };
    let regular = |name: &'static str| Chain {
        family: FAMILY,
        table: TABLE.into(),
        name: name.into(),
        newname: None,
        handle: None,
        _type: None,
        hook: None,
        prio: None,
        dev: None,
        policy: None,
    };
    vec![
        base(
            "prerouting",
            NfChainType::NAT,
            NfHook::Prerouting,
            PRIO_DSTNAT,
        ),
        base("output", NfChainType::NAT, NfHook::Output, PRIO_DSTNAT),
        regular("published"),
        base(
            "postrouting",
            NfChainType::NAT,
            NfHook::Postrouting,
            PRIO_SRCNAT,
        ),
        base("forward", NfChainType::Filter, NfHook::Forward, PRIO_FILTER),
        regular("isolation-1"),
        regular("isolation-2"),
    ]
}

/// Applies batches by running `nft -j -f -` in the calling thread's network namespace.
#[derive(Debug, Clone)]
pub struct NftBackend {
    program: PathBuf,
}

impl NftBackend {
    /// The backend using `nft` from `PATH`.
    pub fn new() -> NftBackend {
        NftBackend {
            program: PathBuf::from("nft"),
        }
    }

    /// The backend using the given `nft` binary.
    pub fn with_program(program: impl Into<PathBuf>) -> NftBackend {
        NftBackend {
            program: program.into(),
        }
    }

    /// Checks that `nft` runs and the kernel answers nf_tables requests (lists the tables,
    /// changes nothing). The error says what is missing.
    pub fn probe(&self) -> Result<(), String> {
        self.run(&["list", "tables"], None).map(|_| ())
    }

    /// Our table as `nft -j list table inet vswitch` prints it (`None` when it does not exist).
    pub fn read_table(&self) -> Result<Option<serde_json::Value>, FirewallError> {
        match self.run(&["-j", "list", "table", "inet", TABLE], None) {
            Ok(out) => serde_json::from_str(&out)
                .map(Some)
                .map_err(|e| FirewallError::Apply(format!("nft printed JSON we cannot read: {e}"))),
            Err(e) if e.contains("No such file or directory") => Ok(None),
            Err(e) => Err(FirewallError::Apply(e)),
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<String, String> {
        let prog = self.program.display();
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("{prog} not found (apt-get install nftables)")
                }
                _ => format!("cannot run {prog}: {e}"),
            })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error shows up as nft's own failure below; the pipe closes on drop.
            let _ = pipe.write_all(input);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for {prog}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{prog} {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Default for NftBackend {
    fn default() -> Self {
        NftBackend::new()
    }
}

impl Backend for NftBackend {
    fn apply(&mut self, batch: &Nftables<'_>) -> Result<(), FirewallError> {
        let json = serde_json::to_vec(batch)
            .map_err(|e| FirewallError::Apply(format!("cannot write the nftables batch: {e}")))?;
        self.run(&["-j", "-f", "-"], Some(&json))
            .map(|_| ())
            .map_err(FirewallError::Apply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::firewall::model::{PortRange, Proto};

    fn model() -> Model {
        let mut m = Model::new();
        m.add_network(NetworkEdge::new(
            "front",
            "10.1.0.0/24".parse().unwrap(),
            "vsgw-front",
        ))
        .unwrap();
        m.add_network(NetworkEdge::new(
            "back",
            "10.2.0.0/24".parse().unwrap(),
            "vsgw-back",
        ))
        .unwrap();
        let mut internal = NetworkEdge::new("db", "10.3.0.0/24".parse().unwrap(), "vsgw-db");
        internal.internal = true;
        m.add_network(internal).unwrap();
        m
    }

    fn texts(m: &Model, chain: &str) -> Vec<String> {
        Ruleset::build(m)
            .rows()
            .into_iter()
            .filter(|r| r.chain == chain)
            .map(|r| r.rule)
            .collect()
    }

    #[test]
    fn outbound_masquerades_non_internal_networks_only() {
        let mut m = model();
        let mut nomasq = NetworkEdge::new("plain", "10.4.0.0/24".parse().unwrap(), "vsgw-plain");
        nomasq.masquerade = false;
        m.add_network(nomasq).unwrap();
        assert_eq!(
            texts(&m, "postrouting"),
            vec![
                "ip saddr 10.2.0.0/24 oifname != \"vsgw-back\" masquerade",
                "ip saddr 10.1.0.0/24 oifname != \"vsgw-front\" masquerade",
            ]
        );
    }

    #[test]
    fn isolation_drops_between_gateways_and_internal_forwards_nothing() {
        let m = model();
        assert_eq!(
            texts(&m, "forward"),
            vec![
                "iifname \"vsgw-db\" oifname != \"vsgw-db\" drop",
                "oifname \"vsgw-db\" iifname != \"vsgw-db\" drop",
                "jump isolation-1",
            ]
        );
        assert_eq!(texts(&m, "isolation-1").len(), 3);
        assert!(texts(&m, "isolation-1")
            .contains(&"iifname \"vsgw-front\" oifname != \"vsgw-front\" jump isolation-2".into()));
        assert!(texts(&m, "isolation-2").contains(&"oifname \"vsgw-back\" drop".into()));
    }

    #[test]
    fn published_ports_dnat_from_outside_host_and_hairpin() {
        let mut m = model();
        let b = PortBinding {
            network: "front".into(),
            sandbox_ip: "10.1.0.2".parse().unwrap(),
            proto: Proto::Tcp,
            host_ip: None,
            host_ports: PortRange::new(8000, 8001).unwrap(),
            container_ports: PortRange::new(80, 81).unwrap(),
        };
        let mut pinned = b.clone();
        pinned.proto = Proto::Udp;
        pinned.host_ip = Some("192.0.2.1".parse().unwrap());
        pinned.host_ports = PortRange::single(53).unwrap();
        pinned.container_ports = PortRange::single(5353).unwrap();
        m.add_bindings(&[b, pinned]).unwrap();
        assert_eq!(
            texts(&m, "prerouting"),
            vec!["fib daddr type local jump published"]
        );
        assert_eq!(
            texts(&m, "output"),
            vec!["ip daddr != 127.0.0.0/8 fib daddr type local jump published"]
        );
        assert_eq!(
            texts(&m, "published"),
            vec![
                "tcp dport 8000 dnat ip to 10.1.0.2:80",
                "tcp dport 8001 dnat ip to 10.1.0.2:81",
                "ip daddr 192.0.2.1 udp dport 53 dnat ip to 10.1.0.2:5353",
            ]
        );
        let post = texts(&m, "postrouting");
        assert!(post.contains(
            &"ct status dnat ip saddr 10.1.0.0/24 oifname \"vsgw-front\" masquerade".into()
        ));
        let fwd = texts(&m, "forward");
        assert!(fwd.contains(
            &"ct status dnat oifname \"vsgw-front\" ip daddr 10.1.0.2 tcp dport 80-81 accept"
                .into()
        ));
        // Published traffic is accepted before the isolation stages can drop it.
        let accept = fwd.iter().position(|r| r.ends_with("accept")).unwrap();
        let iso = fwd.iter().position(|r| r == "jump isolation-1").unwrap();
        assert!(accept < iso);
    }

    #[test]
    fn host_binding_ipv4_is_the_default_host_address() {
        let mut m = Model::new();
        let mut net = NetworkEdge::new("n", "10.9.0.0/24".parse().unwrap(), "vsgw-n");
        net.host_binding_ipv4 = Some("198.51.100.7".parse().unwrap());
        m.add_network(net).unwrap();
        m.add_bindings(&[PortBinding {
            network: "n".into(),
            sandbox_ip: "10.9.0.2".parse().unwrap(),
            proto: Proto::Tcp,
            host_ip: None,
            host_ports: PortRange::single(80).unwrap(),
            container_ports: PortRange::single(80).unwrap(),
        }])
        .unwrap();
        assert_eq!(
            texts(&m, "published"),
            vec!["ip daddr 198.51.100.7 tcp dport 80 dnat ip to 10.9.0.2:80"]
        );
    }

    #[test]
    fn the_batch_replaces_only_our_table_in_one_document() {
        let m = model();
        let json = serde_json::to_value(Ruleset::build(&m).batch()).unwrap();
        let cmds = json["nftables"].as_array().unwrap();
        assert_eq!(cmds[0]["add"]["table"]["name"], "vswitch");
        assert_eq!(cmds[1]["delete"]["table"]["name"], "vswitch");
        assert_eq!(cmds[2]["add"]["table"]["name"], "vswitch");
        for c in cmds {
            let obj = c.as_object().unwrap().values().next().unwrap();
            let inner = obj.as_object().unwrap().values().next().unwrap();
            let table = inner.get("table").or_else(|| inner.get("name")).unwrap();
            assert_eq!(table, "vswitch", "{c}");
            assert_eq!(inner["family"], "inet", "{c}");
        }
        let rules = cmds
            .iter()
            .filter(|c| c["add"].get("rule").is_some())
            .count();
        assert_eq!(rules, Ruleset::build(&m).rows().len());
        // Building twice gives the same batch: applying it again cannot duplicate anything.
        assert_eq!(
            json,
            serde_json::to_value(Ruleset::build(&m).batch()).unwrap()
        );
    }

    #[test]
    fn an_empty_model_still_has_the_base_chains() {
        let rows = Ruleset::build(&Model::new()).rows();
        assert_eq!(rows.len(), 2, "only the two jumps to `published`");
        let json = serde_json::to_value(Ruleset::build(&Model::new()).batch()).unwrap();
        let chains = json["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["add"].get("chain").is_some())
            .count();
        assert_eq!(chains, 7);
    }
}
