//! Any bytes through the Ethernet, IPv4, IPv6, TCP and UDP views and the virtio-net header: a
//! value or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switch::wire::{ipv4, ipv6, tcp, udp, Frame, L2Header};
use switch::VirtioNetHdr;

fuzz_target!(|data: &[u8]| {
    let _ = L2Header::parse(data);
    if let Ok(f) = Frame::new_checked(data) {
        let _ = (f.dst(), f.src(), f.ethertype(), f.header(), f.payload());
    }
    if let Ok(p) = ipv4::Packet::new_checked(data) {
        let _ = (p.total_len(), p.is_fragment(), p.src_addr(), p.dst_addr());
        let _ = (p.options(), p.payload(), p.compute_checksum(), p.verify_checksum());
    }
    if let Ok(p) = ipv6::Packet::new_checked(data) {
        let _ = (p.payload_len(), p.next_header(), p.src_addr(), p.payload());
        let _ = p.pseudo_header_sum(p.next_header(), data.len() as u32);
    }
    if let Ok(p) = tcp::Packet::new_checked(data) {
        let _ = (p.seq_number(), p.flags(), p.options(), p.header(), p.payload());
    }
    if let Ok(p) = udp::Packet::new_checked(data) {
        let _ = (p.src_port(), p.len(), p.payload());
    }
    if let Ok(h) = VirtioNetHdr::parse(data) {
        let frame = &data[10..];
        let _ = switch::gso::Segmenter::new().segment(frame, &h, |_| {});
        let mut copy = frame.to_vec();
        let _ = switch::gso::complete_checksum(&mut copy, &h);
    }
});
