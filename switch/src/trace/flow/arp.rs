//! The ARP part of a flow (RFC 826): `arp_op`, `arp_sha`, `arp_spa`, `arp_tha`, `arp_tpa`, and
//! the packet they build.

use super::fields::{number, Fields, Key};
use super::ip::ipv4;
use super::{ethernet, FlowError, Net};
use crate::wire::{EtherType, MacAddr};
use etherparse::{ArpHardwareId, ArpOperation, ArpPacket};
use std::net::Ipv4Addr;

/// Bytes of an ARP packet for IPv4 over Ethernet.
pub(super) const PACKET_LEN: usize = 28;

/// The ARP packet a spec describes; `arp_sha` defaults to the frame's source.
pub(super) fn net(fields: &Fields<'_>, dl_src: MacAddr) -> Result<Net, FlowError> {
    Ok(Net::Arp {
        op: match fields.get(Key::ArpOp) {
            None => 1,
            Some(f) => match f.value {
                "request" => 1,
                "reply" => 2,
                _ => number(f, 1, 2)? as u16,
            },
        },
        sha: ethernet::mac(fields, Key::ArpSha, dl_src)?,
        spa: ipv4(fields.get(Key::ArpSpa))?,
        tha: ethernet::mac(fields, Key::ArpTha, MacAddr::ZERO)?,
        tpa: ipv4(fields.get(Key::ArpTpa))?,
    })
}

/// Writes the EtherType and the packet.
pub(super) fn write(
    out: &mut Vec<u8>,
    op: u16,
    (sha, spa): (MacAddr, Ipv4Addr),
    (tha, tpa): (MacAddr, Ipv4Addr),
) {
    out.extend_from_slice(&u16::from(EtherType::Arp).to_be_bytes());
    if let Ok(arp) = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        etherparse::EtherType::IPV4,
        ArpOperation(op),
        &sha.0,
        &spa.octets(),
        &tha.0,
        &tpa.octets(),
    ) {
        out.extend_from_slice(&arp.to_bytes());
    }
}
