//! The IPv4 and IPv6 parts of a flow: `nw_src`, `nw_dst` (`ipv6_src`, `ipv6_dst`), `nw_ttl`,
//! and the header they build in front of the transport.

use super::fields::{Field, Fields, Key, NetKind};
use super::l4::{self, L4};
use super::{FlowError, Net};
use crate::wire::{ipv4, ipv6, EtherType};
use etherparse::{IpNumber, Ipv4Header, Ipv6Header, PacketBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Bytes of the IP header a flow of `family` builds (no options, no extension headers).
pub(super) fn header_len(family: NetKind) -> usize {
    match family {
        NetKind::Ipv6 => ipv6::HEADER_LEN,
        _ => ipv4::HEADER_LEN,
    }
}

/// The IPv4 packet a spec describes; absent addresses are 0.0.0.0.
pub(super) fn ipv4_net(fields: &Fields<'_>, ttl: u8, l4: L4) -> Result<Net, FlowError> {
    let addr = |key| -> Result<Ipv4Addr, FlowError> {
        Ok(ip_of(fields.get(key), NetKind::Ipv4)?
            .and_then(as_v4)
            .unwrap_or(Ipv4Addr::UNSPECIFIED))
    };
    Ok(Net::Ipv4 {
        src: addr(Key::NwSrc)?,
        dst: addr(Key::NwDst)?,
        ttl,
        l4,
    })
}

/// The IPv6 packet a spec describes; absent addresses are ::.
pub(super) fn ipv6_net(fields: &Fields<'_>, hop_limit: u8, l4: L4) -> Result<Net, FlowError> {
    let addr = |key| -> Result<Ipv6Addr, FlowError> {
        Ok(ip_of(fields.get(key), NetKind::Ipv6)?
            .and_then(as_v6)
            .unwrap_or(Ipv6Addr::UNSPECIFIED))
    };
    Ok(Net::Ipv6 {
        src: addr(Key::NwSrc)?,
        dst: addr(Key::NwDst)?,
        hop_limit,
        l4,
    })
}

/// Writes the EtherType, the IPv4 header and what `l4` holds, with `payload` after it.
pub(super) fn write_ipv4(
    out: &mut Vec<u8>,
    (src, dst): (Ipv4Addr, Ipv4Addr),
    ttl: u8,
    l4: L4,
    payload: &[u8],
) {
    out.extend_from_slice(&u16::from(EtherType::Ipv4).to_be_bytes());
    let ip = PacketBuilder::ipv4(src.octets(), dst.octets(), ttl);
    match l4 {
        L4::Icmp { icmp_type, code } => {
            let _ = ip.icmpv4_raw(icmp_type, code, [0; 4]).write(out, payload);
        }
        L4::Other(proto) => {
            let len = payload.len() as u16;
            if let Ok(h) = Ipv4Header::new(len, ttl, IpNumber(proto), src.octets(), dst.octets()) {
                // `write` fills in the header checksum.
                let _ = h.write(out);
                out.extend_from_slice(payload);
            }
        }
        l4 => l4::write_tcp_udp(ip, l4, out, payload),
    }
}

/// Writes the EtherType, the IPv6 header and what `l4` holds, with `payload` after it.
pub(super) fn write_ipv6(
    out: &mut Vec<u8>,
    (src, dst): (Ipv6Addr, Ipv6Addr),
    hop_limit: u8,
    l4: L4,
    payload: &[u8],
) {
    out.extend_from_slice(&u16::from(EtherType::Ipv6).to_be_bytes());
    let ip = PacketBuilder::ipv6(src.octets(), dst.octets(), hop_limit);
    match l4 {
        L4::Icmp { icmp_type, code } => {
            let _ = ip.icmpv6_raw(icmp_type, code, [0; 4]).write(out, payload);
        }
        L4::Other(proto) => {
            // Written by hand: the builder expects the extension headers that a next-header
            // value like 0 (hop-by-hop) announces, and has none.
            let h = Ipv6Header {
                traffic_class: 0,
                flow_label: Default::default(),
                payload_length: payload.len() as u16,
                next_header: IpNumber(proto),
                hop_limit,
                source: src.octets(),
                destination: dst.octets(),
            };
            out.extend_from_slice(&h.to_bytes());
            out.extend_from_slice(payload);
        }
        l4 => l4::write_tcp_udp(ip, l4, out, payload),
    }
}

/// An IPv4 address of an ARP field, 0.0.0.0 when absent.
pub(super) fn ipv4(f: Option<&Field<'_>>) -> Result<Ipv4Addr, FlowError> {
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
