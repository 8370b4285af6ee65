//! The transport part of a flow: TCP and UDP ports and flags, ICMP type and code, or a bare
//! protocol number, and the header they build.

use super::fields::{number, Field, Fields, Key, L4Kind, NetKind};
use super::select::Transport;
use super::FlowError;
use crate::wire::{tcp, udp};
use etherparse::TcpHeader;

/// IP protocol of `ip` or `ipv6` without `nw_proto`: RFC 3692 experimentation and testing.
const EXPERIMENTAL_IP_PROTO: u8 = 253;
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

/// What follows the IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum L4 {
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
    /// Bytes of the header built for it.
    pub(super) fn header_len(&self) -> usize {
        match self {
            L4::Other(_) => 0,
            L4::Tcp { .. } => tcp::HEADER_LEN,
            // ICMP's header is as long as UDP's: type, code, checksum, 4 more bytes.
            L4::Udp { .. } | L4::Icmp { .. } => udp::HEADER_LEN,
        }
    }
}

/// The transport header a spec describes. Ports default to 0, `tcp_flags` to SYN, the ICMP type
/// to echo request.
pub(super) fn l4(fields: &Fields<'_>, t: Transport, net: Option<NetKind>) -> Result<L4, FlowError> {
    let port = |key| Ok::<u16, FlowError>(fields.number_or(key, 0, 65535, 0)? as u16);
    Ok(match t.kind {
        None => L4::Other(t.nw_proto.unwrap_or(EXPERIMENTAL_IP_PROTO)),
        Some(L4Kind::Tcp) => L4::Tcp {
            src: port(Key::TpSrc)?,
            dst: port(Key::TpDst)?,
            flags: match fields.get(Key::TcpFlags) {
                Some(f) => tcp_flags(f)?,
                None => u16::from(tcp::FLAG_SYN),
            },
        },
        Some(L4Kind::Udp) => L4::Udp {
            src: port(Key::TpSrc)?,
            dst: port(Key::TpDst)?,
        },
        Some(L4Kind::Icmp) => {
            let echo_request = if net == Some(NetKind::Ipv6) { 128 } else { 8 };
            L4::Icmp {
                icmp_type: fields.number_or(Key::IcmpType, 0, 255, echo_request)? as u8,
                code: fields.number_or(Key::IcmpCode, 0, 255, 0)? as u8,
            }
        }
    })
}

/// `tcp_flags=syn|ack`, `+syn+ack` or a number up to 0x1ff.
pub(super) fn tcp_flags(f: &Field<'_>) -> Result<u16, FlowError> {
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

/// Writes the IP header and a TCP or UDP header with its payload (ICMP and bare IP are written
/// by the caller: they differ between the IP versions).
pub(super) fn write_tcp_udp(
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
