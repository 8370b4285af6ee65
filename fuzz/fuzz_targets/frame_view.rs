//! Any bytes through the Ethernet view and the virtio-net header: a value or an error, never a
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switch::wire::{Frame, L2Header};
use switch::VirtioNetHdr;

fuzz_target!(|data: &[u8]| {
    let _ = L2Header::parse(data);
    if let Ok(f) = Frame::new_checked(data) {
        let _ = (f.dst(), f.src(), f.ethertype(), f.header());
    }
    if let Ok(h) = VirtioNetHdr::parse(data) {
        let frame = &data[10..];
        let _ = switch::gso::Segmenter::new().segment(frame, &h, |_| {});
        let mut copy = frame.to_vec();
        let _ = switch::gso::complete_checksum(&mut copy, &h);
    }
});
