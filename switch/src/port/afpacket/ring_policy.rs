//! When an AF_PACKET port gets a receive ring and how big it is: quiet ports read their socket
//! queue and hold no ring; a port that reads [`BUSY_FRAMES_PER_SEC`] frames within a second
//! gets [`RING_MIN_BYTES`] at once, on the read that reaches it (the socket queue is sized for
//! super-frames: thousands of small frames would wait in it for tens of milliseconds), as does
//! one whose kernel drops frames; the ring is grown fourfold whenever a read finds it full
//! while the kernel drops (and at the once-a-second look after drops), but never past the
//! latency budget: the frames the datapath drains in
//! [`crate::datapath::RX_LATENCY_BUDGET`] at its measured cost per frame (the port's
//! `queue_budget`), so no frame waits in the ring longer than that while the datapath has its
//! CPU (longer where it shares one); a deeper ring would only be a standing queue. A ring the budget shrank under to a quarter is cut back to it. All within
//! [`RING_MIN_BYTES`]..[`RING_MAX_BYTES`] per port and [`RING_BUDGET`] for the process.

use super::ring::{self, RxRing, FRAME_SIZE, RING_MAX_BYTES, RING_MIN_BYTES};
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
/// The queue budget (frames) until the datapath has measured its cost: 4 ms at 1 µs a frame
/// (`crate::datapath::RX_LATENCY_BUDGET` at the cost it assumes).
pub(super) const DEFAULT_QUEUE_BUDGET: usize = 4_000;
/// A ring more than this many times its budget is cut back (hysteresis: the measured cost
/// wobbles, and a new ring costs a pause).
const SHRINK_FACTOR: usize = 4;
/// Ring sizes the budget gives are whole multiples of this (a multiple of any page size), so
/// the ring the kernel makes is exactly the size asked for and is not asked for again.
const RING_GRAIN: usize = 64 << 10;

/// The ring a port should have now, in bytes, or `None` to keep what it has (`have`, 0 for
/// none): `dropped`, the kernel dropped frames for want of slots in the last second; `busy`,
/// it read many frames without a ring; `budget_frames`, what the datapath drains within its
/// latency budget.
pub(super) fn wanted_ring_bytes(
    have: usize,
    dropped: bool,
    busy: bool,
    budget_frames: usize,
) -> Option<usize> {
    let cap = ring_cap_bytes(budget_frames);
    if have == 0 {
        return (dropped || busy).then_some(RING_MIN_BYTES);
    }
    if have > cap.saturating_mul(SHRINK_FACTOR) {
        return Some(cap);
    }
    if dropped && have < cap {
        return Some(have.saturating_mul(4).min(cap));
    }
    None
}

/// The most ring a port may grow to: `budget_frames` slots, in whole grains, within
/// [`RING_MIN_BYTES`]..[`RING_MAX_BYTES`].
fn ring_cap_bytes(budget_frames: usize) -> usize {
    (budget_frames.saturating_mul(FRAME_SIZE) / RING_GRAIN * RING_GRAIN)
        .clamp(RING_MIN_BYTES, RING_MAX_BYTES)
}

/// Returns `bytes` of ring memory to the shared budget (a port that goes away).
pub(super) fn give_back(bytes: usize) {
    RING_HELD.fetch_sub(bytes, AtomicOrdering::Relaxed);
}

impl AfPacketPort {
    /// The once-a-second look: a port whose ring overflowed (below its latency budget), or a
    /// ring-less port that got busy, gets a (bigger) ring; one far over its budget gets a
    /// smaller one. A failure fails the port on its next read: its socket is in an unknown
    /// state.
    pub(super) fn grow_ring_when_busy(&mut self) {
        let busy = mem::take(&mut self.queued_reads) >= BUSY_FRAMES_PER_SEC;
        let dropped = mem::take(&mut self.ring_was_full);
        let Some(want) = wanted_ring_bytes(self.ring_bytes, dropped, busy, self.queue_budget)
        else {
            return;
        };
        if let Err(e) = self.resize_ring(want) {
            let err = socket::context(&self.name, "resizing the receive ring", e);
            self.pending_err = Some(err);
        }
    }

    /// Called when a read found every slot of the ring full: if the kernel dropped frames for
    /// want of slots and the ring may still grow, it grows now, not at the next once-a-second
    /// look (a port that turns busy at 150 kpps otherwise loses frames for the two seconds its
    /// first ring of 128 slots takes to grow). The drops read (which resets the kernel's
    /// count) are kept for `take_rx_overruns`. A ring at its cap is left alone, without a
    /// system call: under overload the ring is full on every read.
    pub(super) fn grow_ring_when_full(&mut self) {
        if self.ring_bytes >= ring_cap_bytes(self.queue_budget) {
            return;
        }
        let Ok(dropped) = ring::take_kernel_drops(self.socket.as_raw_fd()) else {
            return;
        };
        if dropped == 0 {
            return;
        }
        self.overruns += dropped;
        if let Some(want) = wanted_ring_bytes(self.ring_bytes, true, false, self.queue_budget) {
            if let Err(e) = self.resize_ring(want) {
                let err = socket::context(&self.name, "growing the receive ring", e);
                self.pending_err = Some(err);
            }
        }
    }

    /// Counts `n` frames read from the socket queue of a port without a ring, and sets up the
    /// smallest ring on the read that makes the port busy, not at the next once-a-second look.
    /// A failure fails the port on its next read, as in [`Self::grow_ring_when_busy`]; a port
    /// already failing is left to fail with its own error.
    pub(super) fn count_queued_reads(&mut self, n: usize) {
        let before = self.queued_reads;
        self.queued_reads += n as u64;
        let busy_now = before < BUSY_FRAMES_PER_SEC && self.queued_reads >= BUSY_FRAMES_PER_SEC;
        if busy_now && self.pending_err.is_none() {
            if let Err(e) = self.resize_ring(RING_MIN_BYTES) {
                let err = socket::context(&self.name, "setting up the receive ring", e);
                self.pending_err = Some(err);
            }
        }
    }

    /// Gives the port a ring of `want` bytes in place of the one it has (if any), within
    /// [`RING_BUDGET`] (a ring that would pass it is not grown).
    ///
    /// The kernel takes a new ring only on a socket without a mapped one, so: unhook the socket
    /// (bind to protocol 0: the kernel stops handing it frames), move what the ring and the
    /// socket queue still hold to the backlog, set up the new ring, hook the socket again.
    /// Frames that reach the interface in those few milliseconds are not seen: the price of
    /// growing two or three times in a busy port's life.
    pub(super) fn resize_ring(&mut self, want: usize) -> io::Result<()> {
        let have = self.ring_bytes;
        if want == have {
            return Ok(());
        }
        let extra = want.saturating_sub(have);
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
        // If the new ring cannot be had, the old size is asked for again.
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
        // What the port holds now, whichever ring it got (never more than `have + extra`: a
        // ring is `want` or `have` rounded down to whole blocks, or none).
        let held = self.ring.as_ref().map_or(0, RxRing::bytes);
        RING_HELD.fetch_sub(extra + have - held, AtomicOrdering::Relaxed);
        self.ring_bytes = held;
        let hooked = socket::bind(fd, self.ifindex, libc::ETH_P_ALL as u16);
        let why = if have == 0 {
            "busy port: receive ring set up"
        } else if want > have {
            "frames dropped for want of slots: receive ring grown"
        } else {
            "receive ring cut back to the latency budget"
        };
        tracing::info!(
            port = %self.name,
            ring_kib = held >> 10,
            budget_frames = self.queue_budget,
            "{why}"
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots of a ring of `bytes`.
    fn slots(bytes: usize) -> usize {
        bytes / FRAME_SIZE
    }

    #[test]
    fn a_quiet_port_gets_no_ring_and_a_busy_one_the_smallest() {
        assert_eq!(wanted_ring_bytes(0, false, false, 1000), None);
        assert_eq!(
            wanted_ring_bytes(0, false, true, 1000),
            Some(RING_MIN_BYTES)
        );
        assert_eq!(
            wanted_ring_bytes(0, true, false, 1000),
            Some(RING_MIN_BYTES)
        );
        // Even a budget below the smallest ring gets the smallest ring.
        assert_eq!(wanted_ring_bytes(0, true, false, 1), Some(RING_MIN_BYTES));
    }

    #[test]
    fn drops_grow_the_ring_up_to_the_latency_budget_and_no_further() {
        // 1000 frames drained in the budget: 128 slots, then 512, then 992 (whole 64 KiB),
        // then no more.
        let budget = 1000;
        let mut have = RING_MIN_BYTES;
        let mut sizes = vec![slots(have)];
        while let Some(want) = wanted_ring_bytes(have, true, true, budget) {
            assert!(want > have, "{want} after {have}");
            have = want;
            sizes.push(slots(have));
        }
        assert_eq!(sizes, [128, 512, 992]);
        // Without drops nothing changes.
        assert_eq!(wanted_ring_bytes(RING_MIN_BYTES, false, true, budget), None);
        // A faster datapath (more frames within the budget) lets it grow to the cap.
        let mut have = RING_MIN_BYTES;
        while let Some(want) = wanted_ring_bytes(have, true, false, usize::MAX) {
            have = want;
        }
        assert_eq!(have, RING_MAX_BYTES);
    }

    #[test]
    fn a_ring_far_over_its_budget_is_cut_back_to_it() {
        // Grown at 4096 frames per budget; the cost per frame rose fourfold: within the
        // hysteresis, kept.
        let have = 4096 * FRAME_SIZE;
        assert_eq!(wanted_ring_bytes(have, false, false, 1024), None);
        // Past it: cut back to what the budget allows, drops or not.
        assert_eq!(
            wanted_ring_bytes(have, false, false, 960),
            Some(960 * FRAME_SIZE)
        );
        assert_eq!(
            wanted_ring_bytes(have, true, false, 500),
            Some(480 * FRAME_SIZE)
        );
        // Never below the smallest ring.
        assert_eq!(wanted_ring_bytes(RING_MIN_BYTES * 2, true, false, 0), None);
        assert_eq!(
            wanted_ring_bytes(RING_MIN_BYTES * 8, false, false, 0),
            Some(RING_MIN_BYTES)
        );
    }
}
