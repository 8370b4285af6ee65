//! ARP for IPv4 over Ethernet (RFC 826): the field offsets, reading a request, and turning a
//! request into its reply in place (the bridge's ARP suppression).

use super::{L2Header, MacAddr};
use std::net::Ipv4Addr;

/// Offsets in an ARP packet for IPv4 over Ethernet (RFC 826): hardware type, protocol type,
/// lengths, operation, then sender MAC and IP, target MAC and IP.
mod field {
    use std::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
    pub const LEN: usize = 28;
    /// `ares_op$REQUEST` and `ares_op$REPLY`.
    pub const REQUEST: u16 = 1;
    pub const REPLY: u16 = 2;
}

/// The sender and target IPv4 addresses of an ARP request for IPv4 over Ethernet (RFC 826),
/// whose packet starts at `offset` of `frame`; `None` for anything else.
pub fn arp_request(frame: &[u8], offset: usize) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let p = frame.get(offset..offset.checked_add(field::LEN)?)?;
    let be16 = |r: std::ops::Range<usize>| u16::from_be_bytes([p[r.start], p[r.start + 1]]);
    let ok = be16(field::HTYPE) == 1
        && be16(field::PTYPE) == 0x0800
        && p[field::HLEN] == 6
        && p[field::PLEN] == 4
        && be16(field::OPER) == field::REQUEST;
    let ip = |r: std::ops::Range<usize>| {
        Ipv4Addr::new(p[r.start], p[r.start + 1], p[r.start + 2], p[r.start + 3])
    };
    ok.then(|| (ip(field::SPA), ip(field::TPA)))
}

/// Turns an ARP request (as [`Decision::arp_reply`] found it) into the reply saying its target
/// address is at `mac` (RFC 826: the sender fields become the target fields, `mac` and the
/// asked address the sender fields, the operation REPLY), addressed to the asker from `mac`.
/// The frame keeps its length and tags. False (and the frame untouched) if it is no such
/// request.
pub fn arp_reply_in_place(frame: &mut [u8], mac: MacAddr) -> bool {
    let Ok(hdr) = L2Header::parse(frame) else {
        return false;
    };
    if hdr.ethertype != crate::wire::EtherType::Arp {
        return false;
    }
    let off = hdr.payload_offset;
    if arp_request(frame, off).is_none() {
        return false;
    }
    let p = &mut frame[off..off + field::LEN];
    let mut asker_mac = [0u8; 6];
    asker_mac.copy_from_slice(&p[field::SHA]);
    let mut asker_ip = [0u8; 4];
    asker_ip.copy_from_slice(&p[field::SPA]);
    let mut asked_ip = [0u8; 4];
    asked_ip.copy_from_slice(&p[field::TPA]);
    p[field::OPER].copy_from_slice(&field::REPLY.to_be_bytes());
    p[field::SHA].copy_from_slice(&mac.0);
    p[field::SPA].copy_from_slice(&asked_ip);
    p[field::THA].copy_from_slice(&asker_mac);
    p[field::TPA].copy_from_slice(&asker_ip);
    frame[0..6].copy_from_slice(&hdr.src.0);
    frame[6..12].copy_from_slice(&mac.0);
    true
}
