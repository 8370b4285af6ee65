//! When an AF_PACKET port gets a receive ring and how it grows: quiet ports read their socket
//! queue and hold no ring; a port that reads [`BUSY_FRAMES_PER_SEC`] frames in a second, or
//! whose kernel drops frames, gets [`RING_MIN_BYTES`], grown fourfold on each later second
//! with drops up to [`RING_MAX_BYTES`], all rings of the process within [`RING_BUDGET`].

use super::ring::{self, RxRing, RING_MAX_BYTES, RING_MIN_BYTES};
use super::rx::{take_slot, SlotOutcome, TAG_LEN};
use super::{socket, AfPacketPort};
use crate::port::Packet;
use std::collections::VecDeque;
use std::io;
use std::mem;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

/// Ring memory all ports of the process together may hold: busy ports get rings and grow
/// them, quiet ones have none.
const RING_BUDGET: usize = 256 << 20;
/// Ring memory held by all ports of the process.
static RING_HELD: AtomicUsize = AtomicUsize::new(0);
/// Frames a second read from the socket queue that make a port busy enough for a ring.
const BUSY_FRAMES_PER_SEC: u64 = 1000;

/// Returns `bytes` of ring memory to the shared budget (a port that goes away).
pub(super) fn give_back(bytes: usize) {
    RING_HELD.fetch_sub(bytes, AtomicOrdering::Relaxed);
}

impl AfPacketPort {
    /// The once-a-second look: a port whose ring overflowed, or a ring-less port that got busy,
    /// gets a (bigger) ring. A failure fails the port on its next read: its socket is in an
    /// unknown state.
    pub(super) fn grow_ring_when_busy(&mut self) {
        let busy = mem::take(&mut self.queued_reads) >= BUSY_FRAMES_PER_SEC;
        if mem::take(&mut self.ring_was_full) || (self.ring.is_none() && busy) {
            if let Err(e) = self.grow_ring() {
                let err = socket::context(&self.name, "growing the receive ring", e);
                self.pending_err = Some(err);
            }
        }
    }

    /// Gives the port a ring of [`RING_MIN_BYTES`], or grows its ring fourfold (up to
    /// [`RING_MAX_BYTES`]), within [`RING_BUDGET`].
    ///
    /// The kernel takes a new ring only on a socket without a mapped one, so: unhook the socket
    /// (bind to protocol 0: the kernel stops handing it frames), move what the ring and the
    /// socket queue still hold to the backlog, set up the new ring, hook the socket again.
    /// Frames that reach the interface in those few milliseconds are not seen: the price of
    /// growing two or three times in a busy port's life.
    pub(super) fn grow_ring(&mut self) -> io::Result<()> {
        let have = self.ring_bytes;
        let want = if have == 0 {
            RING_MIN_BYTES
        } else {
            (have * 4).min(RING_MAX_BYTES)
        };
        if want <= have {
            return Ok(());
        }
        let extra = want - have;
        let reserved =
            RING_HELD.fetch_update(AtomicOrdering::Relaxed, AtomicOrdering::Relaxed, |used| {
                (used + extra <= RING_BUDGET).then_some(used + extra)
            });
        if reserved.is_err() {
            return Ok(());
        }
        let fd = self.socket.as_raw_fd();
        if let Err(e) = socket::bind(fd, self.ifindex, 0) {
            RING_HELD.fetch_sub(extra, AtomicOrdering::Relaxed);
            return Err(e);
        }
        self.save_frames();
        // The old ring is unmapped (dropped), then freed in the kernel, which takes one ring
        // per socket.
        let made = match self.ring.take().map(drop) {
            Some(()) => ring::free(fd).and_then(|()| RxRing::new(fd, want)),
            None => RxRing::new(fd, want),
        };
        // If the bigger ring cannot be had, the old size is asked for again.
        let made = match made {
            Ok(ring) => {
                self.ring = Some(ring);
                Ok(())
            }
            Err(e) if have > 0 => {
                self.ring = RxRing::new(fd, have).ok();
                Err(e)
            }
            Err(e) => Err(e),
        };
        // What the port holds now, whichever ring it got.
        let held = self.ring.as_ref().map_or(0, RxRing::bytes);
        RING_HELD.fetch_sub(extra + have - held, AtomicOrdering::Relaxed);
        self.ring_bytes = held;
        let hooked = socket::bind(fd, self.ifindex, libc::ETH_P_ALL as u16);
        let why = if have == 0 {
            "busy port: receive ring set up"
        } else {
            "frames dropped for want of slots: receive ring grown"
        };
        tracing::info!(port = %self.name, ring_kib = held >> 10, "{why}");
        made.and(hooked)
    }

    /// Moves every frame the ring and the socket queue hold to the backlog, in order (while
    /// the socket is unhooked).
    fn save_frames(&mut self) {
        let mut scratch = Packet::new();
        let keep = |backlog: &mut VecDeque<Packet>, pkt: &Packet| {
            // Sized to the frame: a queue of small frames must not take 64 KB each.
            let mut saved = Packet::with_capacity(pkt.len + TAG_LEN);
            saved.set(pkt.frame());
            saved.meta = pkt.meta;
            backlog.push_back(saved);
        };
        while let Some(slot) = self.ring.as_ref().and_then(RxRing::ready) {
            if slot.status & libc::TP_STATUS_COPY != 0 {
                match self.recv_queued(&mut scratch) {
                    Ok(Some(true)) => keep(&mut self.backlog, &scratch),
                    Ok(Some(false)) => {}
                    Ok(None) | Err(_) => self.overruns += 1,
                }
            } else {
                match take_slot(&slot, &mut scratch) {
                    SlotOutcome::Kept => keep(&mut self.backlog, &scratch),
                    SlotOutcome::Cut => self.overruns += 1,
                    SlotOutcome::Bad => self.bad_frames.add(),
                }
            }
            if let Some(ring) = self.ring.as_mut() {
                ring.release();
            }
        }
        // Without a ring, every frame is in the queue; with one, nothing is left there.
        loop {
            match self.recv_queued(&mut scratch) {
                Ok(Some(true)) => keep(&mut self.backlog, &scratch),
                Ok(Some(false)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}
