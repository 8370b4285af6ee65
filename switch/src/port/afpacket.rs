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
//! Frames move in batches with recvmmsg(2) and sendmmsg(2); the message arrays are kept between
//! calls so the hot path allocates nothing.

use super::{Capabilities, FrameRef, Packet, Port};
use crate::offload::{Offloads, VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use socket2::{Domain, Socket, Type};
use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;

/// Most frames a port moves in one call, as declared in its capabilities.
const MAX_BURST: usize = 64;
/// Most messages one recvmmsg/sendmmsg call takes (the kernel's `UIO_MAXIOV`).
const MAX_MMSG: usize = 1024;
/// Receive and send buffer size asked for: room for dozens of 64 KB super-frames.
const SOCKET_BUFFER: usize = 4 << 20;

/// A switch port on an existing interface, through an AF_PACKET socket.
pub struct AfPacketPort {
    name: String,
    ifindex: u32,
    mtu: usize,
    socket: Socket,
    batch: MsgBatch,
    bad_frames: u64,
    rejected_frames: u64,
    /// `bad_frames + rejected_frames` when the datapath last asked.
    reported: u64,
}

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
        // PACKET_VNET_HDR must be set before bind (and before any ring would be set up).
        for (opt, what) in [
            (libc::PACKET_VNET_HDR, "PACKET_VNET_HDR"),
            (libc::PACKET_IGNORE_OUTGOING, "PACKET_IGNORE_OUTGOING"),
            (libc::PACKET_QDISC_BYPASS, "PACKET_QDISC_BYPASS"),
            // The kernel takes 802.1Q tags out of the frame (VLAN offload) before packet
            // sockets see it; the auxiliary data gives them back.
            (libc::PACKET_AUXDATA, "PACKET_AUXDATA"),
        ] {
            set_int_opt(fd, libc::SOL_PACKET, opt, 1).map_err(|e| context(ifname, what, e))?;
        }
        set_buffer_sizes(&socket);

        let proto_all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto_all;
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
            return Err(context(ifname, "bind", io::Error::last_os_error()));
        }

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
            socket,
            batch: MsgBatch::default(),
            bad_frames: 0,
            rejected_frames: 0,
            reported: 0,
        })
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Frames received and dropped here: truncated (`MSG_TRUNC`) or with an unusable
    /// virtio-net header.
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames
    }

    /// Frames the kernel refused on send (`EINVAL`, `EMSGSIZE`: bad offload metadata, too big,
    /// too short); they count as taken and are dropped.
    pub fn rejected_frames(&self) -> u64 {
        self.rejected_frames
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

    fn recv(&mut self, pkts: &mut [Packet]) -> io::Result<usize> {
        let want = pkts.len().min(MAX_MMSG);
        if want == 0 {
            return Ok(0);
        }
        self.batch.reserve(want);
        let fd = self.socket.as_raw_fd();
        // Every pass consumes frames from the socket's queue, so this ends once the queue is
        // drained; a pass that keeps nothing goes round again rather than answer Ok(0) while
        // frames still wait (the datapath polls edge-triggered).
        loop {
            for (i, pkt) in pkts[..want].iter_mut().enumerate() {
                // Room is kept for a tag the kernel took out.
                let room = pkt.buf.len().saturating_sub(TAG_LEN);
                self.batch.point(i, pkt.buf.as_mut_ptr(), room);
                self.batch.want_control(i);
            }
            // SAFETY: `msgs[..want]` are initialised mmsghdrs whose iovecs point at `hdrs[i]` and
            // at `pkts[i].buf`, all alive and exclusively borrowed for the duration of the call;
            // the kernel writes at most `iov_len` bytes into each.
            let rc = unsafe {
                libc::recvmmsg(
                    fd,
                    self.batch.msgs.as_mut_ptr(),
                    want as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                )
            };
            if rc < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(0),
                    Some(libc::EINTR) => continue,
                    // The kernel could not express the frame's offload state as a virtio-net
                    // header; it consumed (dropped) that frame.
                    Some(libc::EINVAL) => {
                        self.bad_frames += 1;
                        continue;
                    }
                    // ENETDOWN (interface down or deleted) and anything else: the port failed.
                    _ => return Err(err),
                }
            }
            let got = rc as usize;
            let mut n = 0;
            for i in 0..got {
                let msg = &self.batch.msgs[i];
                let total = msg.msg_len as usize;
                let truncated = msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                let tag = self.batch.vlan_tag(i);
                match VirtioNetHdr::parse(&self.batch.hdrs[i]) {
                    Ok(meta) if !truncated && total >= VIRTIO_NET_HDR_LEN => {
                        pkts[i].meta = meta;
                        pkts[i].len = total - VIRTIO_NET_HDR_LEN;
                        if let Some(tag) = tag {
                            restore_tag(&mut pkts[i], tag);
                        }
                        // Slots before `n` hold kept frames, `n..i` dropped ones: keep order.
                        pkts.swap(n, i);
                        n += 1;
                    }
                    _ => self.bad_frames += 1,
                }
            }
            if n > 0 || got == 0 {
                return Ok(n);
            }
        }
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

/// The arrays recvmmsg/sendmmsg work on, kept between calls so a call allocates nothing once
/// they are big enough.
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
/// `tpacket_auxdata.tp_status`: the frame had a VLAN tag (in `tp_vlan_tci`).
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
/// `tpacket_auxdata.tp_status`: `tp_vlan_tpid` is valid too.
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// `struct tpacket_auxdata` (linux/if_packet.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
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
                let aux: TpacketAuxdata =
                    unsafe { ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                if aux.tp_status & TP_STATUS_VLAN_VALID == 0 {
                    return None;
                }
                let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                    aux.tp_vlan_tpid
                } else {
                    crate::wire::ethernet::TPID_8021Q
                };
                return Some((tpid, aux.tp_vlan_tci));
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
        if !root_or_skip() {
            return;
        }
        in_private_netns(|| {
            veth_pair("va", "vb");
            let mut a = AfPacketPort::open("va").unwrap();
            let mut b = AfPacketPort::open("vb").unwrap();
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
            let refs: Vec<FrameRef<'_>> = frames
                .iter()
                .map(|f| FrameRef {
                    meta: VirtioNetHdr::NONE,
                    data: f,
                })
                .collect();
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
        if !root_or_skip() {
            return;
        }
        in_private_netns(|| {
            veth_pair("va", "vb");
            let mut a = AfPacketPort::open("va").unwrap();
            let mut b = AfPacketPort::open("vb").unwrap();
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
        if !root_or_skip() {
            return;
        }
        in_private_netns(|| {
            veth_pair("va", "vb");
            let mut a = AfPacketPort::open("va").unwrap();
            ip(&["link", "del", "va"]);
            assert!(!interface_exists("va"));

            // The socket reports ENETDOWN once, waking poll with POLLERR.
            let until = deadline(5);
            let mut pkts = vec![Packet::new(); 4];
            let err = loop {
                match a.recv(&mut pkts) {
                    Err(e) => break e,
                    Ok(_) => assert!(wait_readable(a.raw_fd().unwrap(), until), "no error"),
                }
            };
            assert_eq!(err.raw_os_error(), Some(libc::ENETDOWN), "{err}");

            let frame = test_frame(0);
            let err = a
                .send(&[FrameRef {
                    meta: VirtioNetHdr::NONE,
                    data: &frame,
                }])
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENXIO), "{err}");
        });
    }

    #[test]
    fn missing_interface_error_names_it() {
        let err = AfPacketPort::open("nosuchif0").unwrap_err();
        assert!(err.to_string().contains("nosuchif0"), "{err}");
    }
}
