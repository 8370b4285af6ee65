//! What the kernel hands over, made a frame again: the frame in a ring slot with its
//! virtio-net header, and the VLAN tag the kernel took out (VLAN offload) put back.

use super::ring;
use crate::offload::VirtioNetHdr;
use crate::port::Packet;

use crate::wire::ethernet::TAG;
pub(super) use crate::wire::ethernet::TAG_LEN;

/// The VLAN tag (TPID, TCI) the kernel took out of a frame, from the status, TCI and TPID of
/// a ring slot or a `tpacket_auxdata`.
pub(super) fn vlan_tag(status: u32, tci: u16, tpid: u16) -> Option<(u16, u16)> {
    if status & libc::TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
        tpid
    } else {
        crate::wire::ethernet::TPID_8021Q
    };
    Some((tpid, tci))
}

/// What became of one ring slot.
pub(super) enum SlotOutcome {
    /// The frame is in the packet.
    Kept,
    /// Cut short with no whole copy queued: too big for a slot while the socket's receive
    /// buffer was full, so the kernel lost it.
    Cut,
    /// Offsets outside the slot, or an unusable virtio-net header.
    Bad,
}

/// Copies the frame in a ring slot (not a `TP_STATUS_COPY` one) into `pkt`, with its offload
/// metadata (the virtio-net header just before the MAC header) and its VLAN tag put back.
pub(super) fn take_slot(slot: &ring::Slot<'_>, pkt: &mut Packet) -> SlotOutcome {
    if slot.snaplen < slot.len {
        return SlotOutcome::Cut;
    }
    let Some((vnet, frame)) = slot.contents() else {
        return SlotOutcome::Bad;
    };
    if frame.len() + TAG_LEN > pkt.buf.len() {
        return SlotOutcome::Bad;
    }
    let Ok(meta) = VirtioNetHdr::parse(vnet) else {
        return SlotOutcome::Bad;
    };
    pkt.buf[..frame.len()].copy_from_slice(frame);
    pkt.len = frame.len();
    pkt.meta = meta;
    if let Some(tag) = vlan_tag(slot.status, slot.vlan_tci, slot.vlan_tpid) {
        restore_tag(pkt, tag);
    }
    SlotOutcome::Kept
}

/// Puts back the tag the kernel took out of a received frame, and moves the offload offsets
/// with it.
pub(super) fn restore_tag(pkt: &mut Packet, (tpid, tci): (u16, u16)) {
    let len = pkt.len;
    if len < TAG.start || len + TAG_LEN > pkt.buf.len() {
        return;
    }
    pkt.buf.copy_within(TAG.start..len, TAG.end);
    let [t0, t1] = tpid.to_be_bytes();
    let [c0, c1] = tci.to_be_bytes();
    pkt.buf[TAG].copy_from_slice(&[t0, t1, c0, c1]);
    pkt.len = len + TAG_LEN;
    let shift = |v: u16| if v == 0 { 0 } else { v + TAG_LEN as u16 };
    pkt.meta.csum_start = shift(pkt.meta.csum_start);
    pkt.meta.hdr_len = shift(pkt.meta.hdr_len);
}
