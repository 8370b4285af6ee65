//! A TPACKET_V2 receive ring: the memory an AF_PACKET socket shares with the kernel so frames
//! arrive without a system call each (`PACKET_RX_RING`, Linux
//! `Documentation/networking/packet_mmap.rst`).
//!
//! The ring is an array of fixed-size slots. Each starts with a `tpacket2_hdr` whose `tp_status`
//! says who owns the slot: `TP_STATUS_KERNEL` (0), free for the kernel to fill, or
//! `TP_STATUS_USER`, filled and ours until we give it back. The kernel fills slots in order and
//! never skips one that is still ours (it drops the frame and counts it in `PACKET_STATISTICS`
//! instead), so reading slot after slot from where we stopped sees every frame in order.
//!
//! TPACKET_V2 rather than V3: V3 hands frames over a block at a time and holds a block until it
//! fills or its timer (≥ 1 ms) fires, which adds that much latency at low rates.

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::offload::VIRTIO_NET_HDR_LEN;

/// `TPACKET_ALIGN` (linux/if_packet.h): slot contents are aligned to 16 bytes.
const fn tpacket_align(x: usize) -> usize {
    (x + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1)
}

/// Ethernet header length, without tags (the kernel takes the outer tag out before we see it).
const ETH_HLEN: usize = 14;
/// Largest Ethernet frame at a 1500-byte MTU, plus room for one tag the kernel leaves in (the
/// inner one of two).
const MAX_MTU_FRAME: usize = 1500 + ETH_HLEN + 4;

/// Where the kernel puts the MAC header of a frame whose link header is `maclen` bytes long, on a
/// SOCK_RAW socket with a virtio-net header (`tpacket_rcv` in net/packet/af_packet.c):
/// `netoff = TPACKET_ALIGN(TPACKET2_HDRLEN + max(maclen, 16)) + vnet_hdr_len`,
/// `macoff = netoff - maclen`. `TPACKET2_HDRLEN` is the aligned `tpacket2_hdr` followed by a
/// `sockaddr_ll`; the virtio-net header sits just before the MAC header.
const fn mac_offset(maclen: usize) -> usize {
    let l = if maclen < 16 { 16 } else { maclen };
    tpacket_align(libc::TPACKET2_HDRLEN + l) + VIRTIO_NET_HDR_LEN - maclen
}

/// The MAC header's offset in a slot for an Ethernet frame (76 bytes).
pub(super) const ETH_MAC_OFFSET: usize = mac_offset(ETH_HLEN);

/// The smallest slot that holds a full-MTU Ethernet frame with its headers.
const MIN_FRAME_SIZE: usize = ETH_MAC_OFFSET + MAX_MTU_FRAME;

/// Bytes per slot: the next power of two (2048), so slots pack pages and blocks exactly and
/// MTUs up to about 1950 still fit. Larger frames (super-frames) take the copy path.
pub(super) const FRAME_SIZE: usize = MIN_FRAME_SIZE.next_power_of_two();
const _: () = assert!(tpacket_align(FRAME_SIZE) == FRAME_SIZE && FRAME_SIZE >= MIN_FRAME_SIZE);

/// A busy port's first ring: 128 slots of 2 KiB. It grows where frames are still dropped for
/// want of slots, up to what the datapath drains within its latency budget (see
/// `ring_policy`), and never past [`RING_MAX_BYTES`].
pub(super) const RING_MIN_BYTES: usize = 256 << 10;
/// The most a port's ring grows to whatever the latency budget allows: 8192 slots (8 ms of
/// frames at 1 Mpps).
pub(super) const RING_MAX_BYTES: usize = 16 << 20;

/// One slot as the kernel filled it: its header fields and its bytes.
pub(super) struct Slot<'a> {
    /// `tp_status`: `TP_STATUS_USER` and flags (`TP_STATUS_COPY`, VLAN validity, …).
    pub status: u32,
    /// `tp_len`: the frame's full length.
    pub len: usize,
    /// `tp_snaplen`: how much of it is in the slot.
    pub snaplen: usize,
    /// `tp_mac`: offset of the MAC header in the slot.
    pub mac: usize,
    /// `tp_net`: offset of the network header in the slot.
    pub net: usize,
    /// `tp_vlan_tci`, valid with `TP_STATUS_VLAN_VALID`.
    pub vlan_tci: u16,
    /// `tp_vlan_tpid`, valid with `TP_STATUS_VLAN_TPID_VALID`.
    pub vlan_tpid: u16,
    bytes: &'a [u8],
}

impl<'a> Slot<'a> {
    /// The virtio-net header and the frame bytes in the slot, or `None` when the offsets the
    /// kernel reported do not make sense (the header would overlap `tpacket2_hdr`/`sockaddr_ll`,
    /// or the frame would run past the slot).
    pub fn contents(&self) -> Option<(&'a [u8], &'a [u8])> {
        let vnet_start = self.mac.checked_sub(VIRTIO_NET_HDR_LEN)?;
        if vnet_start < libc::TPACKET2_HDRLEN || self.net < self.mac {
            return None;
        }
        let bytes = self.bytes;
        let frame = bytes.get(self.mac..self.mac.checked_add(self.snaplen)?)?;
        Some((&bytes[vnet_start..self.mac], frame))
    }
}

/// A mapped TPACKET_V2 receive ring and our place in it.
pub(super) struct RxRing {
    base: NonNull<u8>,
    map_len: usize,
    block_size: usize,
    frames_per_block: usize,
    frame_nr: usize,
    /// The next slot to read.
    head: usize,
}

// SAFETY: the ring is memory shared with the kernel, reached only through `&self`/`&mut self`
// (no aliases in other threads); nothing in it is tied to the thread that mapped it.
unsafe impl Send for RxRing {}

impl RxRing {
    /// Asks the kernel for a ring on the AF_PACKET socket `fd` and maps it. `PACKET_VERSION` must
    /// already be `TPACKET_V2` (and `PACKET_VNET_HDR` set: it cannot change once a ring exists).
    ///
    /// Blocks are one page each (at least one slot): the kernel then needs no contiguous
    /// higher-order pages for them, which matters with hundreds of ports. `bytes` is rounded
    /// down to whole blocks (at least one).
    pub fn new(fd: RawFd, bytes: usize) -> io::Result<RxRing> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let block_size = FRAME_SIZE.div_ceil(page) * page;
        let frames_per_block = block_size / FRAME_SIZE;
        let block_nr = (bytes / block_size).max(1);
        let frame_nr = frames_per_block * block_nr;
        let to_uint = |v: usize| {
            libc::c_uint::try_from(v)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ring too large"))
        };
        let req = libc::tpacket_req {
            tp_block_size: to_uint(block_size)?,
            tp_block_nr: to_uint(block_nr)?,
            tp_frame_size: to_uint(FRAME_SIZE)?,
            tp_frame_nr: to_uint(frame_nr)?,
        };
        set_rx_ring(fd, &req)?;
        let map_len = block_size * block_nr;
        // SAFETY: maps the ring just set up on `fd` (offset 0, its whole length); the kernel
        // checks the length against the ring. The mapping is owned by the returned RxRing and
        // unmapped in its Drop.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(addr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(RxRing {
            base,
            map_len,
            block_size,
            frames_per_block,
            frame_nr,
            head: 0,
        })
    }

    /// Number of slots.
    pub fn frame_nr(&self) -> usize {
        self.frame_nr
    }

    /// Bytes of ring memory.
    pub fn bytes(&self) -> usize {
        self.map_len
    }

    /// Start of slot `i`. Slots do not straddle blocks; a block may end in unused bytes.
    fn slot_ptr(&self, i: usize) -> *mut u8 {
        let off = (i / self.frames_per_block) * self.block_size
            + (i % self.frames_per_block) * FRAME_SIZE;
        debug_assert!(off + FRAME_SIZE <= self.map_len);
        // SAFETY: `i < frame_nr`, so `off + FRAME_SIZE <= map_len`: in bounds of the mapping.
        unsafe { self.base.as_ptr().add(off) }
    }

    /// The status word of slot `i`, as an atomic: the kernel writes it from other CPUs.
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: the slot start is 16-byte aligned (page-aligned mapping, slot sizes a multiple
        // of 16) and `tp_status` is its first field; the mapping outlives `&self`. The word is
        // only accessed atomically on our side.
        unsafe { AtomicU32::from_ptr(self.slot_ptr(i).cast()) }
    }

    /// The slot at the head if the kernel has handed it over, else `None` (the ring is empty, or
    /// the kernel is still filling that slot).
    pub fn ready(&self) -> Option<Slot<'_>> {
        // Acquire pairs with the kernel's barrier before it sets the status: once we see
        // TP_STATUS_USER, the header fields and frame bytes it wrote are visible too.
        let status = self.status(self.head).load(Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            return None;
        }
        let p = self.slot_ptr(self.head);
        // SAFETY: the slot is ours until `release` (the kernel does not write a slot whose status
        // is not TP_STATUS_KERNEL), it lies inside the mapping, and the returned borrow of `self`
        // keeps `release` (which needs `&mut self`) and the unmapping away while it lives.
        let (hdr, bytes) = unsafe {
            (
                ptr::read(p.cast::<libc::tpacket2_hdr>()),
                std::slice::from_raw_parts(p.cast_const(), FRAME_SIZE),
            )
        };
        Some(Slot {
            status,
            len: hdr.tp_len as usize,
            snaplen: hdr.tp_snaplen as usize,
            mac: usize::from(hdr.tp_mac),
            net: usize::from(hdr.tp_net),
            vlan_tci: hdr.tp_vlan_tci,
            vlan_tpid: hdr.tp_vlan_tpid,
            bytes,
        })
    }

    /// Frames waiting: how many slots from the head the kernel has handed over and we have
    /// not read, found by bisection (a few loads, not a walk). The kernel fills slots in ring
    /// order, so the ready ones form a run from the head; a slot still being filled on another
    /// CPU can make the count short by the slots behind it, which is fine for a high-water mark.
    pub fn waiting(&self) -> usize {
        let ready = |k: usize| {
            let status = self.status((self.head + k) % self.frame_nr);
            status.load(Ordering::Relaxed) & libc::TP_STATUS_USER != 0
        };
        if !ready(0) {
            return 0;
        }
        // Slot `lo` is ready; slot `hi` is not (or `hi` is past the last slot).
        let (mut lo, mut hi) = (0, self.frame_nr);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if ready(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }

    /// Gives the head slot back to the kernel and moves to the next one.
    pub fn release(&mut self) {
        // Release: our reads of the slot happen before the kernel may fill it again.
        self.status(self.head)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.head = (self.head + 1) % self.frame_nr;
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: `base`/`map_len` are the mapping made in `new`, unmapped only here; no slot
        // borrow can outlive `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}

/// Frees the socket's ring in the kernel (its mapping must be gone: the kernel keeps one ring
/// per socket and takes a new one only after an empty request).
pub(super) fn free(fd: RawFd) -> io::Result<()> {
    let none = libc::tpacket_req {
        tp_block_size: 0,
        tp_block_nr: 0,
        tp_frame_size: 0,
        tp_frame_nr: 0,
    };
    set_rx_ring(fd, &none)
}

/// `setsockopt(PACKET_RX_RING)`: asks for the ring `req` describes (all zero: frees the ring).
fn set_rx_ring(fd: RawFd, req: &libc::tpacket_req) -> io::Result<()> {
    // SAFETY: `req` is a valid tpacket_req that outlives the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_RX_RING,
            (req as *const libc::tpacket_req).cast(),
            mem::size_of::<libc::tpacket_req>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `getsockopt(PACKET_STATISTICS)`: frames the kernel dropped because the ring (or, for the copy
/// of a super-frame, the receive queue) was full, since the last call. Reading resets the count.
pub(super) fn take_kernel_drops(fd: RawFd) -> io::Result<u64> {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `stats` and `len` outlive the call; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(stats.tp_drops))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_follows_the_kernel_layout() {
        // tpacket2_hdr is 32 bytes, sockaddr_ll 20: TPACKET2_HDRLEN = 52.
        assert_eq!(mem::size_of::<libc::tpacket2_hdr>(), 32);
        assert_eq!(libc::TPACKET2_HDRLEN, 52);
        // netoff = ALIGN16(52 + 16) + 10 = 90, macoff = 90 - 14 = 76.
        assert_eq!(ETH_MAC_OFFSET, 76);
        assert_eq!(mac_offset(18), 72);
        assert_eq!(MIN_FRAME_SIZE, 76 + 1518);
        assert_eq!(FRAME_SIZE, 2048);
        assert_eq!(RING_MIN_BYTES / FRAME_SIZE, 128);
        assert_eq!(RING_MAX_BYTES / FRAME_SIZE, 8192);
    }
}
