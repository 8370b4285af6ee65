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

mod arp;
mod error;
mod ethernet;
mod fields;
mod hex;
mod ip;
mod l4;
mod select;
#[cfg(test)]
mod tests;

pub use error::FlowError;
pub use hex::parse_hex_frame;

use crate::wire::MacAddr;
use fields::{Fields, Key, NetKind};
use l4::L4;
use select::Transport;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Smallest Ethernet frame without its FCS (IEEE 802.3 § 4.4.2).
pub const MIN_FRAME_LEN: usize = 60;
/// Largest frame `len=N` may ask for.
pub const MAX_FRAME_LEN: usize = 65535;

/// EtherType of a spec that names no protocol: IEEE 802 local experimental.
const EXPERIMENTAL_ETHERTYPE: u16 = 0x88b5;
/// Default source MAC: locally administered, unicast.
const DEFAULT_DL_SRC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
/// Default TTL and hop limit.
const DEFAULT_TTL: u8 = 64;

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
        ethernet::header_len(self.vlan)
            + match &self.net {
                Net::Raw(_) => 0,
                Net::Arp { .. } => arp::PACKET_LEN,
                Net::Ipv4 { l4, .. } => ip::header_len(NetKind::Ipv4) + l4.header_len(),
                Net::Ipv6 { l4, .. } => ip::header_len(NetKind::Ipv6) + l4.header_len(),
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
        ethernet::write_addresses(&mut out, self.dl_dst, self.dl_src, self.vlan);
        // Writing to a Vec cannot fail, and the lengths were checked by `parse_flow`; should a
        // hand-made spec still be refused, the frame keeps the headers written so far.
        match self.net {
            Net::Raw(ethertype) => out.extend_from_slice(&ethertype.to_be_bytes()),
            Net::Arp {
                op,
                sha,
                spa,
                tha,
                tpa,
            } => arp::write(&mut out, op, (sha, spa), (tha, tpa)),
            Net::Ipv4 { src, dst, ttl, l4 } => {
                ip::write_ipv4(&mut out, (src, dst), ttl, l4, &payload)
            }
            Net::Ipv6 {
                src,
                dst,
                hop_limit,
                l4,
            } => ip::write_ipv6(&mut out, (src, dst), hop_limit, l4, &payload),
        }
        if out.len() < total {
            out.resize(total, 0);
        }
        out
    }
}

/// Parses an `ofproto/trace`-style flow spec (see the module docs for the fields).
pub fn parse_flow(spec: &str) -> Result<FlowSpec, FlowError> {
    let (keywords, fields) = fields::split(spec)?;
    let net = select::network(&keywords, &fields)?;
    let transport = select::transport(&keywords, &fields, &net)?;
    let net_kind = net.map(|(_, k)| k);
    select::check_prerequisites(&fields, net_kind, transport.kind)?;
    let in_port = fields.get(Key::InPort).map(|f| f.value.to_string());
    let dl_src = ethernet::mac(&fields, Key::DlSrc, DEFAULT_DL_SRC)?;
    let dl_dst = ethernet::mac(&fields, Key::DlDst, MacAddr::BROADCAST)?;
    let vlan = ethernet::vlan(&fields)?;
    let len = ethernet::frame_len(&fields)?;
    let net = network(&fields, net_kind, transport, dl_src)?;
    let flow = FlowSpec {
        in_port,
        dl_src,
        dl_dst,
        vlan,
        net,
        len,
    };
    match flow.len {
        Some(len) if len < flow.header_len() => Err(FlowError::LenTooShort {
            len,
            need: flow.header_len(),
        }),
        _ => Ok(flow),
    }
}

/// What follows the Ethernet header, from the fields' values: the transport first, then the
/// network layer around it.
fn network(
    fields: &Fields<'_>,
    kind: Option<NetKind>,
    transport: Transport,
    dl_src: MacAddr,
) -> Result<Net, FlowError> {
    let l4 = l4::l4(fields, transport, kind)?;
    let ttl = fields.number_or(Key::NwTtl, 0, 255, DEFAULT_TTL.into())? as u8;
    match kind {
        None => Ok(Net::Raw(EXPERIMENTAL_ETHERTYPE)),
        Some(NetKind::Raw(t)) => Ok(Net::Raw(t)),
        Some(NetKind::Arp) => arp::net(fields, dl_src),
        Some(NetKind::Ipv4) => ip::ipv4_net(fields, ttl, l4),
        Some(NetKind::Ipv6) => ip::ipv6_net(fields, ttl, l4),
    }
}
