//! One-frame summaries for traces and captures: who sent it to whom, on which VLAN, and what it
//! carries (ARP, IPv4/IPv6, TCP/UDP/ICMP), as a serializable struct and as one line a person reads.
//!
//! ```text
//! 02:42:ac:11:00:02 > 02:42:ac:11:00:03, vlan 10, ipv4 172.17.0.2 > 172.17.0.3 ttl 64 icmp echo request id 7 seq 1
//! ```
//!
//! Layer 2 comes from [`crate::wire`]'s own view of the bytes; layers 3 and 4 come from
//! etherparse's lax slicer, which keeps whatever it could parse when a frame is cut short.
//! [`summarize`] never panics: on truncated or malformed bytes it returns the layers it could read
//! and says what stopped it in [`FrameSummary::error`].

use crate::wire::{ethernet, L2Header, MacAddr, VlanTag, WireError};
use etherparse::err::packet::SliceError;
use etherparse::{
    ArpPacketSlice, Icmpv4Slice, Icmpv6Slice, IpNumber, LaxIpPayloadSlice, LaxNetSlice,
    LaxSlicedPacket, TcpSlice, TransportSlice, UdpSlice,
};
use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a frame is, layer by layer, as far as its bytes could be parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FrameSummary {
    /// Length of the frame in bytes.
    pub len: usize,
    /// Source MAC address (absent when the frame has fewer than 12 bytes).
    pub dl_src: Option<MacAddr>,
    /// Destination MAC address (absent when the frame has fewer than 6 bytes).
    pub dl_dst: Option<MacAddr>,
    /// VLAN ID of the outer (or only) tag.
    pub vlan: Option<u16>,
    /// VLAN ID of the inner tag of a double-tagged (QinQ) frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner_vlan: Option<u16>,
    /// EtherType after all tags: "ipv4", "arp", "ipv6" or hex like "0x88cc".
    pub ethertype: Option<String>,
    /// The ARP packet, for ARP frames.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arp: Option<ArpSummary>,
    /// The IPv4 or IPv6 header, for IP frames.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpSummary>,
    /// The TCP header, for TCP segments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSummary>,
    /// The UDP header, for UDP datagrams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpSummary>,
    /// The ICMP header, for ICMP (IPv4) messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpSummary>,
    /// The ICMPv6 header, for ICMPv6 messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmpv6: Option<IcmpSummary>,
    /// What stopped parsing, when the frame is truncated or malformed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An ARP packet (RFC 826) for IPv4 over Ethernet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArpSummary {
    /// "request", "reply" or the operation number.
    pub op: String,
    /// Sender hardware address (absent when the hardware address is not 6 bytes long).
    pub sender_mac: Option<MacAddr>,
    /// Sender protocol address (absent when the protocol address is not 4 bytes long).
    pub sender_ip: Option<Ipv4Addr>,
    /// Target hardware address.
    pub target_mac: Option<MacAddr>,
    /// Target protocol address.
    pub target_ip: Option<Ipv4Addr>,
}

/// An IPv4 (RFC 791) or IPv6 (RFC 8200) header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpSummary {
    /// 4 or 6.
    pub version: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Time to live (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    /// The payload's protocol after any extension headers: "tcp", "udp", "icmp", "icmpv6", … or
    /// its number.
    pub protocol: String,
    /// True when the packet is a fragment (its transport header is not summarized).
    #[serde(skip_serializing_if = "is_false")]
    pub fragment: bool,
}

/// A TCP header (RFC 9293 § 3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcpSummary {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// The flags that are set, comma-separated: "SYN,ACK" (empty when none is).
    pub flags: String,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number, when the ACK flag is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<u32>,
    /// Receive window.
    pub window: u16,
    /// Bytes of payload after the header.
    pub payload_len: usize,
}

/// A UDP header (RFC 768).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UdpSummary {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// The length field: header and payload.
    pub length: u16,
    /// Bytes of payload after the header.
    pub payload_len: usize,
}

/// An ICMP (RFC 792) or ICMPv6 (RFC 4443) header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IcmpSummary {
    /// Message type.
    #[serde(rename = "type")]
    pub icmp_type: u8,
    /// Message code.
    pub code: u8,
    /// What the type means ("echo request", "neighbor solicitation"…), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'static str>,
    /// Identifier of an echo request or reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u16>,
    /// Sequence number of an echo request or reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u16>,
    /// Target address of an IPv6 neighbor solicitation or advertisement (RFC 4861 § 4.3, 4.4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Ipv6Addr>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Describes any bytes as an Ethernet frame; never panics.
pub fn summarize(frame: &[u8]) -> FrameSummary {
    let mut s = FrameSummary {
        len: frame.len(),
        dl_dst: frame.get(0..6).map(MacAddr::from_bytes),
        dl_src: frame.get(6..12).map(MacAddr::from_bytes),
        ..FrameSummary::default()
    };

    // Layer 2 with the switch's own parser: it is what the pipeline sees.
    let l2 = match L2Header::parse(frame) {
        Ok(h) => {
            s.vlan = h.outer.or(h.vlan).map(|t| t.vid);
            s.inner_vlan = h.outer.and(h.vlan).map(|t| t.vid);
            s.ethertype = Some(h.ethertype.to_string());
            h
        }
        Err(e) => {
            s.error = Some(e.to_string());
            if e != WireError::Runt(frame.len()) {
                // A truncated or over-stacked tag: still say what the frame announced.
                s.vlan = vlan_at(frame, ethernet::HEADER_LEN - 2);
                s.inner_vlan = s.vlan.and(vlan_at(frame, ethernet::HEADER_LEN + 2));
            }
            return s;
        }
    };

    // Layers 3 and 4 with etherparse, from where the switch's parser says the payload starts, so
    // that both agree on which EtherTypes are tags.
    let payload = frame.get(l2.payload_offset..).unwrap_or_default();
    let ethertype = etherparse::EtherType(u16::from(l2.ethertype));
    let packet = LaxSlicedPacket::from_ether_type(ethertype, payload);
    match &packet.net {
        Some(LaxNetSlice::Arp(arp)) => s.arp = Some(arp_summary(arp, &mut s.error)),
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            s.ip = Some(ip_summary(
                4,
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.ttl(),
                ip.payload(),
            ));
            note_incomplete(ip.payload(), &mut s.error);
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            s.ip = Some(ip_summary(
                6,
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                h.hop_limit(),
                ip.payload(),
            ));
            note_incomplete(ip.payload(), &mut s.error);
        }
        None => {}
    }
    match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => s.tcp = Some(tcp_summary(tcp)),
        Some(TransportSlice::Udp(udp)) => s.udp = Some(udp_summary(udp)),
        Some(TransportSlice::Icmpv4(icmp)) => s.icmp = Some(icmpv4_summary(icmp)),
        Some(TransportSlice::Icmpv6(icmp)) => s.icmpv6 = Some(icmpv6_summary(icmp)),
        Some(TransportSlice::Igmp(_)) | None => {}
    }
    if let Some((mut err, _layer)) = packet.stop_err {
        // Offsets count from the start of the frame, not of the L3 payload.
        if let SliceError::Len(len) = &mut err {
            len.layer_start_offset += l2.payload_offset;
        }
        // The error that stopped parsing says more than "incomplete": it wins.
        s.error = Some(err.to_string());
    }
    s
}

/// The VLAN ID of a tag (TPID, TCI) at `offset`, if the bytes reach that far.
fn vlan_at(frame: &[u8], offset: usize) -> Option<u16> {
    VlanTag::parse(frame.get(offset..)?).map(|t| t.vid)
}

fn note_incomplete(payload: &LaxIpPayloadSlice<'_>, error: &mut Option<String>) {
    if payload.incomplete && error.is_none() {
        *error = Some(format!(
            "truncated IP packet: its header announces more than the {} byte(s) of payload present",
            payload.payload.len()
        ));
    }
}

fn arp_summary(arp: &ArpPacketSlice<'_>, error: &mut Option<String>) -> ArpSummary {
    let op = match arp.operation().0 {
        1 => "request".to_string(),
        2 => "reply".to_string(),
        n => n.to_string(),
    };
    let mac = |b: &[u8]| (b.len() == 6).then(|| MacAddr::from_bytes(b));
    let ip = |b: &[u8]| <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from);
    if arp.hw_addr_size() != 6 || arp.proto_addr_size() != 4 {
        *error = Some(format!(
            "ARP with {}-byte hardware and {}-byte protocol addresses is not Ethernet/IPv4",
            arp.hw_addr_size(),
            arp.proto_addr_size()
        ));
    }
    ArpSummary {
        op,
        sender_mac: mac(arp.sender_hw_addr()),
        sender_ip: ip(arp.sender_protocol_addr()),
        target_mac: mac(arp.target_hw_addr()),
        target_ip: ip(arp.target_protocol_addr()),
    }
}

fn ip_summary(
    version: u8,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    payload: &LaxIpPayloadSlice<'_>,
) -> IpSummary {
    IpSummary {
        version,
        src,
        dst,
        ttl,
        protocol: protocol_name(payload.ip_number),
        fragment: payload.fragmented,
    }
}

/// Lowercase IANA keyword of an IP protocol number ("tcp", "gre"), or the number.
fn protocol_name(n: IpNumber) -> String {
    match n {
        IpNumber::ICMP => "icmp".to_string(),
        IpNumber::IPV6_ICMP => "icmpv6".to_string(),
        other => match other.keyword_str() {
            Some(k) if !k.contains(' ') => k.to_ascii_lowercase(),
            _ => other.0.to_string(),
        },
    }
}

fn tcp_summary(tcp: &TcpSlice<'_>) -> TcpSummary {
    let named = [
        (tcp.fin(), "FIN"),
        (tcp.syn(), "SYN"),
        (tcp.rst(), "RST"),
        (tcp.psh(), "PSH"),
        (tcp.ack(), "ACK"),
        (tcp.urg(), "URG"),
        (tcp.ece(), "ECE"),
        (tcp.cwr(), "CWR"),
        (tcp.ns(), "NS"),
    ];
    let flags: Vec<&str> = named
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, n)| *n)
        .collect();
    TcpSummary {
        src_port: tcp.source_port(),
        dst_port: tcp.destination_port(),
        flags: flags.join(","),
        seq: tcp.sequence_number(),
        ack: tcp.ack().then(|| tcp.acknowledgment_number()),
        window: tcp.window_size(),
        payload_len: tcp.payload().len(),
    }
}

fn udp_summary(udp: &UdpSlice<'_>) -> UdpSummary {
    UdpSummary {
        src_port: udp.source_port(),
        dst_port: udp.destination_port(),
        length: udp.length(),
        payload_len: udp.payload().len(),
    }
}

/// Identifier and sequence number from bytes 5 to 8 of an echo message (RFC 792, RFC 4443 § 4).
fn echo_fields(bytes5to8: [u8; 4]) -> (Option<u16>, Option<u16>) {
    let [id_hi, id_lo, seq_hi, seq_lo] = bytes5to8;
    (
        Some(u16::from_be_bytes([id_hi, id_lo])),
        Some(u16::from_be_bytes([seq_hi, seq_lo])),
    )
}

fn icmpv4_summary(icmp: &Icmpv4Slice<'_>) -> IcmpSummary {
    let t = icmp.type_u8();
    let name = match t {
        0 => Some("echo reply"),
        3 => Some("destination unreachable"),
        4 => Some("source quench"),
        5 => Some("redirect"),
        8 => Some("echo request"),
        9 => Some("router advertisement"),
        10 => Some("router solicitation"),
        11 => Some("time exceeded"),
        12 => Some("parameter problem"),
        13 => Some("timestamp request"),
        14 => Some("timestamp reply"),
        _ => None,
    };
    let (id, seq) = if t == 0 || t == 8 {
        echo_fields(icmp.bytes5to8())
    } else {
        (None, None)
    };
    IcmpSummary {
        icmp_type: t,
        code: icmp.code_u8(),
        name,
        id,
        seq,
        target: None,
    }
}

fn icmpv6_summary(icmp: &Icmpv6Slice<'_>) -> IcmpSummary {
    let t = icmp.type_u8();
    let name = match t {
        1 => Some("destination unreachable"),
        2 => Some("packet too big"),
        3 => Some("time exceeded"),
        4 => Some("parameter problem"),
        128 => Some("echo request"),
        129 => Some("echo reply"),
        130 => Some("multicast listener query"),
        131 => Some("multicast listener report"),
        132 => Some("multicast listener done"),
        133 => Some("router solicitation"),
        134 => Some("router advertisement"),
        135 => Some("neighbor solicitation"),
        136 => Some("neighbor advertisement"),
        137 => Some("redirect"),
        143 => Some("multicast listener report v2"),
        _ => None,
    };
    let (id, seq) = if t == 128 || t == 129 {
        echo_fields(icmp.bytes5to8())
    } else {
        (None, None)
    };
    // Neighbor solicitation and advertisement: the 16-byte target follows the 8-byte header.
    let target = if t == 135 || t == 136 {
        icmp.payload()
            .get(..16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Ipv6Addr::from)
    } else {
        None
    };
    IcmpSummary {
        icmp_type: t,
        code: icmp.code_u8(),
        name,
        id,
        seq,
        target,
    }
}

/// Writes an optional value, or "?" when it could not be parsed.
struct Maybe<'a, T>(&'a Option<T>);

impl<T: fmt::Display> fmt::Display for Maybe<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("?"),
        }
    }
}

impl fmt::Display for ArpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sha, spa) = (Maybe(&self.sender_mac), Maybe(&self.sender_ip));
        let (tha, tpa) = (Maybe(&self.target_mac), Maybe(&self.target_ip));
        match self.op.as_str() {
            "request" => write!(f, "arp request who-has {tpa} tell {spa} ({sha})"),
            "reply" => write!(f, "arp reply {spa} is-at {sha} to {tpa} ({tha})"),
            op => write!(f, "arp op {op} {spa} ({sha}) > {tpa} ({tha})"),
        }
    }
}

impl IcmpSummary {
    fn fmt_with(&self, f: &mut fmt::Formatter<'_>, proto: &str) -> fmt::Result {
        match self.name {
            Some(name) => write!(f, "{proto} {name}")?,
            None => write!(f, "{proto} type {}", self.icmp_type)?,
        }
        if self.code != 0 {
            write!(f, " code {}", self.code)?;
        }
        if let (Some(id), Some(seq)) = (self.id, self.seq) {
            write!(f, " id {id} seq {seq}")?;
        }
        if let Some(target) = self.target {
            write!(f, " target {target}")?;
        }
        Ok(())
    }
}

impl fmt::Display for FrameSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} > {}", Maybe(&self.dl_src), Maybe(&self.dl_dst))?;
        if let Some(vlan) = self.vlan {
            write!(f, ", vlan {vlan}")?;
        }
        if let Some(inner) = self.inner_vlan {
            write!(f, ", inner vlan {inner}")?;
        }
        if let Some(arp) = &self.arp {
            write!(f, ", {arp}")?;
        } else if let Some(ip) = &self.ip {
            let ttl = if ip.version == 4 { "ttl" } else { "hlim" };
            write!(
                f,
                ", ipv{} {} > {} {ttl} {}",
                ip.version, ip.src, ip.dst, ip.ttl
            )?;
            if ip.fragment {
                f.write_str(" frag")?;
            }
            if let Some(t) = &self.tcp {
                let flags = if t.flags.is_empty() { "none" } else { &t.flags };
                write!(
                    f,
                    " tcp {} > {} [{flags}] seq {}",
                    t.src_port, t.dst_port, t.seq
                )?;
                if let Some(ack) = t.ack {
                    write!(f, " ack {ack}")?;
                }
                write!(f, " len {}", t.payload_len)?;
            } else if let Some(u) = &self.udp {
                write!(
                    f,
                    " udp {} > {} len {}",
                    u.src_port, u.dst_port, u.payload_len
                )?;
            } else if let Some(i) = &self.icmp {
                f.write_str(" ")?;
                i.fmt_with(f, "icmp")?;
            } else if let Some(i) = &self.icmpv6 {
                f.write_str(" ")?;
                i.fmt_with(f, "icmp6")?;
            } else {
                write!(f, " {}", ip.protocol)?;
            }
        } else if let Some(et) = &self.ethertype {
            write!(f, ", {et} len {}", self.len)?;
        }
        if let Some(e) = &self.error {
            write!(f, " (error: {e})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, TcpHeader};
    use proptest::prelude::*;

    const A: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
    const B: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x03];

    fn icmp_echo_vlan10() -> Vec<u8> {
        let b = PacketBuilder::ethernet2(A, B)
            .single_vlan(10.try_into().unwrap())
            .ipv4([172, 17, 0, 2], [172, 17, 0, 3], 64)
            .icmpv4_echo_request(7, 1);
        let mut out = Vec::new();
        b.write(&mut out, &[0xab; 56]).unwrap();
        out
    }

    fn tcp_syn() -> Vec<u8> {
        let b = PacketBuilder::ethernet2(A, B)
            .ipv4([172, 17, 0, 2], [172, 17, 0, 3], 64)
            .tcp(40000, 80, 1, 64240)
            .syn();
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    #[test]
    fn icmp_echo_on_a_vlan() {
        let s = summarize(&icmp_echo_vlan10());
        assert_eq!(s.dl_src.unwrap().to_string(), "02:42:ac:11:00:02");
        assert_eq!(s.dl_dst.unwrap().to_string(), "02:42:ac:11:00:03");
        assert_eq!(s.vlan, Some(10));
        assert_eq!(s.inner_vlan, None);
        assert_eq!(s.ethertype.as_deref(), Some("ipv4"));
        let ip = s.ip.as_ref().unwrap();
        assert_eq!(ip.src, "172.17.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(ip.dst, "172.17.0.3".parse::<IpAddr>().unwrap());
        assert_eq!((ip.version, ip.ttl, ip.protocol.as_str()), (4, 64, "icmp"));
        let icmp = s.icmp.as_ref().unwrap();
        assert_eq!((icmp.icmp_type, icmp.code), (8, 0));
        assert_eq!((icmp.id, icmp.seq), (Some(7), Some(1)));
        assert_eq!(s.error, None);
        assert_eq!(
            s.to_string(),
            "02:42:ac:11:00:02 > 02:42:ac:11:00:03, vlan 10, \
             ipv4 172.17.0.2 > 172.17.0.3 ttl 64 icmp echo request id 7 seq 1"
        );
    }

    #[test]
    fn tcp_syn_and_syn_ack() {
        let s = summarize(&tcp_syn());
        let tcp = s.tcp.as_ref().unwrap();
        assert_eq!((tcp.src_port, tcp.dst_port), (40000, 80));
        assert_eq!((tcp.flags.as_str(), tcp.seq, tcp.ack), ("SYN", 1, None));
        assert_eq!(tcp.payload_len, 0);
        assert!(s
            .to_string()
            .ends_with("ttl 64 tcp 40000 > 80 [SYN] seq 1 len 0"));

        let mut h = TcpHeader::new(80, 40000, 5000, 65535);
        h.syn = true;
        h.ack = true;
        h.acknowledgment_number = 2;
        let mut f = Vec::new();
        PacketBuilder::ethernet2(B, A)
            .ipv4([172, 17, 0, 3], [172, 17, 0, 2], 63)
            .tcp_header(h)
            .write(&mut f, b"hello")
            .unwrap();
        let s = summarize(&f);
        let tcp = s.tcp.as_ref().unwrap();
        assert_eq!((tcp.flags.as_str(), tcp.ack), ("SYN,ACK", Some(2)));
        assert_eq!(tcp.payload_len, 5);
        assert!(s
            .to_string()
            .ends_with("tcp 80 > 40000 [SYN,ACK] seq 5000 ack 2 len 5"));
    }

    #[test]
    fn padding_is_not_payload() {
        // A 54-byte SYN padded to the 60-byte Ethernet minimum.
        let mut f = tcp_syn();
        f.resize(60, 0);
        let s = summarize(&f);
        assert_eq!(s.tcp.unwrap().payload_len, 0);
        assert_eq!(s.error, None);
        assert_eq!(s.len, 60);
    }

    #[test]
    fn udp_over_ipv6_qinq() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .double_vlan(100.try_into().unwrap(), 10.try_into().unwrap())
            .ipv6(
                [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0xff; 16],
                255,
            )
            .udp(5353, 53)
            .write(&mut f, &[1, 2, 3])
            .unwrap();
        let s = summarize(&f);
        assert_eq!((s.vlan, s.inner_vlan), (Some(100), Some(10)));
        assert_eq!(s.ethertype.as_deref(), Some("ipv6"));
        let ip = s.ip.as_ref().unwrap();
        assert_eq!((ip.version, ip.ttl, ip.protocol.as_str()), (6, 255, "udp"));
        let udp = s.udp.as_ref().unwrap();
        assert_eq!((udp.src_port, udp.dst_port), (5353, 53));
        assert_eq!((udp.length, udp.payload_len), (11, 3));
        assert_eq!(
            s.to_string(),
            "02:42:ac:11:00:02 > 02:42:ac:11:00:03, vlan 100, inner vlan 10, \
             ipv6 fe80::1 > ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff hlim 255 udp 5353 > 53 len 3"
        );
    }

    #[test]
    fn icmpv6_echo_and_neighbor_solicitation() {
        let src = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv6(src, src, 64)
            .icmpv6_echo_reply(3, 4)
            .write(&mut f, &[])
            .unwrap();
        let s = summarize(&f);
        let i = s.icmpv6.as_ref().unwrap();
        assert_eq!((i.icmp_type, i.id, i.seq), (129, Some(3), Some(4)));
        assert_eq!(s.ip.as_ref().unwrap().protocol, "icmpv6");
        assert!(s.to_string().ends_with("icmp6 echo reply id 3 seq 4"));

        let target = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, [0x33, 0x33, 0xff, 0, 0, 2])
            .ipv6(
                src,
                [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2],
                255,
            )
            .icmpv6_raw(135, 0, [0; 4])
            .write(&mut f, &target)
            .unwrap();
        let s = summarize(&f);
        let i = s.icmpv6.as_ref().unwrap();
        assert_eq!(i.name, Some("neighbor solicitation"));
        assert_eq!(i.target, Some("fe80::2".parse().unwrap()));
        assert!(s
            .to_string()
            .ends_with("icmp6 neighbor solicitation target fe80::2"));
    }

    fn arp(op: etherparse::ArpOperation) -> Vec<u8> {
        let pkt = etherparse::ArpPacket::new(
            etherparse::ArpHardwareId::ETHERNET,
            etherparse::EtherType::IPV4,
            op,
            &A,
            &[10, 0, 0, 1],
            &[0; 6],
            &[10, 0, 0, 2],
        )
        .unwrap();
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, [0xff; 6])
            .arp(pkt)
            .write(&mut f)
            .unwrap();
        f
    }

    #[test]
    fn arp_request_and_reply() {
        let s = summarize(&arp(etherparse::ArpOperation::REQUEST));
        assert_eq!(s.ethertype.as_deref(), Some("arp"));
        let a = s.arp.as_ref().unwrap();
        assert_eq!(a.op, "request");
        assert_eq!(a.sender_mac, Some(MacAddr(A)));
        assert_eq!(a.sender_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(a.target_mac, Some(MacAddr::ZERO));
        assert_eq!(a.target_ip, Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(
            s.to_string(),
            "02:42:ac:11:00:02 > ff:ff:ff:ff:ff:ff, \
             arp request who-has 10.0.0.2 tell 10.0.0.1 (02:42:ac:11:00:02)"
        );
        let s = summarize(&arp(etherparse::ArpOperation::REPLY));
        assert_eq!(s.arp.as_ref().unwrap().op, "reply");
        assert!(s
            .to_string()
            .contains("arp reply 10.0.0.1 is-at 02:42:ac:11:00:02 to 10.0.0.2"));
    }

    #[test]
    fn unknown_ethertype() {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[0x01, 0x80, 0xc2, 0, 0, 0x0e]);
        f[6..12].copy_from_slice(&A);
        f[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
        let s = summarize(&f);
        assert_eq!(s.ethertype.as_deref(), Some("0x88cc"));
        assert!(s.ip.is_none() && s.arp.is_none() && s.error.is_none());
        assert_eq!(
            s.to_string(),
            "02:42:ac:11:00:02 > 01:80:c2:00:00:0e, 0x88cc len 60"
        );
    }

    #[test]
    fn truncated_frames_keep_what_parsed() {
        // Cut inside the TCP header: L2 and IP are known, TCP is not, and the error says why.
        let f = tcp_syn();
        let s = summarize(&f[..14 + 20 + 10]);
        assert_eq!(s.ethertype.as_deref(), Some("ipv4"));
        assert_eq!(s.ip.as_ref().unwrap().protocol, "tcp");
        assert!(s.tcp.is_none());
        assert!(s.error.is_some(), "{s:?}");
        assert!(s.to_string().contains("ttl 64 tcp (error: "), "{s}");
        assert!(
            s.error
                .as_deref()
                .unwrap()
                .contains("starts at overall parsed byte 34"),
            "{s}"
        );

        // Cut inside the IP header.
        let s = summarize(&f[..20]);
        assert_eq!(s.dl_src, Some(MacAddr(A)));
        assert!(s.ip.is_none());
        assert!(s.error.is_some());

        // A runt: only the destination.
        let s = summarize(&f[..8]);
        assert_eq!((s.dl_dst, s.dl_src), (Some(MacAddr(B)), None));
        assert!(s.error.as_deref().unwrap().contains("runt"));
        assert!(s
            .to_string()
            .starts_with("? > 02:42:ac:11:00:03 (error: runt"));

        // Cut inside the VLAN tag.
        let s = summarize(&icmp_echo_vlan10()[..16]);
        assert_eq!(s.vlan, Some(10));
        assert!(s.error.as_deref().unwrap().contains("VLAN"));

        // Empty.
        let s = summarize(&[]);
        assert_eq!((s.len, s.dl_dst, s.dl_src), (0, None, None));
        assert_eq!(
            s.to_string(),
            "? > ? (error: runt frame: 0 bytes, an Ethernet header needs 14)"
        );
    }

    #[test]
    fn ip_total_length_beyond_the_bytes_is_an_error() {
        let mut f = icmp_echo_vlan10();
        f.truncate(f.len() - 10);
        let s = summarize(&f);
        assert!(s.ip.is_some());
        assert!(s.error.is_some(), "{s:?}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let s = summarize(&bytes);
            let _ = s.to_string();
            prop_assert_eq!(s.len, bytes.len());
        }

        #[test]
        fn random_payloads_after_valid_headers_never_panic(
            ethertype in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806), Just(0x8100), Just(0x88a8), any::<u16>()],
            tail in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut f = Vec::from(B);
            f.extend_from_slice(&A);
            f.extend_from_slice(&ethertype.to_be_bytes());
            if ethertype == 0x0800 && !tail.is_empty() {
                // Give the random bytes a plausible IPv4 version/IHL so deeper layers are reached.
                f.push(0x45);
            }
            f.extend_from_slice(&tail);
            let _ = summarize(&f).to_string();
        }
    }
}
