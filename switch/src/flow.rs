//! Flow specs in the style of Open vSwitch's `ofproto/trace`, turned into frames to trace.
//!
//! A spec is a list of comma- (or space-) separated `key=value` fields and bare keywords, in any
//! order, as `ovs-fields(7)` spells them:
//!
//! ```text
//! in_port=p1,vlan=10,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=40000,tp_dst=80
//! arp,arp_op=1,arp_spa=10.0.0.1,arp_tpa=10.0.0.2
//! icmp6,ipv6_src=fd00::1,ipv6_dst=fd00::2,icmp_type=128
//! dl_type=0x88cc,dl_dst=01:80:c2:00:00:0e,len=100
//! ```
//!
//! | field | meaning |
//! |---|---|
//! | `in_port=NAME` | the ingress port; kept as text for the caller |
//! | `dl_src=MAC`, `dl_dst=MAC` | Ethernet addresses |
//! | `vlan=N`, `dl_vlan=N` | push one 802.1Q tag, VLAN 1-4094 |
//! | `dl_type=0xNNNN` | EtherType; 0x0800, 0x86dd and 0x0806 mean `ip`, `ipv6` and `arp` |
//! | `ip`, `ipv6`, `arp` | the network protocol |
//! | `tcp`, `udp`, `icmp` / `tcp6`, `udp6`, `icmp6` | the transport, over IPv4 / IPv6 |
//! | `nw_src=IP`, `nw_dst=IP` (`ipv6_src`, `ipv6_dst` for IPv6) | IP addresses |
//! | `nw_ttl=N`, `nw_proto=N` | TTL or hop limit; IP protocol (6, 17, 1 and 58 select the transport) |
//! | `tp_src=N`, `tp_dst=N` | TCP or UDP ports |
//! | `tcp_flags=syn\|ack` | TCP flags by name (`+syn+ack` and numbers like `0x012` work too) |
//! | `icmp_type=N`, `icmp_code=N` | ICMP or ICMPv6 type and code |
//! | `arp_op=1\|2`, `arp_spa`, `arp_tpa`, `arp_sha`, `arp_tha` | ARP request or reply and its addresses |
//! | `len=N` | the frame's length, 60-65535: zero payload fills it, the length fields count it |
//!
//! Fields that are not given are zero, as in Open vSwitch, except where zero would make a frame
//! nobody sends:
//! - `dl_src` is 02:00:00:00:00:01 and `dl_dst` is ff:ff:ff:ff:ff:ff, for every protocol (a frame
//!   to nobody in particular is flooded, which is what a trace should show);
//! - a spec with no protocol carries EtherType 0x88b5 (IEEE 802 local experimental);
//! - `ip` or `ipv6` without `nw_proto` carries protocol 253 (RFC 3692, experimentation);
//! - `nw_ttl` is 64; `tcp_flags` is `syn`; `icmp_type` is echo request (8, or 128 for ICMPv6);
//! - `arp_op` is 1 (request) and `arp_sha` is `dl_src`.
//!
//! Fields need their protocol, in any order: `tp_dst=80,tcp` is fine, `tp_dst=80` alone is an
//! error, and so is `nw_src` with `arp` (ARP addresses are `arp_spa` and `arp_tpa`).
//!
//! Frames come out valid: IPv4 header, TCP, UDP, ICMP and ICMPv6 checksums are computed (by
//! etherparse's `PacketBuilder`), and short frames are padded to the 60-byte Ethernet minimum.
//!
//! [`parse_hex_frame`] reads the other way of giving a frame to trace: its bytes in hex.

use crate::wire::ethernet::TPID_8021Q;
use crate::wire::{MacAddr, VlanTag};
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, IpNumber, Ipv4Header, Ipv6Header, PacketBuilder,
    TcpHeader,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Smallest Ethernet frame without its FCS (IEEE 802.3 § 4.4.2).
pub const MIN_FRAME_LEN: usize = 60;
/// Largest frame `len=N` may ask for.
pub const MAX_FRAME_LEN: usize = 65535;

/// EtherType of a spec that names no protocol: IEEE 802 local experimental.
const EXPERIMENTAL_ETHERTYPE: u16 = 0x88b5;
/// IP protocol of `ip` or `ipv6` without `nw_proto`: RFC 3692 experimentation and testing.
const EXPERIMENTAL_IP_PROTO: u8 = 253;
/// Default source MAC: locally administered, unicast.
const DEFAULT_DL_SRC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
/// Default TTL and hop limit.
const DEFAULT_TTL: u8 = 64;
/// TCP window of built segments.
const TCP_WINDOW: u16 = 64240;

/// TCP flag bits (RFC 9293 § 3.1, RFC 3168 § 23.2) by the names `tcp_flags` accepts.
const TCP_FLAGS: [(&str, u16); 9] = [
    ("fin", 0x001),
    ("syn", 0x002),
    ("rst", 0x004),
    ("psh", 0x008),
    ("ack", 0x010),
    ("urg", 0x020),
    ("ece", 0x040),
    ("cwr", 0x080),
    ("ns", 0x100),
];

/// Every field and keyword a spec may hold, for the "unknown field" message.
const KNOWN: &str = "in_port, dl_src, dl_dst, vlan, dl_vlan, dl_type, ip, ipv6, arp, tcp, udp, \
                     icmp, tcp6, udp6, icmp6, nw_src, nw_dst, ipv6_src, ipv6_dst, nw_ttl, \
                     nw_proto, tp_src, tp_dst, tcp_flags, icmp_type, icmp_code, arp_op, arp_spa, \
                     arp_tpa, arp_sha, arp_tha, len";

/// Why a flow spec or a hex frame was refused; the message names the bad field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// Nothing but separators.
    #[error("empty flow spec: give fields like in_port=p1,tcp,nw_dst=10.0.0.2,tp_dst=80")]
    Empty,
    /// A key or keyword this parser does not know.
    #[error("unknown field `{0}` (known: {KNOWN})")]
    UnknownField(String),
    /// A field given twice (or under two of its names, like `vlan` and `dl_vlan`).
    #[error("duplicate field `{field}`{}", same_as(.field, .first))]
    Duplicate {
        /// The field as written the second time.
        field: String,
        /// The field as written the first time.
        first: String,
    },
    /// A `key=value` field written without its value.
    #[error("field `{0}` needs a value: {0}=…")]
    MissingValue(&'static str),
    /// A keyword written with a value.
    #[error("`{field}` is a keyword and takes no value (got `{field}={value}`)")]
    UnexpectedValue {
        /// The keyword.
        field: &'static str,
        /// The value it was given.
        value: String,
    },
    /// A value that is not a MAC address.
    #[error("{field}={value}: not a MAC address (expected six hex bytes like 02:42:ac:11:00:02)")]
    BadMac {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A value that is not an IP address (of the family the field takes).
    #[error("{field}={value}: not an {family} address")]
    BadIp {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
        /// "IPv4", "IPv6" or "IP".
        family: &'static str,
    },
    /// An address of the other family than the flow's protocol.
    #[error("{field}={value} is an {family} address but the flow is {flow}")]
    WrongFamily {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
        /// The address's family.
        family: &'static str,
        /// The flow's protocol.
        flow: &'static str,
    },
    /// A value that is not a number (decimal, or hex with `0x`).
    #[error("{field}={value}: not a number (decimal, or hex with 0x)")]
    BadNumber {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A number outside what the field can hold.
    #[error("{field}={value}: out of range, expected {min}-{max}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A value of the right type but not one the field accepts.
    #[error("{field}={value}: expected {expected}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// Two protocols that cannot both hold, like `tcp,udp` or `arp,ip`.
    #[error("conflicting protocols: `{0}` and `{1}`")]
    Conflict(String, String),
    /// A field whose protocol the spec does not select, like `tp_dst` without `tcp` or `udp`.
    #[error("`{field}` needs {needs}")]
    MissingPrerequisite {
        /// The field.
        field: &'static str,
        /// The protocols that would allow it.
        needs: &'static str,
    },
    /// An IP field used with `arp`.
    #[error("`{field}` cannot be used with arp: use {instead}")]
    NotWithArp {
        /// The field.
        field: &'static str,
        /// The ARP field to use instead.
        instead: &'static str,
    },
    /// `len=N` smaller than the headers the spec asks for.
    #[error("len={len} is too short: the headers alone take {need} bytes")]
    LenTooShort {
        /// The length asked for.
        len: usize,
        /// The length of the headers.
        need: usize,
    },
    /// A hex token with an odd number of digits.
    #[error("odd number of hex digits in `{0}`: each byte needs two")]
    OddHexDigits(String),
    /// A character that is neither a hex digit nor a separator.
    #[error("bad character {ch:?} at offset {offset} of the hex frame")]
    BadHexChar {
        /// The character.
        ch: char,
        /// Its byte offset in the text.
        offset: usize,
    },
    /// Hex text without a single byte.
    #[error("empty frame: no hex bytes given")]
    EmptyFrame,
}

/// " (same as `vlan`)" when a field was repeated under another of its names.
fn same_as(field: &str, first: &str) -> String {
    if field == first {
        String::new()
    } else {
        format!(" (same as `{first}`)")
    }
}

/// A parsed flow spec: everything needed to build its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    in_port: Option<String>,
    dl_src: MacAddr,
    dl_dst: MacAddr,
    vlan: Option<u16>,
    net: Net,
    len: Option<usize>,
}

/// What follows the Ethernet header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Net {
    /// An EtherType we build no header for: zero payload.
    Raw(u16),
    Arp {
        op: u16,
        sha: MacAddr,
        spa: Ipv4Addr,
        tha: MacAddr,
        tpa: Ipv4Addr,
    },
    Ipv4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        l4: L4,
    },
    Ipv6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        l4: L4,
    },
}

/// What follows the IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    /// No header we build: zero payload of this protocol.
    Other(u8),
    Tcp {
        src: u16,
        dst: u16,
        flags: u16,
    },
    Udp {
        src: u16,
        dst: u16,
    },
    Icmp {
        icmp_type: u8,
        code: u8,
    },
}

impl L4 {
    fn header_len(&self) -> usize {
        match self {
            L4::Other(_) => 0,
            L4::Tcp { .. } => TcpHeader::MIN_LEN,
            L4::Udp { .. } | L4::Icmp { .. } => 8,
        }
    }
}

impl FlowSpec {
    /// The `in_port` the spec names, if any.
    pub fn in_port(&self) -> Option<&str> {
        self.in_port.as_deref()
    }

    /// The frame's source MAC.
    pub fn dl_src(&self) -> MacAddr {
        self.dl_src
    }

    /// The frame's destination MAC.
    pub fn dl_dst(&self) -> MacAddr {
        self.dl_dst
    }

    /// The VLAN the frame is tagged with, if any.
    pub fn vlan(&self) -> Option<u16> {
        self.vlan
    }

    /// Bytes of all headers, Ethernet to transport.
    fn header_len(&self) -> usize {
        let l2 = 14 + if self.vlan.is_some() { 4 } else { 0 };
        l2 + match &self.net {
            Net::Raw(_) => 0,
            Net::Arp { .. } => 28,
            Net::Ipv4 { l4, .. } => 20 + l4.header_len(),
            Net::Ipv6 { l4, .. } => 40 + l4.header_len(),
        }
    }

    /// Builds the frame: headers with valid checksums, zero payload up to `len`, and at least
    /// 60 bytes.
    pub fn build_frame(&self) -> Vec<u8> {
        let total = self.len.unwrap_or(0).max(MIN_FRAME_LEN);
        // The payload that makes the frame `len` bytes long; without `len` the frame is padded
        // after the packet instead, as a NIC pads it.
        let payload = vec![0u8; self.len.map_or(0, |n| n.saturating_sub(self.header_len()))];
        let mut out = Vec::with_capacity(total.max(self.header_len()));
        out.extend_from_slice(&self.dl_dst.0);
        out.extend_from_slice(&self.dl_src.0);
        if let Some(vid) = self.vlan {
            let tag = VlanTag {
                tpid: TPID_8021Q,
                pcp: 0,
                dei: false,
                vid,
            };
            out.extend_from_slice(&tag.to_bytes());
        }
        // Writing to a Vec cannot fail, and the lengths were checked by `parse_flow`; should a
        // hand-made spec still be refused, the frame keeps the headers written so far.
        match &self.net {
            Net::Raw(ethertype) => out.extend_from_slice(&ethertype.to_be_bytes()),
            Net::Arp {
                op,
                sha,
                spa,
                tha,
                tpa,
            } => {
                out.extend_from_slice(&0x0806u16.to_be_bytes());
                if let Ok(arp) = ArpPacket::new(
                    ArpHardwareId::ETHERNET,
                    etherparse::EtherType::IPV4,
                    ArpOperation(*op),
                    &sha.0,
                    &spa.octets(),
                    &tha.0,
                    &tpa.octets(),
                ) {
                    out.extend_from_slice(&arp.to_bytes());
                }
            }
            Net::Ipv4 { src, dst, ttl, l4 } => {
                out.extend_from_slice(&0x0800u16.to_be_bytes());
                let ip = PacketBuilder::ipv4(src.octets(), dst.octets(), *ttl);
                match *l4 {
                    L4::Icmp { icmp_type, code } => {
                        let _ = ip
                            .icmpv4_raw(icmp_type, code, [0; 4])
                            .write(&mut out, &payload);
                    }
                    L4::Other(proto) => {
                        if let Ok(h) = Ipv4Header::new(
                            payload.len() as u16,
                            *ttl,
                            IpNumber(proto),
                            src.octets(),
                            dst.octets(),
                        ) {
                            // `write` fills in the header checksum.
                            let _ = h.write(&mut out);
                            out.extend_from_slice(&payload);
                        }
                    }
                    l4 => write_tcp_udp(ip, l4, &mut out, &payload),
                }
            }
            Net::Ipv6 {
                src,
                dst,
                hop_limit,
                l4,
            } => {
                out.extend_from_slice(&0x86ddu16.to_be_bytes());
                let ip = PacketBuilder::ipv6(src.octets(), dst.octets(), *hop_limit);
                match *l4 {
                    L4::Icmp { icmp_type, code } => {
                        let _ = ip
                            .icmpv6_raw(icmp_type, code, [0; 4])
                            .write(&mut out, &payload);
                    }
                    L4::Other(proto) => {
                        // Written by hand: the builder expects the extension headers that a
                        // next-header value like 0 (hop-by-hop) announces, and has none.
                        let h = Ipv6Header {
                            traffic_class: 0,
                            flow_label: Default::default(),
                            payload_length: payload.len() as u16,
                            next_header: IpNumber(proto),
                            hop_limit: *hop_limit,
                            source: src.octets(),
                            destination: dst.octets(),
                        };
                        out.extend_from_slice(&h.to_bytes());
                        out.extend_from_slice(&payload);
                    }
                    l4 => write_tcp_udp(ip, l4, &mut out, &payload),
                }
            }
        }
        if out.len() < total {
            out.resize(total, 0);
        }
        out
    }
}

/// Writes the IP header and a TCP or UDP header with its payload (ICMP and bare IP are written
/// by the caller: they differ between the IP versions).
fn write_tcp_udp(
    ip: etherparse::PacketBuilderStep<etherparse::IpHeaders>,
    l4: L4,
    out: &mut Vec<u8>,
    payload: &[u8],
) {
    let _ = match l4 {
        L4::Tcp { src, dst, flags } => {
            let mut h = TcpHeader::new(src, dst, 0, TCP_WINDOW);
            h.fin = flags & 0x001 != 0;
            h.syn = flags & 0x002 != 0;
            h.rst = flags & 0x004 != 0;
            h.psh = flags & 0x008 != 0;
            h.ack = flags & 0x010 != 0;
            h.urg = flags & 0x020 != 0;
            h.ece = flags & 0x040 != 0;
            h.cwr = flags & 0x080 != 0;
            h.ns = flags & 0x100 != 0;
            ip.tcp_header(h).write(out, payload)
        }
        L4::Udp { src, dst } => ip.udp(src, dst).write(out, payload),
        L4::Other(_) | L4::Icmp { .. } => Ok(()),
    };
}

/// The keys of `key=value` fields, each under its canonical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
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
    fn from_name(name: &str) -> Option<(Key, &'static str)> {
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
enum NetKind {
    Ipv4,
    Ipv6,
    Arp,
    Raw(u16),
}

impl NetKind {
    fn from_ethertype(t: u16) -> NetKind {
        match t {
            0x0800 => NetKind::Ipv4,
            0x86dd => NetKind::Ipv6,
            0x0806 => NetKind::Arp,
            other => NetKind::Raw(other),
        }
    }

    fn name(&self) -> &'static str {
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
enum L4Kind {
    Tcp,
    Udp,
    Icmp,
}

/// A bare keyword: the network protocol it selects and the transport, if any.
fn keyword(name: &str) -> Option<(&'static str, NetKind, Option<L4Kind>)> {
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
struct Field<'a> {
    key: Key,
    name: &'static str,
    value: &'a str,
}

/// The fields of a spec, looked up by key.
struct Fields<'a>(Vec<Field<'a>>);

impl<'a> Fields<'a> {
    fn get(&self, key: Key) -> Option<&Field<'a>> {
        self.0.iter().find(|f| f.key == key)
    }
}

/// Parses an `ofproto/trace`-style flow spec (see the module docs for the fields).
pub fn parse_flow(spec: &str) -> Result<FlowSpec, FlowError> {
    let tokens: Vec<&str> = spec
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() {
        return Err(FlowError::Empty);
    }

    // 1. Split into keywords and fields; refuse unknown and repeated ones.
    let mut keywords: Vec<(&'static str, NetKind, Option<L4Kind>)> = Vec::new();
    let mut fields = Fields(Vec::new());
    for token in tokens {
        let (name, value) = match token.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (token, None),
        };
        if let Some(kw) = keyword(name) {
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
            continue;
        }
        let Some((key, canonical)) = Key::from_name(name) else {
            return Err(FlowError::UnknownField(name.to_string()));
        };
        let value = match value {
            Some(v) if !v.is_empty() => v,
            _ => return Err(FlowError::MissingValue(canonical)),
        };
        if let Some(first) = fields.get(key) {
            return Err(FlowError::Duplicate {
                field: canonical.to_string(),
                first: first.name.to_string(),
            });
        }
        fields.0.push(Field {
            key,
            name: canonical,
            value,
        });
    }

    // 2. The network protocol: every keyword and dl_type must agree.
    let mut net: Option<(String, NetKind)> = None;
    let mut selectors: Vec<(String, NetKind)> = keywords
        .iter()
        .map(|(n, k, _)| (n.to_string(), *k))
        .collect();
    if let Some(f) = fields.get(Key::DlType) {
        let t = number(f, 0, 0xffff)? as u16;
        selectors.push((format!("dl_type={}", f.value), NetKind::from_ethertype(t)));
    }
    for (name, kind) in selectors {
        match &net {
            Some((first, k)) if *k != kind => return Err(FlowError::Conflict(first.clone(), name)),
            Some(_) => {}
            None => net = Some((name, kind)),
        }
    }

    // 3. The transport: every keyword and nw_proto must agree.
    let mut l4: Option<(String, L4Kind)> = None;
    for (name, _, kind) in &keywords {
        let Some(kind) = kind else { continue };
        match &l4 {
            Some((first, k)) if k != kind => {
                return Err(FlowError::Conflict(first.clone(), name.to_string()))
            }
            _ => l4 = Some((name.to_string(), *kind)),
        }
    }
    let net_kind = net.as_ref().map(|(_, k)| *k);
    let is_ip = matches!(net_kind, Some(NetKind::Ipv4 | NetKind::Ipv6));
    let mut nw_proto = None;
    if let Some(f) = fields.get(Key::NwProto) {
        require(f, is_ip, "ip or ipv6")?;
        let proto = number(f, 0, 255)? as u8;
        let implied = match (proto, net_kind) {
            (6, _) => Some(L4Kind::Tcp),
            (17, _) => Some(L4Kind::Udp),
            (1, Some(NetKind::Ipv4)) | (58, Some(NetKind::Ipv6)) => Some(L4Kind::Icmp),
            // ICMP of the other IP version.
            (1, _) | (58, _) => {
                let first = net.as_ref().map_or("ip", |(n, _)| n.as_str());
                return Err(FlowError::Conflict(
                    first.to_string(),
                    format!("nw_proto={}", f.value),
                ));
            }
            _ => None,
        };
        match (&l4, implied) {
            (Some((_, k)), Some(i)) if *k == i => {}
            (Some((first, _)), _) => {
                return Err(FlowError::Conflict(
                    first.clone(),
                    format!("nw_proto={}", f.value),
                ))
            }
            (None, Some(i)) => l4 = Some((format!("nw_proto={}", f.value), i)),
            (None, None) => nw_proto = Some(proto),
        }
    }
    let l4_kind = l4.map(|(_, k)| k);

    // 4. Every field needs its protocol.
    for f in &fields.0 {
        match f.key {
            Key::NwSrc | Key::NwDst => {
                let v6_name = f.name.starts_with("ipv6");
                if net_kind == Some(NetKind::Arp) {
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
                if v6_name {
                    require(f, net_kind == Some(NetKind::Ipv6), "ipv6")?;
                } else {
                    require(f, is_ip, "ip or ipv6")?;
                }
            }
            Key::NwTtl => {
                if net_kind == Some(NetKind::Arp) {
                    return Err(FlowError::MissingPrerequisite {
                        field: f.name,
                        needs: "ip or ipv6 (not arp)",
                    });
                }
                require(f, is_ip, "ip or ipv6")?;
            }
            Key::TpSrc | Key::TpDst => require(
                f,
                matches!(l4_kind, Some(L4Kind::Tcp | L4Kind::Udp)),
                "tcp or udp (or tcp6, udp6)",
            )?,
            Key::TcpFlags => require(f, l4_kind == Some(L4Kind::Tcp), "tcp or tcp6")?,
            Key::IcmpType | Key::IcmpCode => {
                require(f, l4_kind == Some(L4Kind::Icmp), "icmp or icmp6")?
            }
            Key::ArpOp | Key::ArpSpa | Key::ArpTpa | Key::ArpSha | Key::ArpTha => {
                require(f, net_kind == Some(NetKind::Arp), "arp")?
            }
            Key::InPort | Key::DlSrc | Key::DlDst | Key::Vlan => {}
            Key::NwProto | Key::DlType | Key::Len => {}
        }
    }

    // 5. The values.
    let mac = |key: Key, default: MacAddr| -> Result<MacAddr, FlowError> {
        match fields.get(key) {
            None => Ok(default),
            Some(f) => f.value.parse().map_err(|_| FlowError::BadMac {
                field: f.name,
                value: f.value.to_string(),
            }),
        }
    };
    let num = |key: Key, min: u64, max: u64, default: u64| -> Result<u64, FlowError> {
        fields.get(key).map_or(Ok(default), |f| number(f, min, max))
    };
    let in_port = fields.get(Key::InPort).map(|f| f.value.to_string());
    let dl_src = mac(Key::DlSrc, DEFAULT_DL_SRC)?;
    let dl_dst = mac(Key::DlDst, MacAddr::BROADCAST)?;
    let vlan = match fields.get(Key::Vlan) {
        Some(f) => Some(number(f, 1, 4094)? as u16),
        None => None,
    };
    let len = match fields.get(Key::Len) {
        Some(f) => Some(number(f, MIN_FRAME_LEN as u64, MAX_FRAME_LEN as u64)? as usize),
        None => None,
    };
    let l4 = match l4_kind {
        None => L4::Other(nw_proto.unwrap_or(EXPERIMENTAL_IP_PROTO)),
        Some(L4Kind::Tcp) => L4::Tcp {
            src: num(Key::TpSrc, 0, 65535, 0)? as u16,
            dst: num(Key::TpDst, 0, 65535, 0)? as u16,
            flags: match fields.get(Key::TcpFlags) {
                Some(f) => tcp_flags(f)?,
                None => 0x002,
            },
        },
        Some(L4Kind::Udp) => L4::Udp {
            src: num(Key::TpSrc, 0, 65535, 0)? as u16,
            dst: num(Key::TpDst, 0, 65535, 0)? as u16,
        },
        Some(L4Kind::Icmp) => L4::Icmp {
            icmp_type: num(
                Key::IcmpType,
                0,
                255,
                if net_kind == Some(NetKind::Ipv6) {
                    128
                } else {
                    8
                },
            )? as u8,
            code: num(Key::IcmpCode, 0, 255, 0)? as u8,
        },
    };
    let ttl = num(Key::NwTtl, 0, 255, DEFAULT_TTL.into())? as u8;
    let net = match net_kind {
        None => Net::Raw(EXPERIMENTAL_ETHERTYPE),
        Some(NetKind::Raw(t)) => Net::Raw(t),
        Some(NetKind::Arp) => Net::Arp {
            op: match fields.get(Key::ArpOp) {
                None => 1,
                Some(f) => match f.value {
                    "request" => 1,
                    "reply" => 2,
                    _ => number(f, 1, 2)? as u16,
                },
            },
            sha: mac(Key::ArpSha, dl_src)?,
            spa: ipv4(fields.get(Key::ArpSpa))?,
            tha: mac(Key::ArpTha, MacAddr::ZERO)?,
            tpa: ipv4(fields.get(Key::ArpTpa))?,
        },
        Some(NetKind::Ipv4) => Net::Ipv4 {
            src: ip_of(fields.get(Key::NwSrc), NetKind::Ipv4)?
                .and_then(as_v4)
                .unwrap_or(Ipv4Addr::UNSPECIFIED),
            dst: ip_of(fields.get(Key::NwDst), NetKind::Ipv4)?
                .and_then(as_v4)
                .unwrap_or(Ipv4Addr::UNSPECIFIED),
            ttl,
            l4,
        },
        Some(NetKind::Ipv6) => Net::Ipv6 {
            src: ip_of(fields.get(Key::NwSrc), NetKind::Ipv6)?
                .and_then(as_v6)
                .unwrap_or(Ipv6Addr::UNSPECIFIED),
            dst: ip_of(fields.get(Key::NwDst), NetKind::Ipv6)?
                .and_then(as_v6)
                .unwrap_or(Ipv6Addr::UNSPECIFIED),
            hop_limit: ttl,
            l4,
        },
    };

    let flow = FlowSpec {
        in_port,
        dl_src,
        dl_dst,
        vlan,
        net,
        len,
    };
    if let Some(len) = len {
        let need = flow.header_len();
        if len < need {
            return Err(FlowError::LenTooShort { len, need });
        }
    }
    Ok(flow)
}

/// Refuses `f` unless its protocol is selected.
fn require(f: &Field<'_>, ok: bool, needs: &'static str) -> Result<(), FlowError> {
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
fn number(f: &Field<'_>, min: u64, max: u64) -> Result<u64, FlowError> {
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

/// An IPv4 address of an ARP field, 0.0.0.0 when absent.
fn ipv4(f: Option<&Field<'_>>) -> Result<Ipv4Addr, FlowError> {
    let Some(f) = f else {
        return Ok(Ipv4Addr::UNSPECIFIED);
    };
    f.value.parse().map_err(|_| FlowError::BadIp {
        field: f.name,
        value: f.value.to_string(),
        family: "IPv4",
    })
}

/// An IP address of the flow's family, if the field is given.
fn ip_of(f: Option<&Field<'_>>, family: NetKind) -> Result<Option<IpAddr>, FlowError> {
    let Some(f) = f else { return Ok(None) };
    let bad_ip = |family| FlowError::BadIp {
        field: f.name,
        value: f.value.to_string(),
        family,
    };
    let addr: IpAddr = f.value.parse().map_err(|_| {
        bad_ip(match family {
            NetKind::Ipv6 => "IPv6",
            _ => "IPv4",
        })
    })?;
    let addr_family = if addr.is_ipv4() {
        NetKind::Ipv4
    } else {
        NetKind::Ipv6
    };
    if addr_family != family {
        return Err(FlowError::WrongFamily {
            field: f.name,
            value: f.value.to_string(),
            family: addr_family.name(),
            flow: family.name(),
        });
    }
    Ok(Some(addr))
}

fn as_v4(a: IpAddr) -> Option<Ipv4Addr> {
    match a {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

fn as_v6(a: IpAddr) -> Option<Ipv6Addr> {
    match a {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}

/// `tcp_flags=syn|ack`, `+syn+ack` or a number up to 0x1ff.
fn tcp_flags(f: &Field<'_>) -> Result<u16, FlowError> {
    let v = f.value;
    if v.starts_with(|c: char| c.is_ascii_digit()) {
        return Ok(number(f, 0, 0x1ff)? as u16);
    }
    let bad = || FlowError::BadValue {
        field: f.name,
        value: v.to_string(),
        expected: "flag names (fin, syn, rst, psh, ack, urg, ece, cwr, ns) like syn|ack or \
                   +syn+ack, or a number like 0x012",
    };
    let mut flags = 0;
    for name in v.split(['|', '+']) {
        if name.is_empty() {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        let (_, bit) = TCP_FLAGS
            .iter()
            .find(|(n, _)| *n == lower)
            .ok_or_else(bad)?;
        flags |= bit;
    }
    if flags == 0 && !v.is_empty() && v.chars().all(|c| c == '|' || c == '+') {
        return Err(bad());
    }
    Ok(flags)
}

/// Reads a frame written in hex: `ff ff ff …`, `ffffff…`, `ff:ff:…`, with `0x` prefixes and
/// newlines allowed.
pub fn parse_hex_frame(text: &str) -> Result<Vec<u8>, FlowError> {
    let mut out = Vec::new();
    let is_sep = |c: char| c.is_whitespace() || c == ':' || c == ',';
    let mut rest = text;
    let mut offset = 0;
    while !rest.is_empty() {
        // Skip separators, then take one token.
        let skip = rest.len() - rest.trim_start_matches(is_sep).len();
        offset += skip;
        rest = &rest[skip..];
        let end = rest.find(is_sep).unwrap_or(rest.len());
        let token = &rest[..end];
        let (digits, digits_at) = match token
            .strip_prefix("0x")
            .or_else(|| token.strip_prefix("0X"))
        {
            Some(d) => (d, offset + 2),
            None => (token, offset),
        };
        if let Some((i, ch)) = digits.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(FlowError::BadHexChar {
                ch,
                offset: digits_at + i,
            });
        }
        if digits.len() % 2 != 0 {
            return Err(FlowError::OddHexDigits(token.to_string()));
        }
        // All ASCII hex digits from here: two of them make a byte.
        for pair in digits.as_bytes().chunks(2) {
            let hi = (pair[0] as char).to_digit(16).unwrap_or(0);
            let lo = (pair[1] as char).to_digit(16).unwrap_or(0);
            out.push((hi * 16 + lo) as u8);
        }
        offset += end;
        rest = &rest[end..];
    }
    if out.is_empty() {
        return Err(FlowError::EmptyFrame);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    fn frame(spec: &str) -> Vec<u8> {
        parse_flow(spec)
            .unwrap_or_else(|e| panic!("{spec}: {e}"))
            .build_frame()
    }

    fn err(spec: &str) -> FlowError {
        match parse_flow(spec) {
            Ok(f) => panic!("{spec} was accepted: {f:?}"),
            Err(e) => e,
        }
    }

    /// The Internet checksum (RFC 1071) of some 16-bit words and bytes: 0 when they verify.
    fn checksum(chunks: &[&[u8]]) -> u16 {
        let mut sum: u32 = 0;
        for chunk in chunks {
            for pair in chunk.chunks(2) {
                let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
                sum += word as u32;
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// Checks the IPv4 header checksum and the transport checksum of a built frame by hand.
    fn assert_checksums(frame: &[u8]) {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let (pseudo, l4): (Vec<u8>, &[u8]) = match &p.net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header();
                assert_eq!(checksum(&[h.slice()]), 0, "IPv4 header checksum");
                let l4 = ip.payload().payload;
                let mut pseudo = h.source().to_vec();
                pseudo.extend_from_slice(&h.destination());
                pseudo.extend_from_slice(&[0, h.protocol().0]);
                pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                (pseudo, l4)
            }
            Some(NetSlice::Ipv6(ip)) => {
                let h = ip.header();
                let l4 = ip.payload().payload;
                let mut pseudo = h.source().to_vec();
                pseudo.extend_from_slice(&h.destination());
                pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, h.next_header().0]);
                (pseudo, l4)
            }
            _ => return,
        };
        match &p.transport {
            Some(TransportSlice::Tcp(_))
            | Some(TransportSlice::Udp(_))
            | Some(TransportSlice::Icmpv6(_)) => {
                assert_eq!(checksum(&[&pseudo, l4]), 0, "transport checksum")
            }
            Some(TransportSlice::Icmpv4(_)) => assert_eq!(checksum(&[l4]), 0, "ICMP checksum"),
            _ => {}
        }
    }

    #[test]
    fn tcp_over_ipv4_on_a_vlan() {
        let f = frame(
            "in_port=p1,vlan=10,dl_src=02:42:ac:11:00:02,dl_dst=02:42:ac:11:00:03,\
             tcp,nw_src=172.17.0.2,nw_dst=172.17.0.3,nw_ttl=63,tp_src=40000,tp_dst=80",
        );
        assert_eq!(f.len(), 60, "58 bytes of headers, padded");
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let eth = p
            .link
            .as_ref()
            .unwrap()
            .to_header()
            .unwrap()
            .ethernet2()
            .unwrap();
        assert_eq!(eth.source, [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(eth.destination, [0x02, 0x42, 0xac, 0x11, 0x00, 0x03]);
        assert_eq!(p.vlan_ids().first().map(|v| v.value()), Some(10));
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header().source(), [172, 17, 0, 2]);
        assert_eq!(ip.header().destination(), [172, 17, 0, 3]);
        assert_eq!(ip.header().ttl(), 63);
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
            panic!("not TCP")
        };
        assert_eq!((tcp.source_port(), tcp.destination_port()), (40000, 80));
        assert!(tcp.syn() && !tcp.ack());
        assert_checksums(&f);
        assert_eq!(parse_flow("in_port=p1,ip").unwrap().in_port(), Some("p1"));
    }

    #[test]
    fn short_frames_are_padded_to_60() {
        let f = frame("tcp");
        assert_eq!(f.len(), 60);
        assert_checksums(&f);
        let spec = parse_flow("tcp").unwrap();
        assert_eq!(spec.dl_src().to_string(), "02:00:00:00:00:01");
        assert_eq!(spec.dl_dst(), MacAddr::BROADCAST);
        assert_eq!(spec.vlan(), None);
    }

    #[test]
    fn udp_and_tcp_flags() {
        let f = frame("udp,tp_src=68,tp_dst=67,len=342");
        assert_eq!(f.len(), 342);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Udp(udp)) = &p.transport else {
            panic!("not UDP")
        };
        assert_eq!((udp.source_port(), udp.destination_port()), (68, 67));
        assert_eq!(udp.length() as usize, 342 - 14 - 20);
        assert_checksums(&f);

        for (flags, syn, ack, fin, psh) in [
            ("syn|ack", true, true, false, false),
            ("+fin+ack", false, true, true, false),
            ("0x018", false, true, false, true),
            ("ACK", false, true, false, false),
        ] {
            let f = frame(&format!("tcp,tcp_flags={flags}"));
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
                panic!("not TCP")
            };
            assert_eq!(
                (tcp.syn(), tcp.ack(), tcp.fin(), tcp.psh()),
                (syn, ack, fin, psh),
                "{flags}"
            );
            assert_checksums(&f);
        }
    }

    #[test]
    fn icmp_and_icmp6() {
        let f = frame("icmp,nw_src=10.0.0.1,nw_dst=10.0.0.2");
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!("not ICMP")
        };
        assert_eq!((icmp.type_u8(), icmp.code_u8()), (8, 0));
        assert_checksums(&f);

        let f = frame("icmp,icmp_type=3,icmp_code=1,len=100");
        assert_eq!(f.len(), 100);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!("not ICMP")
        };
        assert_eq!((icmp.type_u8(), icmp.code_u8()), (3, 1));
        assert_checksums(&f);

        let f = frame("icmp6,ipv6_src=fd00::1,ipv6_dst=fd00::2,nw_ttl=255");
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &p.net else {
            panic!("not IPv6")
        };
        assert_eq!(
            ip.header().source_addr(),
            "fd00::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            ip.header().destination_addr(),
            "fd00::2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(ip.header().hop_limit(), 255);
        let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
            panic!("not ICMPv6")
        };
        assert_eq!(icmp.type_u8(), 128);
        assert_checksums(&f);
    }

    #[test]
    fn tcp6_udp6_and_bare_ip() {
        for (spec, proto) in [
            ("tcp6,ipv6_src=fd00::1,tp_dst=443", 6),
            ("udp6,nw_src=fd00::1,tp_dst=53", 17),
            ("ipv6", 253),
            ("ipv6,nw_proto=47", 47),
        ] {
            let f = frame(spec);
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            let Some(NetSlice::Ipv6(ip)) = &p.net else {
                panic!("{spec}: not IPv6")
            };
            assert_eq!(ip.payload().ip_number.0, proto, "{spec}");
            assert_checksums(&f);
        }
        for (spec, proto) in [
            ("ip", 253),
            ("ip,nw_proto=6,tp_dst=22", 6),
            ("dl_type=0x0800,nw_proto=17", 17),
            ("dl_type=0x800,nw_proto=1", 1),
            ("ip,nw_proto=47,len=200", 47),
        ] {
            let f = frame(spec);
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            let Some(NetSlice::Ipv4(ip)) = &p.net else {
                panic!("{spec}: not IPv4")
            };
            assert_eq!(ip.header().protocol().0, proto, "{spec}");
            assert_checksums(&f);
        }
        let p = frame("ip,nw_proto=6,tp_dst=22");
        let p = SlicedPacket::from_ethernet(&p).unwrap();
        assert!(matches!(&p.transport, Some(TransportSlice::Tcp(t)) if t.destination_port() == 22));
    }

    #[test]
    fn arp_request_and_reply() {
        let f = frame("arp,dl_src=02:00:00:00:00:0a,arp_spa=10.0.0.1,arp_tpa=10.0.0.2");
        assert_eq!(f.len(), 60);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(NetSlice::Arp(arp)) = &p.net else {
            panic!("not ARP")
        };
        assert_eq!(arp.operation(), ArpOperation::REQUEST);
        assert_eq!(arp.sender_hw_addr(), &[2, 0, 0, 0, 0, 0x0a]);
        assert_eq!(arp.sender_protocol_addr(), &[10, 0, 0, 1]);
        assert_eq!(arp.target_hw_addr(), &[0; 6]);
        assert_eq!(arp.target_protocol_addr(), &[10, 0, 0, 2]);
        assert_eq!(&f[..6], &[0xff; 6]);

        let f = frame(
            "arp,arp_op=2,dl_dst=02:00:00:00:00:0a,arp_sha=02:00:00:00:00:0b,\
             arp_tha=02:00:00:00:00:0a,arp_spa=10.0.0.2,arp_tpa=10.0.0.1,vlan=20",
        );
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        assert_eq!(p.vlan_ids().first().map(|v| v.value()), Some(20));
        let Some(NetSlice::Arp(arp)) = &p.net else {
            panic!("not ARP")
        };
        assert_eq!(arp.operation(), ArpOperation::REPLY);
        assert_eq!(arp.sender_hw_addr(), &[2, 0, 0, 0, 0, 0x0b]);
        assert_eq!(arp.target_hw_addr(), &[2, 0, 0, 0, 0, 0x0a]);
        assert_eq!(frame("arp,arp_op=reply"), frame("dl_type=0x0806,arp_op=2"));
    }

    #[test]
    fn raw_ethertypes_and_len() {
        let f = frame("dl_type=0x88cc,dl_dst=01:80:c2:00:00:0e,len=100");
        assert_eq!(f.len(), 100);
        assert_eq!(&f[..6], &[0x01, 0x80, 0xc2, 0, 0, 0x0e]);
        assert_eq!(&f[12..14], &[0x88, 0xcc]);
        let f = frame("in_port=p2");
        assert_eq!(f.len(), 60);
        assert_eq!(&f[12..14], &[0x88, 0xb5]);
        // Separators may be commas, spaces or both; empty items are skipped.
        assert_eq!(frame("tcp, tp_dst=80 ,"), frame("tcp,tp_dst=80"));
        assert_eq!(frame("tp_dst=80,tcp"), frame("tcp,tp_dst=80"));
        assert_eq!(frame("dl_vlan=5,ip"), frame("ip,vlan=5"));
    }

    #[test]
    fn every_error_names_its_field() {
        let cases: &[(&str, &str)] = &[
            ("", "empty flow spec"),
            (" , ,", "empty flow spec"),
            ("tcp,foo=1", "unknown field `foo`"),
            ("tcpx", "unknown field `tcpx`"),
            (
                "dl_src=zz:00:00:00:00:01",
                "dl_src=zz:00:00:00:00:01: not a MAC address",
            ),
            (
                "dl_dst=02:00:00:00:01",
                "dl_dst=02:00:00:00:01: not a MAC address",
            ),
            ("arp,arp_sha=nope", "arp_sha=nope: not a MAC address"),
            (
                "ip,nw_src=10.0.0.300",
                "nw_src=10.0.0.300: not an IPv4 address",
            ),
            (
                "ipv6,ipv6_dst=fd00::g",
                "ipv6_dst=fd00::g: not an IPv6 address",
            ),
            ("arp,arp_tpa=1.2.3", "arp_tpa=1.2.3: not an IPv4 address"),
            (
                "ip,nw_src=fd00::1",
                "nw_src=fd00::1 is an IPv6 address but the flow is IPv4",
            ),
            (
                "tcp,tp_dst=65536",
                "tp_dst=65536: out of range, expected 0-65535",
            ),
            (
                "udp,tp_src=99999999999999999999999",
                "tp_src=99999999999999999999999: out of range",
            ),
            ("tcp,tp_dst=http", "tp_dst=http: not a number"),
            ("tcp,tp_dst=-1", "tp_dst=-1: not a number"),
            ("vlan=0", "vlan=0: out of range, expected 1-4094"),
            (
                "dl_vlan=4095",
                "dl_vlan=4095: out of range, expected 1-4094",
            ),
            ("ip,nw_ttl=256", "nw_ttl=256: out of range"),
            ("icmp,icmp_type=300", "icmp_type=300: out of range"),
            ("arp,arp_op=3", "arp_op=3: out of range, expected 1-2"),
            ("tcp,len=59", "len=59: out of range, expected 60-65535"),
            ("tcp,len=65536", "len=65536: out of range"),
            ("tcp,udp", "conflicting protocols: `tcp` and `udp`"),
            ("ip,ipv6", "conflicting protocols: `ip` and `ipv6`"),
            ("arp,tcp", "conflicting protocols: `arp` and `tcp`"),
            ("ipv6,tcp", "conflicting protocols: `ipv6` and `tcp`"),
            ("tcp,icmp6", "conflicting protocols: `tcp` and `icmp6`"),
            (
                "tcp,dl_type=0x0806",
                "conflicting protocols: `tcp` and `dl_type=0x0806`",
            ),
            (
                "udp,nw_proto=6",
                "conflicting protocols: `udp` and `nw_proto=6`",
            ),
            (
                "ip,nw_proto=58",
                "conflicting protocols: `ip` and `nw_proto=58`",
            ),
            (
                "ipv6,nw_proto=1",
                "conflicting protocols: `ipv6` and `nw_proto=1`",
            ),
            ("tp_src=80", "`tp_src` needs tcp or udp"),
            ("ip,tp_dst=80", "`tp_dst` needs tcp or udp"),
            ("icmp,tp_dst=80", "`tp_dst` needs tcp or udp"),
            ("udp,tcp_flags=syn", "`tcp_flags` needs tcp"),
            ("tcp,icmp_type=8", "`icmp_type` needs icmp"),
            ("nw_dst=10.0.0.1", "`nw_dst` needs ip or ipv6"),
            ("ip,ipv6_src=fd00::1", "`ipv6_src` needs ipv6"),
            ("ip,arp_op=1", "`arp_op` needs arp"),
            ("dl_type=0x88cc,nw_proto=6", "`nw_proto` needs ip or ipv6"),
            (
                "arp,nw_src=10.0.0.1",
                "`nw_src` cannot be used with arp: use arp_spa",
            ),
            (
                "arp,nw_dst=10.0.0.1",
                "`nw_dst` cannot be used with arp: use arp_tpa",
            ),
            ("arp,nw_ttl=3", "`nw_ttl` needs ip or ipv6"),
            ("tcp,tp_dst=80,tp_dst=81", "duplicate field `tp_dst`"),
            (
                "vlan=1,dl_vlan=2",
                "duplicate field `dl_vlan` (same as `vlan`)",
            ),
            (
                "ipv6,nw_src=fd00::1,ipv6_src=fd00::2",
                "duplicate field `ipv6_src` (same as `nw_src`)",
            ),
            ("tcp,tcp", "duplicate field `tcp`"),
            ("tcp,tp_dst", "field `tp_dst` needs a value"),
            ("tcp,tp_dst=", "field `tp_dst` needs a value"),
            ("tcp=1", "`tcp` is a keyword and takes no value"),
            (
                "tcp,tcp_flags=syn|bogus",
                "tcp_flags=syn|bogus: expected flag names",
            ),
            (
                "tcp6,len=60",
                "len=60 is too short: the headers alone take 74 bytes",
            ),
            ("dl_type=ip", "dl_type=ip: not a number"),
        ];
        for (spec, want) in cases {
            let msg = err(spec).to_string();
            assert!(msg.contains(want), "{spec:?}: got {msg:?}, want {want:?}");
        }
    }

    #[test]
    fn hex_frames() {
        let want = vec![0xff, 0xff, 0x02, 0x42, 0xac, 0x11];
        for text in [
            "ff ff 02 42 ac 11",
            "ffff0242ac11",
            "FF:FF:02:42:AC:11",
            "0xffff0242ac11",
            "0xff 0xff 0x02 0x42 0xac 0x11",
            "ffff 0242\nac11\n",
            "  ff,ff,02,42,ac,11  ",
        ] {
            assert_eq!(parse_hex_frame(text).unwrap(), want, "{text:?}");
        }
        assert_eq!(
            parse_hex_frame("fff"),
            Err(FlowError::OddHexDigits("fff".into()))
        );
        assert_eq!(
            parse_hex_frame("ff f ff"),
            Err(FlowError::OddHexDigits("f".into()))
        );
        assert_eq!(
            parse_hex_frame("ff zz"),
            Err(FlowError::BadHexChar { ch: 'z', offset: 3 })
        );
        assert_eq!(
            parse_hex_frame("0xfg"),
            Err(FlowError::BadHexChar { ch: 'g', offset: 3 })
        );
        assert_eq!(
            parse_hex_frame("ff é"),
            Err(FlowError::BadHexChar {
                ch: 'é', offset: 3
            })
        );
        assert_eq!(parse_hex_frame(""), Err(FlowError::EmptyFrame));
        assert_eq!(parse_hex_frame(" \n: "), Err(FlowError::EmptyFrame));
        let msg = parse_hex_frame("abc").unwrap_err().to_string();
        assert!(msg.contains("odd number of hex digits in `abc`"), "{msg}");
        // A built frame survives a round trip through hex.
        let f = frame("udp,tp_dst=53");
        let hex: Vec<String> = f.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_hex_frame(&hex.join(" ")).unwrap(), f);
    }

    /// Tokens, valid and not, for specs made at random.
    const TOKENS: &[&str] = &[
        "ip",
        "ipv6",
        "arp",
        "tcp",
        "udp",
        "icmp",
        "tcp6",
        "udp6",
        "icmp6",
        "in_port=p1",
        "dl_src=02:00:00:00:00:02",
        "dl_dst=ff:ff:ff:ff:ff:ff",
        "vlan=10",
        "dl_vlan=4094",
        "dl_type=0x0800",
        "dl_type=0x86dd",
        "dl_type=0x0806",
        "dl_type=0x88cc",
        "nw_src=10.0.0.1",
        "nw_dst=fd00::2",
        "ipv6_src=fd00::1",
        "nw_ttl=1",
        "nw_proto=6",
        "nw_proto=17",
        "nw_proto=58",
        "nw_proto=1",
        "nw_proto=0",
        "tp_src=1",
        "tp_dst=65535",
        "tcp_flags=rst",
        "icmp_type=0",
        "icmp_code=3",
        "arp_op=2",
        "arp_spa=10.0.0.9",
        "arp_tha=02:00:00:00:00:09",
        "len=60",
        "len=1514",
        "len=65535",
        "bogus",
        "vlan=0",
        "=",
        "len=",
    ];

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            if let Ok(flow) = parse_flow(&s) {
                let _ = flow.build_frame();
            }
            let _ = parse_hex_frame(&s);
        }

        #[test]
        fn spec_like_strings_never_panic(s in "[a-z_0-9=,:.x| +-]{0,60}") {
            if let Ok(flow) = parse_flow(&s) {
                prop_assert!(flow.build_frame().len() >= MIN_FRAME_LEN);
            }
            let _ = parse_hex_frame(&s);
        }

        #[test]
        fn accepted_specs_build_valid_frames(
            picks in proptest::collection::vec(proptest::sample::select(TOKENS), 1..6),
        ) {
            let spec = picks.join(",");
            if let Ok(flow) = parse_flow(&spec) {
                let f = flow.build_frame();
                prop_assert!(f.len() >= MIN_FRAME_LEN);
                if let Some(len) = flow.len {
                    prop_assert_eq!(f.len(), len);
                }
                let bare_proto = matches!(
                    flow.net,
                    Net::Ipv4 { l4: L4::Other(_), .. } | Net::Ipv6 { l4: L4::Other(_), .. }
                );
                if bare_proto {
                    // `nw_proto=N` with zero payload: only the headers up to IP need be whole.
                    let p = etherparse::LaxSlicedPacket::from_ethernet(&f);
                    prop_assert!(p.as_ref().is_ok_and(|p| p.net.is_some()), "{}", spec);
                    if let Ok(etherparse::LaxSlicedPacket {
                        net: Some(etherparse::LaxNetSlice::Ipv4(ip)),
                        ..
                    }) = &p
                    {
                        prop_assert_eq!(checksum(&[ip.header().slice()]), 0);
                    }
                } else {
                    let p = SlicedPacket::from_ethernet(&f);
                    prop_assert!(p.is_ok(), "{}: {:?}", spec, p);
                    assert_checksums(&f);
                }
            }
        }
    }
}
