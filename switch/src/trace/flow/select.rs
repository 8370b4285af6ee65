//! Which protocols a spec selects, from its keywords, `dl_type` and `nw_proto`, and whether
//! every field has the protocol it needs (`tp_dst` needs `tcp` or `udp`, and so on).

use super::fields::{number, require, Field, Fields, Key, Keyword, L4Kind, NetKind};
use super::FlowError;

/// The network protocol, with the keyword or field that selected it first (for messages).
pub(super) type Selected = Option<(String, NetKind)>;

/// What the spec selects after the IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Transport {
    /// TCP, UDP or ICMP, when selected.
    pub(super) kind: Option<L4Kind>,
    /// `nw_proto` of a protocol we build no header for.
    pub(super) nw_proto: Option<u8>,
}

/// The network protocol: every keyword and `dl_type` must agree.
pub(super) fn network(keywords: &[Keyword], fields: &Fields<'_>) -> Result<Selected, FlowError> {
    let mut selectors: Vec<(String, NetKind)> = keywords
        .iter()
        .map(|(n, k, _)| (n.to_string(), *k))
        .collect();
    if let Some(f) = fields.get(Key::DlType) {
        let t = number(f, 0, 0xffff)? as u16;
        selectors.push((format!("dl_type={}", f.value), NetKind::from_ethertype(t)));
    }
    let mut net: Selected = None;
    for (name, kind) in selectors {
        match &net {
            Some((first, k)) if *k != kind => return Err(FlowError::Conflict(first.clone(), name)),
            Some(_) => {}
            None => net = Some((name, kind)),
        }
    }
    Ok(net)
}

/// The transport: every keyword and `nw_proto` must agree.
pub(super) fn transport(
    keywords: &[Keyword],
    fields: &Fields<'_>,
    net: &Selected,
) -> Result<Transport, FlowError> {
    let l4 = keyword_transport(keywords)?;
    match fields.get(Key::NwProto) {
        Some(f) => nw_proto_transport(f, l4, net),
        None => Ok(Transport {
            kind: l4.map(|(_, k)| k),
            nw_proto: None,
        }),
    }
}

/// The transport the keywords select, with the first keyword that did.
fn keyword_transport(keywords: &[Keyword]) -> Result<Option<(String, L4Kind)>, FlowError> {
    let mut l4: Option<(String, L4Kind)> = None;
    for (name, _, kind) in keywords {
        let Some(kind) = kind else { continue };
        match &l4 {
            Some((first, k)) if k != kind => {
                return Err(FlowError::Conflict(first.clone(), name.to_string()))
            }
            _ => l4 = Some((name.to_string(), *kind)),
        }
    }
    Ok(l4)
}

/// The transport once `nw_proto` (the field `f`) is taken into account.
fn nw_proto_transport(
    f: &Field<'_>,
    l4: Option<(String, L4Kind)>,
    net: &Selected,
) -> Result<Transport, FlowError> {
    let net_kind = net.as_ref().map(|(_, k)| *k);
    require(
        f,
        matches!(net_kind, Some(NetKind::Ipv4 | NetKind::Ipv6)),
        "ip or ipv6",
    )?;
    let proto = number(f, 0, 255)? as u8;
    let implied = implied_transport(f, proto, net)?;
    let selects = |kind| Transport {
        kind: Some(kind),
        nw_proto: None,
    };
    match (l4, implied) {
        (Some((_, k)), Some(i)) if k == i => Ok(selects(k)),
        (Some((first, _)), _) => Err(FlowError::Conflict(first, format!("nw_proto={}", f.value))),
        (None, Some(i)) => Ok(selects(i)),
        (None, None) => Ok(Transport {
            kind: None,
            nw_proto: Some(proto),
        }),
    }
}

/// The transport a protocol number implies: TCP, UDP, or the ICMP of the flow's IP version
/// (the other version's is a conflict).
fn implied_transport(
    f: &Field<'_>,
    proto: u8,
    net: &Selected,
) -> Result<Option<L4Kind>, FlowError> {
    let net_kind = net.as_ref().map(|(_, k)| *k);
    Ok(match (proto, net_kind) {
        (6, _) => Some(L4Kind::Tcp),
        (17, _) => Some(L4Kind::Udp),
        (1, Some(NetKind::Ipv4)) | (58, Some(NetKind::Ipv6)) => Some(L4Kind::Icmp),
        (1, _) | (58, _) => {
            let first = net.as_ref().map_or("ip", |(n, _)| n.as_str());
            return Err(FlowError::Conflict(
                first.to_string(),
                format!("nw_proto={}", f.value),
            ));
        }
        _ => None,
    })
}

/// Refuses the first field whose protocol the spec does not select.
pub(super) fn check_prerequisites(
    fields: &Fields<'_>,
    net: Option<NetKind>,
    l4: Option<L4Kind>,
) -> Result<(), FlowError> {
    fields.iter().try_for_each(|f| prerequisite(f, net, l4))
}

/// Refuses `f` unless the spec selects its protocol.
fn prerequisite(f: &Field<'_>, net: Option<NetKind>, l4: Option<L4Kind>) -> Result<(), FlowError> {
    let is_ip = matches!(net, Some(NetKind::Ipv4 | NetKind::Ipv6));
    match f.key {
        Key::NwSrc | Key::NwDst => ip_address_prerequisite(f, net),
        Key::NwTtl => {
            if net == Some(NetKind::Arp) {
                return Err(FlowError::MissingPrerequisite {
                    field: f.name,
                    needs: "ip or ipv6 (not arp)",
                });
            }
            require(f, is_ip, "ip or ipv6")
        }
        Key::TpSrc | Key::TpDst => require(
            f,
            matches!(l4, Some(L4Kind::Tcp | L4Kind::Udp)),
            "tcp or udp (or tcp6, udp6)",
        ),
        Key::TcpFlags => require(f, l4 == Some(L4Kind::Tcp), "tcp or tcp6"),
        Key::IcmpType | Key::IcmpCode => require(f, l4 == Some(L4Kind::Icmp), "icmp or icmp6"),
        Key::ArpOp | Key::ArpSpa | Key::ArpTpa | Key::ArpSha | Key::ArpTha => {
            require(f, net == Some(NetKind::Arp), "arp")
        }
        Key::InPort | Key::DlSrc | Key::DlDst | Key::Vlan => Ok(()),
        Key::NwProto | Key::DlType | Key::Len => Ok(()),
    }
}

/// `nw_src`, `nw_dst` (any IP) and `ipv6_src`, `ipv6_dst` (IPv6 only); with `arp`, a pointer to
/// the ARP fields instead.
fn ip_address_prerequisite(f: &Field<'_>, net: Option<NetKind>) -> Result<(), FlowError> {
    if net == Some(NetKind::Arp) {
        let instead = if f.key == Key::NwSrc {
            "arp_spa"
        } else {
            "arp_tpa"
        };
        return Err(FlowError::NotWithArp {
            field: f.name,
            instead,
        });
    }
    if f.name.starts_with("ipv6") {
        require(f, net == Some(NetKind::Ipv6), "ipv6")
    } else {
        require(
            f,
            matches!(net, Some(NetKind::Ipv4 | NetKind::Ipv6)),
            "ip or ipv6",
        )
    }
}
