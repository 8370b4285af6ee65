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
//! A busy port's frames arrive through a TPACKET_V2 receive ring ([`super::ring`]): the kernel
//! copies each frame into a slot of memory shared with us, so reading one costs no system call.
//! A frame too big for a slot (a super-frame) is also queued whole on the socket
//! (`PACKET_COPY_THRESH`); its slot says so (`TP_STATUS_COPY`) and it is read with recvmsg(2) at
//! its turn, so order holds. A new port has no ring and reads its socket queue with recvmsg(2):
//! hundreds of quiet container ports then cost no ring memory, and adding one does not wait for
//! the kernel to set a ring up (an RCU grace period). Once a port reads 1000 frames in a second,
//! or the kernel drops frames for it, it gets a 256 KiB ring, grown fourfold on every later
//! second with drops, up to 16 MiB (all rings of the process within 256 MiB).
//! Frames leave in batches with sendmmsg(2). The message arrays are kept between calls so the
//! hot path allocates nothing.

use super::ring::{self, RxRing, RING_MAX_BYTES, RING_MIN_BYTES};
use super::{Capabilities, FrameRef, Packet, Port};
use crate::offload::{Offloads, VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use socket2::{Domain, Socket, Type};
use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

/// Most frames a port moves in one call, as declared in its capabilities.
const MAX_BURST: usize = 64;
/// Most messages one sendmmsg call takes (the kernel's `UIO_MAXIOV`).
const MAX_MMSG: usize = 1024;
/// Receive and send buffer size asked for: room for dozens of 64 KB super-frames (on receive,
/// only super-frames use it: the rest go through the ring).
const SOCKET_BUFFER: usize = 4 << 20;

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
    bad_frames: u64,
    rejected_frames: u64,
    /// `bad_frames + rejected_frames` when the datapath last asked.
    reported: u64,
    /// Super-frames the kernel could not queue whole (receive buffer full) since the datapath
    /// last asked; the kernel's own ring-full drops are read from the socket.
    overruns: u64,
    /// An error met after some frames were read, reported by the next `recv`.
    pending_err: Option<io::Error>,
    /// The ring dropped frames for want of slots since the last look: grow it.
    ring_was_full: bool,
    /// Frames taken out of the ring while it was being replaced, handed over first.
    backlog: VecDeque<Packet>,
    /// Ring bytes this port holds of the shared [`RING_BUDGET`].
    ring_bytes: usize,
    /// Frames read from the socket queue (no ring yet) since the last look.
    queued_reads: u64,
}

/// Ring memory all ports of the process together may hold: busy ports get rings and grow
/// them, quiet ones have none.
const RING_BUDGET: usize = 256 << 20;
/// Ring memory held by all ports of the process.
static RING_HELD: AtomicUsize = AtomicUsize::new(0);
/// Frames a second read from the socket queue that make a port busy enough for a ring.
const BUSY_FRAMES_PER_SEC: u64 = 1000;

impl AfPacketPort {
    /// Opens a port on the interface `ifname`, which must exist (it is not created).
    ///
    /// Needs CAP_NET_RAW. The interface is put in promiscuous mode for as long as the port lives.
    pub fn open(ifname: &str) -> io::Result<AfPacketPort> {
        let ifindex = ifindex_of(ifname).map_err(|e| context(ifname, "no such interface", e))?;
        // Protocol 0: the socket receives nothing until bind() names ETH_P_ALL and the interface,
        // so no frame of another interface slips in while the options are being set.
        let socket = Socket::new(Domain::PACKET, Type::RAW.nonblocking().cloexec(), None)
            .map_err(|e| context(ifname, "socket(AF_PACKET, SOCK_RAW)", e))?;
        let fd = socket.as_raw_fd();
        // PACKET_VNET_HDR and PACKET_VERSION must be set before the ring exists, and the ring
        // before bind, so every frame goes through it.
        for (opt, value, what) in [
            (libc::PACKET_VNET_HDR, 1, "PACKET_VNET_HDR"),
            (libc::PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING"),
            (libc::PACKET_QDISC_BYPASS, 1, "PACKET_QDISC_BYPASS"),
            // The kernel takes 802.1Q tags out of the frame (VLAN offload) before packet
            // sockets see it; the ring slot or the auxiliary data (recvmsg) gives them back.
            (libc::PACKET_AUXDATA, 1, "PACKET_AUXDATA"),
            (libc::PACKET_VERSION, TPACKET_V2, "PACKET_VERSION"),
            // Any frame too big for a slot is also queued whole on the socket (while the
            // receive buffer has room), to be read with recvmsg.
            (libc::PACKET_COPY_THRESH, 1, "PACKET_COPY_THRESH"),
        ] {
            set_int_opt(fd, libc::SOL_PACKET, opt, value).map_err(|e| context(ifname, what, e))?;
        }
        set_buffer_sizes(&socket);
        bind(fd, ifindex, libc::ETH_P_ALL as u16).map_err(|e| context(ifname, "bind", e))?;

        // SAFETY: packet_mreq is plain old data; all-zero is a valid value.
        let mut mreq: libc::packet_mreq = unsafe { mem::zeroed() };
        mreq.mr_ifindex = ifindex as i32;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        // SAFETY: `mreq` is a valid packet_mreq that outlives the call, and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mreq as *const libc::packet_mreq).cast(),
                mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return Err(context(ifname, "PACKET_ADD_MEMBERSHIP (promiscuous)", err));
        }

        let mtu = ioctl_mtu(fd, ifname).map_err(|e| context(ifname, "SIOCGIFMTU", e))?;
        Ok(AfPacketPort {
            name: ifname.to_string(),
            ifindex,
            mtu,
            ring: None,
            socket,
            batch: MsgBatch::default(),
            bad_frames: 0,
            rejected_frames: 0,
            reported: 0,
            overruns: 0,
            pending_err: None,
            ring_was_full: false,
            backlog: VecDeque::new(),
            ring_bytes: 0,
            queued_reads: 0,
        })
    }

    /// Gives the port a ring of [`RING_MIN_BYTES`], or grows its ring fourfold (up to
    /// [`RING_MAX_BYTES`]), within [`RING_BUDGET`].
    ///
    /// The kernel takes a new ring only on a socket without a mapped one, so: unhook the socket
    /// (bind to protocol 0: the kernel stops handing it frames), move what the ring and the
    /// socket queue still hold to the backlog, set up the new ring, hook the socket again.
    /// Frames that reach the interface in those few milliseconds are not seen: the price of
    /// growing two or three times in a busy port's life.
    fn grow_ring(&mut self) -> io::Result<()> {
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
        if let Err(e) = bind(fd, self.ifindex, 0) {
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
        let hooked = bind(fd, self.ifindex, libc::ETH_P_ALL as u16);
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
                    SlotOutcome::Bad => self.bad_frames += 1,
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

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Frames received and dropped here: truncated, with offsets out of their ring slot, or
    /// with an unusable virtio-net header.
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames
    }

    /// Slots in the receive ring (0: no ring yet).
    pub fn ring_slots(&self) -> usize {
        self.ring.as_ref().map_or(0, RxRing::frame_nr)
    }

    /// Frames the kernel refused on send (`EINVAL`, `EMSGSIZE`: bad offload metadata, too big,
    /// too short); they count as taken and are dropped.
    pub fn rejected_frames(&self) -> u64 {
        self.rejected_frames
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
                    self.bad_frames += 1;
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
                self.bad_frames += 1;
                Ok(Some(false))
            }
        }
    }

    /// Reads the interface's MTU again (it may have changed since the port was opened).
    pub fn refresh_mtu(&mut self) -> io::Result<usize> {
        self.mtu = ioctl_mtu(self.socket.as_raw_fd(), &self.name)?;
        Ok(self.mtu)
    }
}

impl Port for AfPacketPort {
    fn refresh(&mut self) {
        // A vanished interface keeps the last MTU; the port goes down through recv/send.
        let _ = self.refresh_mtu();
        let busy = mem::take(&mut self.queued_reads) >= BUSY_FRAMES_PER_SEC;
        if mem::take(&mut self.ring_was_full) || (self.ring.is_none() && busy) {
            if let Err(e) = self.grow_ring() {
                // The port's socket is in an unknown state: fail it on the next read.
                self.pending_err = Some(context(&self.name, "growing the receive ring", e));
            }
        }
    }

    fn take_drops(&mut self) -> u64 {
        let total = self.bad_frames + self.rejected_frames;
        let new = total - self.reported;
        self.reported = total;
        new
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn link_up(&self) -> bool {
        link_is_up(&self.name, self.ifindex)
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
            self.queued_reads += n as u64;
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
                    SlotOutcome::Bad => self.bad_frames += 1,
                }
            }
            if let Some(ring) = self.ring.as_mut() {
                ring.release();
            }
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
                        self.rejected_frames += 1;
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
        RING_HELD.fetch_sub(self.ring_bytes, AtomicOrdering::Relaxed);
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

/// True when an interface called `name` exists in the calling thread's network namespace.
pub fn interface_exists(name: &str) -> bool {
    ifindex_of(name).is_ok()
}

/// The index of interface `name` (if_nametoindex(3)).
fn ifindex_of(name: &str) -> io::Result<u32> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name contains NUL"))?;
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index)
    }
}

/// The MTU of interface `name`, asked through any socket `fd` (SIOCGIFMTU, netdevice(7)).
///
/// An ioctl rather than `/sys/class/net/IF/mtu`: sysfs shows the namespace it was mounted in,
/// the socket shows the namespace it lives in.
fn ioctl_mtu(fd: RawFd, name: &str) -> io::Result<usize> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    if name.len() >= req.ifr_name.len() || name.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name; SIOCGIFMTU writes an int into
    // its union and nothing beyond it.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFMTU as _, &mut req as *mut libc::ifreq) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU succeeded, so the union holds the MTU.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(usize::try_from(mtu).unwrap_or(0))
}

/// True when the interface `name` still has index `ifindex` and is administratively up: a port
/// that went down on ENETDOWN may be used again.
pub fn link_is_up(name: &str, ifindex: u32) -> bool {
    let Ok(sock) = Socket::new(Domain::IPV4, Type::DGRAM, None) else {
        return false;
    };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    if name.len() >= req.ifr_name.len() || name.as_bytes().contains(&0) {
        return false;
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    let fd = sock.as_raw_fd();
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name; SIOCGIFINDEX writes an int
    // into its union.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFINDEX as _, &mut req as *mut libc::ifreq) } != 0 {
        return false;
    }
    // SAFETY: SIOCGIFINDEX succeeded, so the union holds the index.
    if unsafe { req.ifr_ifru.ifru_ifindex } as u32 != ifindex {
        return false;
    }
    // SAFETY: as above; SIOCGIFFLAGS writes a short into the union.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req as *mut libc::ifreq) } != 0 {
        return false;
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so the union holds the flags.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    flags as libc::c_int & libc::IFF_UP != 0
}

/// Sets an integer socket option.
/// Binds the packet socket `fd` to interface `ifindex` for `protocol` (host order; 0 takes no
/// frames at all).
fn bind(fd: RawFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol.to_be();
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a valid sockaddr_ll that outlives the call, and its size is passed.
    let rc = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_ll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Grows the socket buffers to [`SOCKET_BUFFER`]: past `net.core.[rw]mem_max` with
/// CAP_NET_ADMIN (`SO_*BUFFORCE`), else as far as the limits allow. Best effort: a smaller
/// buffer only means earlier backpressure.
fn set_buffer_sizes(socket: &Socket) {
    let fd = socket.as_raw_fd();
    let size = SOCKET_BUFFER as libc::c_int;
    if set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    }
    if set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size).is_err() {
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    }
}

/// Adds the interface name and the step that failed to an error, and a hint when it is about
/// privileges.
fn context(ifname: &str, what: &str, err: io::Error) -> io::Error {
    let hint = if err.kind() == io::ErrorKind::PermissionDenied {
        " (needs CAP_NET_RAW)"
    } else {
        ""
    };
    io::Error::new(
        err.kind(),
        format!("AF_PACKET port {ifname}: {what}: {err}{hint}"),
    )
}

/// The arrays sendmmsg (and recvmsg, for super-frames) work on, kept between calls so a call
/// allocates nothing once they are big enough.
#[derive(Default)]
struct MsgBatch {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<[libc::iovec; 2]>,
    hdrs: Vec<[u8; VIRTIO_NET_HDR_LEN]>,
    /// Control-message space per message (room for one `tpacket_auxdata`), 8-byte aligned.
    ctrl: Vec<[u64; CTRL_WORDS]>,
}

/// Bytes of one VLAN tag.
const TAG_LEN: usize = 4;
/// Control buffer per message, in u64 words: a cmsghdr plus a tpacket_auxdata, with room.
const CTRL_WORDS: usize = 8;
/// `PACKET_VERSION` value of the ring layout we read.
const TPACKET_V2: libc::c_int = libc::tpacket_versions::TPACKET_V2 as libc::c_int;

/// The VLAN tag (TPID, TCI) the kernel took out of a frame, from the status, TCI and TPID of
/// a ring slot or a `tpacket_auxdata`.
fn vlan_tag(status: u32, tci: u16, tpid: u16) -> Option<(u16, u16)> {
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
enum SlotOutcome {
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
fn take_slot(slot: &ring::Slot<'_>, pkt: &mut Packet) -> SlotOutcome {
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
fn restore_tag(pkt: &mut Packet, (tpid, tci): (u16, u16)) {
    let len = pkt.len;
    if len < 12 || len + TAG_LEN > pkt.buf.len() {
        return;
    }
    pkt.buf.copy_within(12..len, 12 + TAG_LEN);
    pkt.buf[12..14].copy_from_slice(&tpid.to_be_bytes());
    pkt.buf[14..16].copy_from_slice(&tci.to_be_bytes());
    pkt.len = len + TAG_LEN;
    let shift = |v: u16| if v == 0 { 0 } else { v + TAG_LEN as u16 };
    pkt.meta.csum_start = shift(pkt.meta.csum_start);
    pkt.meta.hdr_len = shift(pkt.meta.hdr_len);
}

// SAFETY: the raw pointers in `msgs` and `iovs` (into `iovs`, `hdrs` and the caller's buffers)
// are written at the start of each recv/send call, read by the kernel within that call, and
// never dereferenced afterwards; between calls they are stale and unused. Nothing is shared, so
// moving the arrays to another thread is sound.
unsafe impl Send for MsgBatch {}

impl MsgBatch {
    /// Grows the arrays to hold at least `n` messages.
    fn reserve(&mut self, n: usize) {
        if self.msgs.len() < n {
            // SAFETY: mmsghdr is plain old data; all-zero (null pointers, zero lengths) is valid.
            self.msgs.resize_with(n, || unsafe { mem::zeroed() });
            let empty = libc::iovec {
                iov_base: ptr::null_mut(),
                iov_len: 0,
            };
            self.iovs.resize(n, [empty; 2]);
            self.hdrs.resize(n, [0; VIRTIO_NET_HDR_LEN]);
            self.ctrl.resize(n, [0; CTRL_WORDS]);
        }
    }

    /// Lets message `i` receive control messages (the VLAN auxdata).
    fn want_control(&mut self, i: usize) {
        let msg = &mut self.msgs[i];
        msg.msg_hdr.msg_control = self.ctrl[i].as_mut_ptr().cast();
        msg.msg_hdr.msg_controllen = mem::size_of::<[u64; CTRL_WORDS]>();
    }

    /// The VLAN tag (TPID, TCI) the kernel took out of received message `i`, if any.
    fn vlan_tag(&self, i: usize) -> Option<(u16, u16)> {
        let hdr = &self.msgs[i].msg_hdr;
        if hdr.msg_control.is_null() {
            return None;
        }
        // SAFETY: msg_control points at our `ctrl[i]` buffer, and the kernel set msg_controllen
        // to what it wrote; CMSG_FIRSTHDR/NXTHDR stay within it.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
        while !cmsg.is_null() {
            // SAFETY: `cmsg` is non-null and inside the control buffer (see above).
            let c = unsafe { &*cmsg };
            if c.cmsg_level == libc::SOL_PACKET && c.cmsg_type == libc::PACKET_AUXDATA {
                // SAFETY: a PACKET_AUXDATA message carries one tpacket_auxdata; the data may not
                // be aligned for it, so it is read unaligned.
                let aux: libc::tpacket_auxdata =
                    unsafe { ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                return vlan_tag(aux.tp_status, aux.tp_vlan_tci, aux.tp_vlan_tpid);
            }
            // SAFETY: as above.
            cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
        }
        None
    }

    /// Points message `i` at header slot `i` followed by `len` bytes at `buf`.
    fn point(&mut self, i: usize, buf: *mut u8, len: usize) {
        self.iovs[i] = [
            libc::iovec {
                iov_base: self.hdrs[i].as_mut_ptr().cast(),
                iov_len: VIRTIO_NET_HDR_LEN,
            },
            libc::iovec {
                iov_base: buf.cast(),
                iov_len: len,
            },
        ];
        let msg = &mut self.msgs[i];
        msg.msg_len = 0;
        msg.msg_hdr.msg_name = ptr::null_mut();
        msg.msg_hdr.msg_namelen = 0;
        msg.msg_hdr.msg_iov = self.iovs[i].as_mut_ptr();
        msg.msg_hdr.msg_iovlen = 2;
        msg.msg_hdr.msg_control = ptr::null_mut();
        msg.msg_hdr.msg_controllen = 0;
        msg.msg_hdr.msg_flags = 0;
    }
}

/// Helpers for root-only tests that run inside a private network namespace.
#[cfg(test)]
pub(crate) mod testutil {
    use crate::offload::{VirtioNetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};
    use std::io;
    use std::os::fd::AsRawFd;
    use std::os::fd::RawFd;
    use std::time::{Duration, Instant};

    /// True when running as root. Otherwise prints `skipped: needs root` and returns false,
    /// or panics under `CI=true`, where root tests must run.
    pub fn root_or_skip() -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("this test needs root, and CI=true requires it to run");
        }
        println!("skipped: needs root");
        false
    }

    /// Runs `body` on a fresh thread inside a new network namespace of its own. Everything made
    /// there (veths, TAPs) goes away with the namespace when the thread ends, also on failure.
    pub fn in_private_netns<F: FnOnce() + Send + 'static>(body: F) {
        let thread = std::thread::spawn(move || {
            // SAFETY: unshare(CLONE_NEWNET) only moves this thread into a new namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET): {}",
                io::Error::last_os_error()
            );
            body()
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }

    /// Runs `ip ARGS…` in the calling thread's namespace (the child inherits it) and asserts
    /// it succeeded.
    pub fn ip(args: &[&str]) {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until `fd` is readable or `deadline` passes; true when readable.
    pub fn wait_readable(fd: RawFd, deadline: Instant) -> bool {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, 1000) as libc::c_int;
            // SAFETY: `pfd` is a valid pollfd for the duration of the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc > 0 {
                return true;
            }
        }
    }

    /// The MTU of interface `name` in the calling thread's network namespace.
    pub fn interface_mtu(name: &str) -> io::Result<usize> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        super::ioctl_mtu(socket.as_raw_fd(), name)
    }

    /// A deadline `secs` from now.
    pub fn deadline(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    /// Adds the 16-bit big-endian words of `data` to `sum`.
    fn sum_words(data: &[u8], mut sum: u32) -> u32 {
        for w in data.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
        sum
    }

    fn fold(mut sum: u32) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// A TCP/IPv4 super-frame of `len` bytes, with its checksum left partial as TSO wants it.
    pub fn tso4_frame(len: usize) -> (VirtioNetHdr, Vec<u8>) {
        let (ip_len, tcp_len) = (len - 14, len - 34);
        let mut f = Vec::with_capacity(len);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, (ip_len >> 8) as u8, ip_len as u8, 0, 1, 0x40, 0]);
        f.extend_from_slice(&[64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        let ip_csum = !fold(sum_words(&f[14..34], 0));
        f[24..26].copy_from_slice(&ip_csum.to_be_bytes());
        // Ports 1234 → 5678, seq 1, ack 0, 20-byte header, ACK|PSH, window 65535.
        f.extend_from_slice(&[0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 0]);
        f.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        // CHECKSUM_PARTIAL: the field holds the pseudo-header sum, not complemented.
        let pseudo = sum_words(&f[26..34], 6 + tcp_len as u32);
        f[50..52].copy_from_slice(&fold(pseudo).to_be_bytes());
        f.extend((0..len - 54).map(|i| i as u8));
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1400,
            csum_start: 34,
            csum_offset: 16,
        };
        (hdr, f)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{
        deadline, in_private_netns, ip, root_or_skip, tso4_frame, wait_readable,
    };
    use super::*;
    use crate::offload::VIRTIO_NET_HDR_GSO_TCPV4;

    /// A local experimental EtherType (IEEE 802), so test frames never mix with the kernel's.
    const TEST_ETHERTYPE: [u8; 2] = [0x88, 0xb5];

    fn veth_pair(a: &str, b: &str) {
        ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
        ip(&["link", "set", a, "up"]);
        ip(&["link", "set", b, "up"]);
    }

    /// A 60-byte broadcast frame carrying sequence number `seq`.
    fn test_frame(seq: u32) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        f.extend_from_slice(&TEST_ETHERTYPE);
        f.extend_from_slice(b"vswitch");
        f.extend_from_slice(&seq.to_be_bytes());
        f.resize(60, 0xab);
        f
    }

    /// Sends every frame, retrying while the port is momentarily full.
    /// Frames with their offload metadata, as a port sends them.
    fn refs_of(frames: &[(VirtioNetHdr, Vec<u8>)]) -> Vec<FrameRef<'_>> {
        frames
            .iter()
            .map(|(meta, data)| FrameRef { meta: *meta, data })
            .collect()
    }

    /// Frames without offload metadata, as a port sends them.
    fn plain_refs(frames: &[Vec<u8>]) -> Vec<FrameRef<'_>> {
        frames
            .iter()
            .map(|f| FrameRef {
                meta: VirtioNetHdr::NONE,
                data: f,
            })
            .collect()
    }

    fn send_all(port: &mut AfPacketPort, frames: &[FrameRef<'_>]) {
        let until = deadline(5);
        let mut sent = 0;
        while sent < frames.len() {
            sent += port.send(&frames[sent..]).expect("send");
            assert!(std::time::Instant::now() < until, "port stayed full");
        }
        assert_eq!(port.rejected_frames(), 0);
    }

    /// Receives until `want(frame)` matched `count` frames or the deadline passed.
    fn recv_matching(
        port: &mut AfPacketPort,
        count: usize,
        want: impl Fn(&Packet) -> bool,
    ) -> Vec<Packet> {
        let until = deadline(5);
        let mut pkts = vec![Packet::new(); 16];
        let mut got = Vec::new();
        while got.len() < count && wait_readable(port.raw_fd().unwrap(), until) {
            let n = port.recv(&mut pkts).expect("recv");
            got.extend(pkts[..n].iter().filter(|p| want(p)).cloned());
        }
        got
    }

    fn is_test_frame(p: &Packet) -> bool {
        p.frame().get(12..14) == Some(&TEST_ETHERTYPE[..])
    }

    #[test]
    fn vlan_tags_taken_out_by_the_kernel_are_put_back() {
        on_a_veth_both_ways(|mut a, mut b| {
            // VLAN 10, priority 5, then the test EtherType.
            let mut tagged = test_frame(7)[..12].to_vec();
            tagged.extend_from_slice(&[0x81, 0x00, 0xa0, 0x0a]);
            tagged.extend_from_slice(&test_frame(7)[12..]);
            let refs = [FrameRef {
                meta: VirtioNetHdr::NONE,
                data: &tagged,
            }];
            send_all(&mut a, &refs);
            let got = recv_matching(&mut b, 1, |p| {
                p.frame().get(16..18) == Some(&TEST_ETHERTYPE[..])
            });
            assert_eq!(got.len(), 1, "the tagged frame did not arrive with its tag");
            assert_eq!(got[0].frame(), &tagged[..]);
        });
    }

    #[test]
    fn veth_batch_arrives_in_order_and_is_not_read_back() {
        if !root_or_skip() {
            return;
        }
        in_private_netns(|| {
            veth_pair("va", "vb");
            let mut a = AfPacketPort::open("va").unwrap();
            let mut b = AfPacketPort::open("vb").unwrap();
            assert!(interface_exists("va") && !interface_exists("nosuchif0"));
            assert_eq!(a.ifindex(), ifindex_of("va").unwrap());
            let caps = a.capabilities();
            assert_eq!(
                (caps.mtu, caps.offloads, caps.max_burst),
                (1500, Offloads::ALL, 64)
            );

            let frames: Vec<Vec<u8>> = (0..32).map(test_frame).collect();
            let refs = plain_refs(&frames);
            send_all(&mut a, &refs);

            let got = recv_matching(&mut b, 32, is_test_frame);
            let got: Vec<&[u8]> = got.iter().map(|p| p.frame()).collect();
            let sent: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            assert_eq!(got, sent);
            assert_eq!(b.bad_frames(), 0);

            // Had the sender's frames been looped back to it, they would have been queued on its
            // socket before the peer saw them: one non-blocking read is enough to tell.
            let mut pkts = vec![Packet::new(); 16];
            loop {
                let n = a.recv(&mut pkts).unwrap();
                assert!(!pkts[..n].iter().any(is_test_frame), "own frames read back");
                if n == 0 {
                    break;
                }
            }
        });
    }

    /// TCP payload bytes of a TCP/IPv4 frame from 10.0.0.1 (0 for anything else).
    fn tcp_payload_len(p: &Packet) -> usize {
        let f = p.frame();
        if f.len() < 54 || f[12..14] != [0x08, 0x00] || f[23] != 6 || f[26..30] != [10, 0, 0, 1] {
            return 0;
        }
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let ip_total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        let doff = usize::from(f[14 + ihl + 12] >> 4) * 4;
        ip_total - ihl - doff
    }

    #[test]
    fn gso_super_frame_crosses_a_veth() {
        on_a_veth_both_ways(|mut a, mut b| {
            let (hdr, frame) = tso4_frame(20000);
            send_all(
                &mut a,
                &[FrameRef {
                    meta: hdr,
                    data: &frame,
                }],
            );

            let payload = 20000 - 54;
            let until = deadline(5);
            let mut pkts = vec![Packet::new(); 16];
            let mut got = Vec::new();
            while got.iter().map(tcp_payload_len).sum::<usize>() < payload
                && wait_readable(b.raw_fd().unwrap(), until)
            {
                let n = b.recv(&mut pkts).unwrap();
                got.extend(pkts[..n].iter().filter(|p| tcp_payload_len(p) > 0).cloned());
            }
            assert_eq!(got.iter().map(tcp_payload_len).sum::<usize>(), payload);
            if got.len() == 1 {
                // Whole, as a super-frame with its offload metadata.
                let m = got[0].meta;
                assert_eq!(got[0].frame(), &frame[..]);
                assert_eq!((m.gso_kind(), m.gso_size), (VIRTIO_NET_HDR_GSO_TCPV4, 1400));
                assert_eq!((m.csum_start, m.csum_offset), (34, 16));
            } else {
                // Segmented on the way: MSS-sized pieces.
                assert!(got.iter().all(|p| tcp_payload_len(p) <= 1400));
            }
        });
    }

    #[test]
    fn vanished_interface_is_an_error() {
        on_a_veth_both_ways(|_a, mut b| {
            ip(&["link", "del", "vb"]);
            assert!(!interface_exists("vb"));

            // The socket reports ENETDOWN once, waking poll with POLLERR.
            let until = deadline(5);
            let mut pkts = vec![Packet::new(); 4];
            let err = loop {
                match b.recv(&mut pkts) {
                    Err(e) => break e,
                    Ok(_) => assert!(wait_readable(b.raw_fd().unwrap(), until), "no error"),
                }
            };
            assert_eq!(err.raw_os_error(), Some(libc::ENETDOWN), "{err}");

            let frame = test_frame(0);
            let err = b
                .send(&[FrameRef {
                    meta: VirtioNetHdr::NONE,
                    data: &frame,
                }])
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENXIO), "{err}");
        });
    }

    /// Runs `body` twice, each time in a private namespace with a veth pair va–vb and a port on
    /// each end (`a` on va, `b` on vb): once with `b` reading its socket queue, once through a
    /// ring.
    fn on_a_veth_both_ways(body: fn(AfPacketPort, AfPacketPort)) {
        on_a_veth(&[false, true], body);
    }

    /// [`on_a_veth_both_ways`] for the ways named: `false` for the socket queue, `true` for a
    /// ring.
    fn on_a_veth(ways: &[bool], body: fn(AfPacketPort, AfPacketPort)) {
        if !root_or_skip() {
            return;
        }
        for &ringed in ways {
            in_private_netns(move || {
                quiet_namespace();
                veth_pair("va", "vb");
                let a = AfPacketPort::open("va").unwrap();
                let mut b = AfPacketPort::open("vb").unwrap();
                if ringed {
                    b.grow_ring().unwrap();
                }
                body(a, b);
            });
        }
    }

    /// Turns IPv6 off in the calling thread's namespace, for interfaces made after: no router
    /// or multicast listener messages, so every frame a test receives is one it sent.
    fn quiet_namespace() {
        for f in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{f}/disable_ipv6");
            // A kernel without IPv6 has no such file, and nothing to quiet.
            let _ = std::fs::write(path, "1");
        }
    }

    /// Reads every frame until none arrived for a while; returns them in order.
    fn recv_until_quiet(port: &mut AfPacketPort) -> Vec<Packet> {
        let mut pkts = vec![Packet::new(); 64];
        let mut got = Vec::new();
        let quiet = std::time::Duration::from_millis(300);
        while wait_readable(port.raw_fd().unwrap(), std::time::Instant::now() + quiet) {
            loop {
                let n = port.recv(&mut pkts).expect("recv");
                got.extend(pkts[..n].iter().cloned());
                if n < pkts.len() {
                    break;
                }
            }
        }
        got
    }

    /// The sequence number of a frame made by [`test_frame`] or [`numbered_super_frame`].
    fn seq_of(p: &Packet) -> Option<u32> {
        let f = p.frame();
        if is_test_frame(p) {
            return Some(u32::from_be_bytes(f[21..25].try_into().unwrap()));
        }
        // Segments of one super-frame carry its number in the top bits of their TCP sequence.
        (tcp_payload_len(p) > 0).then(|| u32::from_be_bytes(f[38..42].try_into().unwrap()) >> 20)
    }

    /// A TCP super-frame of `len` bytes whose TCP sequence number carries `seq` (the checksum
    /// is partial and leaves the sequence number out; segments add less than 2^20 to it).
    fn numbered_super_frame(seq: u32, len: usize) -> (VirtioNetHdr, Vec<u8>) {
        let (hdr, mut f) = tso4_frame(len);
        f[38..42].copy_from_slice(&(seq << 20).to_be_bytes());
        (hdr, f)
    }

    #[test]
    fn slots_hold_frames_where_the_ring_geometry_says() {
        on_a_veth(&[false], |mut a, mut b| {
            assert_eq!(b.ring_slots(), 0, "a new port has no ring");
            b.grow_ring().unwrap();
            assert_eq!(b.ring_slots(), RING_MIN_BYTES / ring::FRAME_SIZE);
            let frame = test_frame(1);
            let refs = [FrameRef {
                meta: VirtioNetHdr::NONE,
                data: &frame,
            }];
            send_all(&mut a, &refs);
            assert!(wait_readable(b.raw_fd().unwrap(), deadline(5)));
            let slot = b
                .ring
                .as_ref()
                .unwrap()
                .ready()
                .expect("a slot handed over");
            assert_eq!(slot.status & libc::TP_STATUS_COPY, 0);
            assert_eq!((slot.len, slot.snaplen), (60, 60));
            assert_eq!(slot.mac, ring::ETH_MAC_OFFSET);
            assert_eq!(slot.net, slot.mac + 14);
            let (vnet, data) = slot.contents().unwrap();
            assert_eq!(data, &frame[..]);
            assert_eq!(VirtioNetHdr::parse(vnet).unwrap().gso_size, 0);
        });
    }

    #[test]
    fn frame_after_the_ring_ran_dry_wakes_an_edge_triggered_poll() {
        on_a_veth_both_ways(|mut a, mut b| {
            // As the event loop does: edge-triggered readiness, drain until recv says 0.
            let mut poll = mio::Poll::new().unwrap();
            let fd = b.raw_fd().unwrap();
            poll.registry()
                .register(
                    &mut mio::unix::SourceFd(&fd),
                    mio::Token(0),
                    mio::Interest::READABLE,
                )
                .unwrap();
            let mut events = mio::Events::with_capacity(4);
            let mut pkts = vec![Packet::new(); 8];
            let (hdr, big) = numbered_super_frame(1000, 20000);
            for round in 0..20u32 {
                // Small frames through the ring; every other round a super-frame at the end,
                // through the copy path.
                let small = test_frame(round);
                let mut refs = vec![FrameRef {
                    meta: VirtioNetHdr::NONE,
                    data: &small,
                }];
                if round % 2 == 1 {
                    refs.push(FrameRef {
                        meta: hdr,
                        data: &big,
                    });
                }
                send_all(&mut a, &refs);
                let mut got = 0;
                let until = deadline(5);
                while got < refs.len() {
                    poll.poll(&mut events, Some(std::time::Duration::from_secs(5)))
                        .unwrap();
                    assert!(!events.is_empty(), "round {round}: no wake-up");
                    assert!(
                        std::time::Instant::now() < until,
                        "round {round}: frames missing"
                    );
                    loop {
                        let n = b.recv(&mut pkts).unwrap();
                        got += n;
                        if n == 0 {
                            break;
                        }
                    }
                }
                assert_eq!(got, refs.len(), "round {round}");
            }
        });
    }

    #[test]
    fn a_busy_port_gets_a_ring_and_loses_nothing_queued() {
        on_a_veth(&[false], |mut a, mut b| {
            let frames: Vec<Vec<u8>> = (0..1100).map(test_frame).collect();
            let refs = plain_refs(&frames);
            send_all(&mut a, &refs);
            assert!(wait_readable(b.raw_fd().unwrap(), deadline(5)));
            // A busy second read from the socket queue, 100 frames still waiting there.
            let mut pkts = vec![Packet::new(); 50];
            let mut read = Vec::new();
            while read.len() < 1000 {
                let n = b.recv(&mut pkts).unwrap();
                assert!(n > 0, "the queue ran dry after {} frames", read.len());
                read.extend(pkts[..n].iter().filter_map(seq_of));
            }
            assert_eq!(read, (0..1000).collect::<Vec<u32>>());
            assert_eq!(b.ring_slots(), 0);

            b.refresh();
            assert_eq!(b.ring_slots(), RING_MIN_BYTES / ring::FRAME_SIZE);
            // The waiting frames come first, then what arrives through the ring.
            send_all(&mut a, &refs[..5]);
            let got: Vec<u32> = recv_until_quiet(&mut b).iter().filter_map(seq_of).collect();
            let want: Vec<u32> = (1000..1100).chain(0..5).collect();
            assert_eq!(got, want);
            assert_eq!(b.take_rx_overruns(), 0);
        });
    }

    #[test]
    fn a_ring_that_overflowed_grows_and_keeps_what_it_held() {
        on_a_veth(&[true], |mut a, mut b| {
            let small = b.ring_slots();
            let frames: Vec<Vec<u8>> = (0..small as u32 * 2).map(test_frame).collect();
            let refs = plain_refs(&frames);
            // Twice what the ring holds, unread: the ring fills and the kernel drops the rest.
            send_all(&mut a, &refs);
            assert!(wait_readable(b.raw_fd().unwrap(), deadline(5)));
            // Read a few so the ring is neither empty nor full when it is replaced.
            let mut pkts = vec![Packet::new(); 3];
            assert_eq!(b.recv(&mut pkts).unwrap(), 3);
            let overruns = b.take_rx_overruns();
            assert!(overruns > 0, "the ring should have overflowed");

            // The once-a-second pass grows the ring ...
            b.refresh();
            assert_eq!(b.ring_slots(), small * 4);
            // ... and what the old ring held comes out first, in order, then new frames.
            send_all(&mut a, &refs[..5]);
            let got = recv_until_quiet(&mut b);
            let seqs: Vec<u32> = got.iter().filter_map(seq_of).collect();
            let held = small as u32 - 3;
            let want: Vec<u32> = (3..3 + held).chain(0..5).collect();
            assert_eq!(seqs, want);
            assert_eq!(got.len() as u64 + 3 + overruns, small as u64 * 2 + 5);

            // A big ring takes the whole burst.
            send_all(&mut a, &refs);
            let got = recv_until_quiet(&mut b);
            assert_eq!(got.len(), refs.len());
            assert_eq!(b.take_rx_overruns(), 0);
            assert_eq!(b.bad_frames(), 0);
        });
    }

    #[test]
    fn burst_larger_than_the_ring_is_counted_as_overruns() {
        on_a_veth(&[true], |mut a, mut b| {
            const SENT: u32 = 3000;
            let frames: Vec<Vec<u8>> = (0..SENT).map(test_frame).collect();
            let refs = plain_refs(&frames);
            // Nobody reads while they arrive: the ring fills, the kernel drops the rest.
            send_all(&mut a, &refs);

            let got = recv_until_quiet(&mut b);
            let overruns = b.take_rx_overruns();
            assert_eq!(
                got.len() as u64 + overruns,
                u64::from(SENT),
                "received {} and counted {overruns} overruns",
                got.len()
            );
            assert!(got.len() <= b.ring_slots() && overruns > 0);
            // The first frames, in order, filled the ring.
            let seqs: Vec<Option<u32>> = got.iter().map(seq_of).collect();
            let first: Vec<Option<u32>> = (0..got.len() as u32).map(Some).collect();
            assert_eq!(seqs, first);
            assert_eq!(b.bad_frames(), 0);
            assert_eq!(b.take_rx_overruns(), 0, "reading the count resets it");

            // The ring works on once drained.
            send_all(&mut a, &refs[..10]);
            let again = recv_until_quiet(&mut b);
            assert_eq!(again.iter().map(seq_of).collect::<Vec<_>>(), first[..10]);
            assert_eq!(b.take_rx_overruns(), 0);
        });
    }

    #[test]
    fn small_and_super_frames_keep_their_order() {
        on_a_veth_both_ways(|mut a, mut b| {
            // Every third frame a super-frame (through the copy path), the others small
            // (through the ring), some back to back.
            let frames: Vec<(VirtioNetHdr, Vec<u8>)> = (0..90u32)
                .map(|i| match i % 5 {
                    1 | 2 => numbered_super_frame(i, 3000 + (i as usize * 7919) % 50000),
                    _ => (VirtioNetHdr::NONE, test_frame(i)),
                })
                .collect();
            let refs = refs_of(&frames);
            send_all(&mut a, &refs);

            let got = recv_until_quiet(&mut b);
            let mut seqs: Vec<u32> = got.iter().filter_map(seq_of).collect();
            seqs.dedup();
            assert_eq!(seqs, (0..90).collect::<Vec<u32>>());
            for p in &got {
                let sent = &frames[seq_of(p).unwrap() as usize];
                if p.len == sent.1.len() {
                    // Whole, with its offload metadata.
                    assert_eq!(p.frame(), &sent.1[..]);
                    assert_eq!(p.meta.gso_size, sent.0.gso_size);
                }
            }
            assert!(
                got.iter().any(|p| p.len > ring::FRAME_SIZE),
                "no super-frame"
            );
            assert_eq!((b.bad_frames(), b.take_rx_overruns()), (0, 0));
        });
    }

    #[test]
    fn super_frames_beyond_the_receive_buffer_are_counted_as_overruns() {
        on_a_veth(&[false, true], |mut a, mut b| {
            // 300 × 60 KB is more than the receive buffer holds: the later ones find no room
            // (for their whole copy, with a ring), and are counted.
            let frames: Vec<(VirtioNetHdr, Vec<u8>)> =
                (0..300).map(|i| numbered_super_frame(i, 60000)).collect();
            let refs = refs_of(&frames);
            send_all(&mut a, &refs);

            let got = recv_until_quiet(&mut b);
            let overruns = b.take_rx_overruns();
            assert!(got.iter().all(|p| p.len == 60000), "segmented on the way");
            assert_eq!(got.len() as u64 + overruns, 300);
            assert!(overruns > 0, "the receive buffer never filled");
            let seqs: Vec<u32> = got.iter().filter_map(seq_of).collect();
            assert_eq!(seqs, (0..got.len() as u32).collect::<Vec<_>>());
            assert_eq!(b.bad_frames(), 0);
        });
    }

    #[test]
    fn missing_interface_error_names_it() {
        let err = AfPacketPort::open("nosuchif0").unwrap_err();
        assert!(err.to_string().contains("nosuchif0"), "{err}");
    }
}
