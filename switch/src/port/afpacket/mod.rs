//! AF_PACKET ports: an existing interface (the host end of a veth, a NIC under macvlan) attached
//! to the switch through a raw packet socket.
//!
//! The socket (packet(7)) is bound to one interface and sees every frame arriving on it
//! (`ETH_P_ALL`, promiscuous membership). Its options make it a switch port:
//! - `PACKET_VNET_HDR`: a 10-byte virtio-net header precedes every frame both ways, so TCP
//!   super-frames up to 64 KB cross whole and partial checksums stay partial
//!   (see [`crate::offload`]);
//! - `PACKET_IGNORE_OUTGOING`: frames leaving the interface (ours, or the host stack's) are not
//!   read back;
//! - `PACKET_QDISC_BYPASS`: our frames go straight to the driver, as a switch port would.
//!
//! A busy port's frames arrive through a TPACKET_V2 receive ring ([`ring`]): the kernel
//! copies each frame into a slot of memory shared with us, so reading one costs no system call.
//! A frame too big for a slot (a super-frame) is also queued whole on the socket
//! (`PACKET_COPY_THRESH`); its slot says so (`TP_STATUS_COPY`) and it is read with recvmsg(2) at
//! its turn, so order holds. A new port has no ring and reads its socket queue with recvmsg(2):
//! hundreds of quiet container ports then cost no ring memory, and adding one does not wait for
//! the kernel to set a ring up (an RCU grace period). Once a port reads 1000 frames in a second,
//! or the kernel drops frames for it, it gets a 256 KiB ring, grown fourfold on every later
//! second with drops, but only up to what the datapath drains within its latency budget (4 ms
//! at its measured cost per frame): a deeper ring would be a standing queue, every frame
//! waiting behind thousands. Beyond that the kernel drops (`rx_queue_full`). The deepest the
//! ring was seen each second is kept (`rx_queue_peak`).
//! Frames leave in batches with sendmmsg(2), without waiting: what the socket cannot take at
//! once is dropped at once (`tx_queue_full`); nothing is queued in the switch. The message
//! arrays are kept between calls so the hot path allocates nothing.

//!
//! One concern per file: [`socket`] opens and binds the socket with its options, [`ring`] maps
//! the receive ring, [`ring_policy`] decides when a port gets a ring and how it grows within
//! the process's budget, [`rx`] turns what the kernel hands over back into frames, [`batch`]
//! holds the msghdr arrays of recvmsg/sendmmsg, and [`ifreq`] asks the kernel about
//! interfaces (index, MTU, state).

mod batch;
mod ifreq;
mod ring;
mod ring_policy;
mod rx;
mod socket;
#[cfg(test)]
mod tests;

pub use ifreq::{interface_exists, interface_mtu, link_is_up};

use super::{Capabilities, FrameRef, Packet, Port, Tally};
use crate::offload::{Offloads, VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use batch::MsgBatch;
use ring::RxRing;
use rx::{restore_tag, take_slot, SlotOutcome, TAG_LEN};
use socket2::Socket;
use std::collections::VecDeque;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};

/// Most frames a port moves in one call, as declared in its capabilities.
const MAX_BURST: usize = 64;
/// Most messages one sendmmsg call takes (the kernel's `UIO_MAXIOV`).
const MAX_MMSG: usize = 1024;

/// A switch port on an existing interface, through an AF_PACKET socket.
pub struct AfPacketPort {
    name: String,
    ifindex: u32,
    mtu: usize,
    /// Declared before the socket: unmapped before the socket closes. `None` until the port
    /// gets busy: a quiet port reads the socket queue, and costs neither ring memory nor the
    /// kernel's pause to set a ring up (an RCU grace period, milliseconds).
    ring: Option<RxRing>,
    socket: Socket,
    batch: MsgBatch,
    /// Frames received unusable (truncated, bad offsets or offload metadata).
    bad_frames: Tally,
    /// Frames the kernel refused on send.
    rejected_frames: Tally,
    /// Super-frames the kernel could not queue whole (receive buffer full) since the datapath
    /// last asked; the kernel's own ring-full drops are read from the socket.
    overruns: u64,
    /// An error met after some frames were read, reported by the next `recv`.
    pending_err: Option<io::Error>,
    /// The ring dropped frames for want of slots since the last look: grow it.
    ring_was_full: bool,
    /// Frames taken out of the ring while it was being replaced, handed over first.
    backlog: VecDeque<Packet>,
    /// Ring bytes this port holds of the budget shared by all ports (see [`ring_policy`]).
    ring_bytes: usize,
    /// Frames read from the socket queue (no ring yet) since the last look; the read that
    /// brings it to `ring_policy::BUSY_FRAMES_PER_SEC` sets up a ring.
    queued_reads: u64,
    /// The deepest the receive queue was seen (frames waiting) since the datapath last asked.
    rx_peak: u64,
    /// Frames the datapath drains within its latency budget: the ring grows no further.
    queue_budget: usize,
}

impl AfPacketPort {
    /// Opens a port on the interface `ifname`, which must exist (it is not created).
    ///
    /// Needs CAP_NET_RAW. The interface is put in promiscuous mode for as long as the port lives.
    pub fn open(ifname: &str) -> io::Result<AfPacketPort> {
        let ifindex = ifreq::ifindex_of(ifname)
            .map_err(|e| socket::context(ifname, "no such interface", e))?;
        let socket = socket::open(ifname, ifindex)?;
        let mtu = ifreq::ioctl_mtu(socket.as_raw_fd(), ifname)
            .map_err(|e| socket::context(ifname, "SIOCGIFMTU", e))?;
        Ok(AfPacketPort {
            name: ifname.to_string(),
            ifindex,
            mtu,
            ring: None,
            socket,
            batch: MsgBatch::default(),
            bad_frames: Tally::default(),
            rejected_frames: Tally::default(),
            overruns: 0,
            pending_err: None,
            ring_was_full: false,
            backlog: VecDeque::new(),
            ring_bytes: 0,
            queued_reads: 0,
            rx_peak: 0,
            queue_budget: ring_policy::DEFAULT_QUEUE_BUDGET,
        })
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Frames received and dropped here: truncated, with offsets out of their ring slot, or
    /// with an unusable virtio-net header.
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames.total()
    }

    /// Slots in the receive ring (0: no ring yet).
    pub fn ring_slots(&self) -> usize {
        self.ring.as_ref().map_or(0, RxRing::frame_nr)
    }

    /// Frames the kernel refused on send (`EINVAL`, `EMSGSIZE`: bad offload metadata, too big,
    /// too short); they count as taken and are dropped.
    pub fn rejected_frames(&self) -> u64 {
        self.rejected_frames.total()
    }

    /// Reads the next frame of the socket queue into `pkt` (recvmsg(2) with the virtio-net
    /// header and the VLAN auxiliary data): the whole frame a `TP_STATUS_COPY` slot stands for,
    /// or, before the port has a ring, any frame. `Ok(Some(true))`: read; `Ok(Some(false))`: the
    /// frame was dropped and counted; `Ok(None)`: the queue is empty. An error is the socket's
    /// own (the port failed).
    fn recv_queued(&mut self, pkt: &mut Packet) -> io::Result<Option<bool>> {
        self.batch.reserve(1);
        // Room is kept for a tag the kernel took out.
        let room = pkt.buf.len().saturating_sub(TAG_LEN);
        let fd = self.socket.as_raw_fd();
        let total = loop {
            self.batch.point(0, pkt.buf.as_mut_ptr(), room);
            self.batch.want_control(0);
            // SAFETY: `msgs[0].msg_hdr` is an initialised msghdr whose iovecs point at `hdrs[0]`
            // and at `pkt.buf` and whose control buffer is `ctrl[0]`, all alive and exclusively
            // borrowed for the duration of the call; the kernel writes at most their lengths.
            let rc =
                unsafe { libc::recvmsg(fd, &mut self.batch.msgs[0].msg_hdr, libc::MSG_DONTWAIT) };
            if rc >= 0 {
                break rc as usize;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(None),
                // The kernel could not express the frame's offload state as a virtio-net
                // header; it consumed (dropped) that frame.
                Some(libc::EINVAL) => {
                    self.bad_frames.add();
                    return Ok(Some(false));
                }
                // ENETDOWN (interface down or deleted) and anything else: the port failed.
                _ => return Err(err),
            }
        };
        let truncated = self.batch.msgs[0].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let tag = self.batch.vlan_tag(0);
        match VirtioNetHdr::parse(&self.batch.hdrs[0]) {
            Ok(meta) if !truncated && total >= VIRTIO_NET_HDR_LEN => {
                pkt.meta = meta;
                pkt.len = total - VIRTIO_NET_HDR_LEN;
                if let Some(tag) = tag {
                    restore_tag(pkt, tag);
                }
                Ok(Some(true))
            }
            _ => {
                self.bad_frames.add();
                Ok(Some(false))
            }
        }
    }

    /// Reads the interface's MTU again (it may have changed since the port was opened).
    pub fn refresh_mtu(&mut self) -> io::Result<usize> {
        self.mtu = ifreq::ioctl_mtu(self.socket.as_raw_fd(), &self.name)?;
        Ok(self.mtu)
    }
}

impl Port for AfPacketPort {
    fn refresh(&mut self) {
        // A vanished interface keeps the last MTU; the port goes down through recv/send.
        let _ = self.refresh_mtu();
        self.grow_ring_when_busy();
    }

    fn take_tx_refused(&mut self) -> u64 {
        self.rejected_frames.take_new()
    }

    fn take_rx_bad(&mut self) -> u64 {
        self.bad_frames.take_new()
    }

    fn take_rx_queue_peak(&mut self) -> u64 {
        mem::take(&mut self.rx_peak)
    }

    fn set_rx_queue_budget(&mut self, frames: usize) {
        self.queue_budget = frames;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn link_up(&self) -> bool {
        ifreq::link_is_up(&self.name, self.ifindex)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            mtu: self.mtu,
            // The kernel takes GSO frames with a virtio-net header on send (segmenting them itself
            // if the device cannot), and hands over super-frames from veth and GRO on receive.
            offloads: Offloads::ALL,
            max_burst: MAX_BURST,
        }
    }

    fn take_rx_overruns(&mut self) -> u64 {
        // A failure here (the socket is fine while the port lives) only loses a count.
        let kernel = ring::take_kernel_drops(self.socket.as_raw_fd()).unwrap_or(0);
        if kernel > 0 {
            self.ring_was_full = true;
        }
        kernel + mem::take(&mut self.overruns)
    }

    fn recv(&mut self, pkts: &mut [Packet]) -> io::Result<usize> {
        if let Some(err) = self.pending_err.take() {
            return Err(err);
        }
        // Drains the ring until a slot is not ready or `pkts` is full. Returning fewer than
        // `pkts.len()` means the ring was seen empty: the kernel wakes the poller for every frame
        // it hands over after that (sk_data_ready), so nothing waits unseen (the datapath polls
        // edge-triggered).
        let mut n = 0;
        // Frames saved while the ring was replaced come first.
        while n < pkts.len() {
            let Some(saved) = self.backlog.pop_front() else {
                break;
            };
            // Copied, not swapped: the datapath's buffers keep their full size.
            pkts[n].set(saved.frame());
            pkts[n].meta = saved.meta;
            n += 1;
        }
        if self.ring.is_none() {
            // No ring yet: frame by frame from the socket queue.
            while n < pkts.len() {
                match self.recv_queued(&mut pkts[n]) {
                    Ok(Some(kept)) => n += usize::from(kept),
                    Ok(None) => break,
                    Err(err) if n > 0 => {
                        self.pending_err = Some(err);
                        break;
                    }
                    Err(err) => return Err(err),
                }
            }
            // The socket queue's depth is not known; what one call read is a floor.
            self.rx_peak = self.rx_peak.max(n as u64);
            self.count_queued_reads(n);
            return Ok(n);
        }
        while n < pkts.len() {
            let Some(slot) = self.ring.as_ref().and_then(RxRing::ready) else {
                break;
            };
            if slot.status & libc::TP_STATUS_COPY != 0 {
                // A super-frame: the slot holds a cut copy, the socket queue the whole frame,
                // queued in slot order. The slot is kept until the read is done, so a read that
                // fails on a socket error is tried again at this same place.
                match self.recv_queued(&mut pkts[n]) {
                    Ok(Some(kept)) => n += usize::from(kept),
                    // The slot says a copy was queued but there is none: lost on the way in.
                    Ok(None) => self.overruns += 1,
                    Err(err) if n > 0 => {
                        self.pending_err = Some(err);
                        return Ok(n);
                    }
                    Err(err) => return Err(err),
                }
            } else {
                match take_slot(&slot, &mut pkts[n]) {
                    SlotOutcome::Kept => n += 1,
                    // Too big for a slot, and the socket's receive buffer had no room for the
                    // whole frame: the kernel could not queue it.
                    SlotOutcome::Cut => self.overruns += 1,
                    SlotOutcome::Bad => self.bad_frames.add(),
                }
            }
            if let Some(ring) = self.ring.as_mut() {
                ring.release();
            }
        }
        // How deep the queue was: what this call took, and when it took a full batch, what is
        // still waiting behind it.
        let (behind, slots) = match &self.ring {
            Some(ring) if n == pkts.len() => (ring.waiting(), ring.frame_nr()),
            _ => (0, usize::MAX),
        };
        self.rx_peak = self.rx_peak.max((n + behind) as u64);
        if n + behind >= slots && self.pending_err.is_none() {
            self.grow_ring_when_full();
        }
        if n == 0 {
            // The interface went down or vanished (ENETDOWN): the ring just stops filling, and
            // the socket error it leaves wakes the poller; it is reported once, here.
            if let Some(err) = self.socket.take_error()? {
                return Err(err);
            }
        }
        Ok(n)
    }

    fn send(&mut self, frames: &[FrameRef<'_>]) -> io::Result<usize> {
        let fd = self.socket.as_raw_fd();
        let mut done = 0;
        while done < frames.len() {
            let chunk = &frames[done..frames.len().min(done + MAX_MMSG)];
            self.batch.reserve(chunk.len());
            for (i, frame) in chunk.iter().enumerate() {
                self.batch.hdrs[i] = frame.meta.to_bytes();
                // The kernel only reads from a send buffer; the cast to *mut is for iovec's sake.
                self.batch
                    .point(i, frame.data.as_ptr().cast_mut(), frame.data.len());
            }
            let mut off = 0;
            while off < chunk.len() {
                // SAFETY: `msgs[off..chunk.len()]` are initialised mmsghdrs whose iovecs point at
                // `hdrs[i]` and at the borrowed frame bytes, alive for the duration of the call;
                // the kernel only reads them. `off < chunk.len() <= msgs.len()` keeps the pointer
                // in bounds.
                let rc = unsafe {
                    libc::sendmmsg(
                        fd,
                        self.batch.msgs.as_mut_ptr().add(off),
                        (chunk.len() - off) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if rc > 0 {
                    // A short count: the next call says why the next frame was not sent.
                    off += rc as usize;
                    continue;
                }
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // Socket buffer or device queue full (or no carrier, with the qdisc bypassed).
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) => return Ok(done + off),
                    // This frame is refused; skip it and send the rest.
                    Some(libc::EINVAL) | Some(libc::EMSGSIZE) => {
                        self.rejected_frames.add();
                        off += 1;
                    }
                    // ENXIO (interface deleted), ENETDOWN (interface down) and anything else:
                    // report what was taken; the next call reports the error.
                    _ if done + off > 0 => return Ok(done + off),
                    _ => return Err(err),
                }
            }
            done += chunk.len();
        }
        Ok(done)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.socket.as_raw_fd())
    }
}

impl Drop for AfPacketPort {
    fn drop(&mut self) {
        ring_policy::give_back(self.ring_bytes);
    }
}

impl std::fmt::Debug for AfPacketPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketPort")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .field("mtu", &self.mtu)
            .field("fd", &self.socket.as_raw_fd())
            .finish()
    }
}
