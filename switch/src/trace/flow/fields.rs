//! The syntax of a flow spec: tokens, `key=value` fields under their canonical keys, bare
//! keywords, and numbers.

use super::FlowError;

/// The keys of `key=value` fields, each under its canonical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    InPort,
    DlSrc,
    DlDst,
    Vlan,
    DlType,
    NwSrc,
    NwDst,
    NwTtl,
    NwProto,
    TpSrc,
    TpDst,
    TcpFlags,
    IcmpType,
    IcmpCode,
    ArpOp,
    ArpSpa,
    ArpTpa,
    ArpSha,
    ArpTha,
    Len,
}

impl Key {
    /// The key for a name as written, with the name to quote in messages.
    pub(super) fn from_name(name: &str) -> Option<(Key, &'static str)> {
        Some(match name {
            "in_port" => (Key::InPort, "in_port"),
            "dl_src" => (Key::DlSrc, "dl_src"),
            "dl_dst" => (Key::DlDst, "dl_dst"),
            "vlan" => (Key::Vlan, "vlan"),
            "dl_vlan" => (Key::Vlan, "dl_vlan"),
            "dl_type" => (Key::DlType, "dl_type"),
            "nw_src" => (Key::NwSrc, "nw_src"),
            "ipv6_src" => (Key::NwSrc, "ipv6_src"),
            "nw_dst" => (Key::NwDst, "nw_dst"),
            "ipv6_dst" => (Key::NwDst, "ipv6_dst"),
            "nw_ttl" => (Key::NwTtl, "nw_ttl"),
            "nw_proto" => (Key::NwProto, "nw_proto"),
            "tp_src" => (Key::TpSrc, "tp_src"),
            "tp_dst" => (Key::TpDst, "tp_dst"),
            "tcp_flags" => (Key::TcpFlags, "tcp_flags"),
            "icmp_type" => (Key::IcmpType, "icmp_type"),
            "icmp_code" => (Key::IcmpCode, "icmp_code"),
            "arp_op" => (Key::ArpOp, "arp_op"),
            "arp_spa" => (Key::ArpSpa, "arp_spa"),
            "arp_tpa" => (Key::ArpTpa, "arp_tpa"),
            "arp_sha" => (Key::ArpSha, "arp_sha"),
            "arp_tha" => (Key::ArpTha, "arp_tha"),
            "len" => (Key::Len, "len"),
            _ => return None,
        })
    }
}

/// The network protocol a keyword or `dl_type` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NetKind {
    Ipv4,
    Ipv6,
    Arp,
    Raw(u16),
}

impl NetKind {
    pub(super) fn from_ethertype(t: u16) -> NetKind {
        match t {
            0x0800 => NetKind::Ipv4,
            0x86dd => NetKind::Ipv6,
            0x0806 => NetKind::Arp,
            other => NetKind::Raw(other),
        }
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            NetKind::Ipv4 => "IPv4",
            NetKind::Ipv6 => "IPv6",
            NetKind::Arp => "ARP",
            NetKind::Raw(_) => "not IP",
        }
    }
}

/// The transport a keyword or `nw_proto` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum L4Kind {
    Tcp,
    Udp,
    Icmp,
}

/// A bare keyword as the spec wrote it: its name, the network protocol it selects and the
/// transport, if any.
pub(super) type Keyword = (&'static str, NetKind, Option<L4Kind>);

/// A bare keyword: the network protocol it selects and the transport, if any.
fn keyword(name: &str) -> Option<Keyword> {
    Some(match name {
        "ip" => ("ip", NetKind::Ipv4, None),
        "ipv6" => ("ipv6", NetKind::Ipv6, None),
        "arp" => ("arp", NetKind::Arp, None),
        "tcp" => ("tcp", NetKind::Ipv4, Some(L4Kind::Tcp)),
        "udp" => ("udp", NetKind::Ipv4, Some(L4Kind::Udp)),
        "icmp" => ("icmp", NetKind::Ipv4, Some(L4Kind::Icmp)),
        "tcp6" => ("tcp6", NetKind::Ipv6, Some(L4Kind::Tcp)),
        "udp6" => ("udp6", NetKind::Ipv6, Some(L4Kind::Udp)),
        "icmp6" => ("icmp6", NetKind::Ipv6, Some(L4Kind::Icmp)),
        _ => return None,
    })
}

/// One `key=value` field as written.
pub(super) struct Field<'a> {
    pub(super) key: Key,
    pub(super) name: &'static str,
    pub(super) value: &'a str,
}

/// The fields of a spec, looked up by key.
pub(super) struct Fields<'a>(Vec<Field<'a>>);

impl<'a> Fields<'a> {
    /// The field under `key`, if the spec gives it.
    pub(super) fn get(&self, key: Key) -> Option<&Field<'a>> {
        self.0.iter().find(|f| f.key == key)
    }

    /// Every field, in the order written.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Field<'a>> {
        self.0.iter()
    }

    /// The number under `key` within `min..=max`, or `default` when the spec does not give it.
    pub(super) fn number_or(
        &self,
        key: Key,
        min: u64,
        max: u64,
        default: u64,
    ) -> Result<u64, FlowError> {
        self.get(key).map_or(Ok(default), |f| number(f, min, max))
    }

    /// Adds the field `name=value`; refuses unknown, valueless and repeated ones.
    fn add(&mut self, name: &str, value: Option<&'a str>) -> Result<(), FlowError> {
        let Some((key, canonical)) = Key::from_name(name) else {
            return Err(FlowError::UnknownField(name.to_string()));
        };
        let value = match value {
            Some(v) if !v.is_empty() => v,
            _ => return Err(FlowError::MissingValue(canonical)),
        };
        if let Some(first) = self.get(key) {
            return Err(FlowError::Duplicate {
                field: canonical.to_string(),
                first: first.name.to_string(),
            });
        }
        self.0.push(Field {
            key,
            name: canonical,
            value,
        });
        Ok(())
    }
}

/// Splits a spec into its keywords and `key=value` fields; refuses unknown and repeated ones.
pub(super) fn split(spec: &str) -> Result<(Vec<Keyword>, Fields<'_>), FlowError> {
    let mut tokens = spec
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .peekable();
    if tokens.peek().is_none() {
        return Err(FlowError::Empty);
    }
    let mut keywords = Vec::new();
    let mut fields = Fields(Vec::new());
    for token in tokens {
        let (name, value) = match token.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (token, None),
        };
        match keyword(name) {
            Some(kw) => add_keyword(&mut keywords, kw, value)?,
            None => fields.add(name, value)?,
        }
    }
    Ok((keywords, fields))
}

/// Adds a bare keyword; refuses one with a value or given twice.
fn add_keyword(
    keywords: &mut Vec<Keyword>,
    kw: Keyword,
    value: Option<&str>,
) -> Result<(), FlowError> {
    if let Some(value) = value {
        return Err(FlowError::UnexpectedValue {
            field: kw.0,
            value: value.to_string(),
        });
    }
    if keywords.iter().any(|k| k.0 == kw.0) {
        return Err(FlowError::Duplicate {
            field: kw.0.to_string(),
            first: kw.0.to_string(),
        });
    }
    keywords.push(kw);
    Ok(())
}

/// Refuses `f` unless its protocol is selected.
pub(super) fn require(f: &Field<'_>, ok: bool, needs: &'static str) -> Result<(), FlowError> {
    if ok {
        Ok(())
    } else {
        Err(FlowError::MissingPrerequisite {
            field: f.name,
            needs,
        })
    }
}

/// A number, decimal or `0x` hex, within `min..=max`.
pub(super) fn number(f: &Field<'_>, min: u64, max: u64) -> Result<u64, FlowError> {
    let v = f.value;
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse::<u64>(),
    };
    let bad = || FlowError::BadNumber {
        field: f.name,
        value: v.to_string(),
    };
    // from_str_radix and parse accept a leading '+'; a field value has none.
    if v.contains('+') {
        return Err(bad());
    }
    match parsed {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(FlowError::OutOfRange {
            field: f.name,
            value: v.to_string(),
            min,
            max,
        }),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Err(FlowError::OutOfRange {
            field: f.name,
            value: v.to_string(),
            min,
            max,
        }),
        Err(_) => Err(bad()),
    }
}
