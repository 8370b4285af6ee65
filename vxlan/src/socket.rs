//! The VTEP's I/O: UDP sockets that carry VXLAN datagrams (RFC 7348 § 5) over IPv4, in batches.
//!
//! ## Receiving
//!
//! One non-blocking socket bound to the VTEP's address (e.g. `0.0.0.0:4789`).
//! [`VtepSocket::recv_batch`] reads many datagrams per syscall with recvmmsg(2) into a reusable
//! [`RecvBatch`].
//! UDP GRO is on (`UDP_GRO`, udp(7)): the kernel may hand over several datagrams of one sender,
//! all of one size but the last, as one buffer, with a `UDP_GRO` control message giving that
//! size; [`RecvBatch::datagrams`] splits such buffers back into datagrams. What arrives is not
//! trusted here: the sender's address goes with every datagram, and `Vtep::decap` refuses those
//! not from a peer.
//!
//! ## Sending, and per-flow source ports
//!
//! RFC 7348 § 5 recommends a source port hashed from the inner flow, so the underlay's ECMP and
//! the receivers' RSS spread flows while each flow keeps its order. A socket sends from the port
//! it is bound to, so per-flow ports need one socket per port. We keep a small pool:
//! [`SOURCE_PORT_BUCKETS`] (64) buckets, bucket `b` bound lazily, on first use, to the fixed port
//! [`bucket_port`]`(b)` = 61440 + 64·b on the VTEP's address. These ports are in the RFC's
//! 49152–65535 range and above Linux's default ephemeral range (32768–60999), so they rarely
//! collide with connections of the host. The caller picks the bucket from the inner flow:
//! [`bucket_of`]`(vxlan::source_port(inner))`. If a bucket's port cannot be bound (in use), that
//! bucket sends from the main socket instead: still correct, just less spread.
//!
//! Pool sockets set neither `SO_REUSEADDR` nor `SO_REUSEPORT`: they would let us join another
//! program's socket on that port and take part of its traffic. UDP leaves no TIME_WAIT, so a
//! restarted daemon binds its ports again without them. Pool sockets only send; their receive
//! buffer is kept at the minimum.
//!
//! Every socket sets the DF bit (`IP_MTU_DISCOVER` = `IP_PMTUDISC_DO`): VTEPs "MUST NOT fragment
//! VXLAN packets" (RFC 7348 § 4.3), so the kernel refuses a datagram too big for the path MTU
//! (`EMSGSIZE`) instead of fragmenting it, and it is counted in [`SendOutcome::too_big`].
//!
//! - [`VtepSocket::send_batch`] and [`VtepSocket::send_to_peers`] send many datagrams, to one
//!   or many peers (head-end replication), with sendmmsg(2): one syscall per run of datagrams
//!   of one bucket.
//! - [`VtepSocket::send_segmented`] sends many equal-size datagrams to one peer with UDP
//!   segmentation offload (`UDP_SEGMENT`, a control message with the segment size): the
//!   segments of a TCP super-frame, each behind its VXLAN header (see [`crate::encap_segments`]),
//!   leave in one gathering syscall per 64 segments.
//!
//! ## UDP checksum
//!
//! RFC 7348 § 5 says the outer UDP checksum "SHOULD be transmitted as zero", and allows a
//! correct non-zero one. The kernel computes it on send (or offloads it to the NIC), which is
//! allowed and protects the inner frame. On receive, the kernel accepts datagrams with a zero
//! checksum over IPv4 as RFC 768 and RFC 7348 § 5 require, so there is nothing to do here.

use crate::encap::Datagrams;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use switch::port::sockopt::{self, set_int_opt};
use switch::port::Tally;
use switch::wire::ethernet;

/// Number of send sockets (source ports) in the pool.
pub const SOURCE_PORT_BUCKETS: usize = 64;
/// Port of bucket 0; bucket `b` sends from `BUCKET_PORT_BASE + 64 * b` (61440–65472).
pub const BUCKET_PORT_BASE: u16 = 61440;
/// Distance between the ports of two buckets.
const BUCKET_PORT_STEP: u16 = 64;
/// Receive buffer per message: the largest UDP payload, or a GRO batch of datagrams.
const RECV_BUF_LEN: usize = 65536;
/// Largest UDP payload over IPv4: 65535 minus the IPv4 (20) and UDP (8) headers.
const MAX_UDP_PAYLOAD: usize = 65535 - 20 - 8;
/// Most segments one `UDP_SEGMENT` send may carry (the kernel's `UDP_MAX_SEGMENTS` on older
/// kernels; newer ones take 128).
const MAX_GSO_SEGMENTS: usize = 64;
/// Most messages one recvmmsg/sendmmsg call takes (the kernel's `UIO_MAXIOV`).
const MAX_MMSG: usize = 1024;
/// Receive and send buffer sizes asked for on the main socket.
const SOCKET_BUFFER: usize = 4 << 20;
/// Control buffer per received message, in 8-byte words: room for a `UDP_GRO` message.
const CONTROL_WORDS: usize = 8;

/// The most datagrams of `len` bytes one `UDP_SEGMENT` send carries: as many as fit the largest
/// UDP payload, at most [`MAX_GSO_SEGMENTS`], at least one.
pub fn datagrams_per_send(len: usize) -> usize {
    (MAX_UDP_PAYLOAD / len.max(1)).clamp(1, MAX_GSO_SEGMENTS)
}

/// The largest TCP super-frame, in segments, worth sending into an overlay whose inner MTU is
/// `inner_mtu`: the segments of one `UDP_SEGMENT` send. A super-frame that size leaves in one
/// system call, crosses the underlay as one GSO packet and arrives as one GRO batch, so the
/// receiving VTEP rebuilds it whole. One segment more (a 64 KB super-frame is 47 at MTU 1450,
/// against 44 per send) costs a second send, a second trip through both stacks, and a split
/// super-frame on the far side. Sandboxes on overlay networks get it as their interface's
/// `gso_max_segs`, as a NIC advertises its TSO limit.
pub fn segments_per_send(inner_mtu: usize) -> usize {
    datagrams_per_send(crate::HEADER_LEN + ethernet::HEADER_LEN + inner_mtu)
}

/// The pool bucket of a source port (as [`crate::source_port`] computes it).
pub fn bucket_of(source_port: u16) -> usize {
    usize::from(source_port) % SOURCE_PORT_BUCKETS
}

/// The source port bucket `bucket` sends from (when it could be bound).
pub fn bucket_port(bucket: usize) -> u16 {
    BUCKET_PORT_BASE + (bucket % SOURCE_PORT_BUCKETS) as u16 * BUCKET_PORT_STEP
}

/// One datagram to send: where to, from which source port bucket, and the UDP payload.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// The peer's address and port.
    pub to: SocketAddr,
    /// The source port bucket (see [`bucket_of`]).
    pub bucket: usize,
    /// The UDP payload: VXLAN header and inner frame.
    pub data: &'a [u8],
}

/// A datagram laid out in a caller's buffer, for [`VtepSocket::send_queued`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The peer's address and port.
    pub to: SocketAddr,
    /// The source port bucket (see [`bucket_of`]).
    pub bucket: usize,
    /// Where its UDP payload (VXLAN header and inner frame) lies in the buffer.
    pub range: std::ops::Range<usize>,
}

/// What a send did with each datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOutcome {
    /// Taken by the kernel.
    pub sent: usize,
    /// Refused as bigger than the path MTU allows (DF set): count `TooBigForOverlay`.
    pub too_big: usize,
    /// Not sent because the socket buffer was full: count `QueueFull`.
    pub queue_full: usize,
    /// Refused for another reason (no route, an IPv6 destination, ...).
    pub failed: usize,
}

impl SendOutcome {
    /// Datagrams not sent, whatever the reason.
    pub fn dropped(&self) -> usize {
        self.too_big + self.queue_full + self.failed
    }
}

/// One message as received: its sender, its length, and the GRO segment size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The sender's address and port.
    pub from: SocketAddrV4,
    /// Bytes in the message (several datagrams when coalesced by GRO).
    pub len: usize,
    /// Size of each coalesced datagram but the last; 0 when the message is one datagram.
    pub segment_size: usize,
    /// Which buffer of the batch holds it.
    slot: usize,
}

/// Buffers and message arrays for [`VtepSocket::recv_batch`], reused from call to call.
pub struct RecvBatch {
    /// Messages the next receive asks for (at most `bufs.len()`).
    limit: usize,
    bufs: Vec<Box<[u8]>>,
    received: Vec<Received>,
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    controls: Vec<[u64; CONTROL_WORDS]>,
}

// SAFETY: the raw pointers in `msgs` and `iovs` point into the batch's own arrays and buffers.
// They are rewritten at the start of every recv_batch call, read by the kernel within that call,
// and never dereferenced afterwards. Nothing is shared, so moving the batch to another thread
// is sound.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Room for `messages` messages (1 to 1024) of up to 64 KB each.
    pub fn new(messages: usize) -> RecvBatch {
        RecvBatch::with_buffers(messages, RECV_BUF_LEN)
    }

    /// A batch of `messages` buffers of `buf_len` bytes each (tests make them small, to see a
    /// datagram cut short).
    pub(crate) fn with_buffers(messages: usize, buf_len: usize) -> RecvBatch {
        let n = messages.clamp(1, MAX_MMSG);
        let empty = libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        };
        RecvBatch {
            limit: n,
            bufs: (0..n)
                .map(|_| vec![0u8; buf_len].into_boxed_slice())
                .collect(),
            received: Vec::with_capacity(n),
            // SAFETY: mmsghdr and sockaddr_in are plain old data; all-zero is a valid value.
            msgs: (0..n).map(|_| unsafe { mem::zeroed() }).collect(),
            iovs: vec![empty; n],
            // SAFETY: sockaddr_in is plain old data (integers and a byte array); all-zero is a
            // valid value (family AF_UNSPEC until the kernel writes the sender).
            addrs: (0..n).map(|_| unsafe { mem::zeroed() }).collect(),
            controls: vec![[0; CONTROL_WORDS]; n],
        }
    }

    /// Messages the next receive asks for.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Asks the next receives for at most `messages` messages (1 to the capacity): a caller
    /// that gets 64 KB coalesced messages reads fewer at a time to keep them in cache.
    pub fn set_limit(&mut self, messages: usize) {
        self.limit = messages.clamp(1, self.bufs.len());
    }

    /// The messages of the last receive.
    pub fn received(&self) -> &[Received] {
        &self.received
    }

    /// The bytes of one received message (all its datagrams when coalesced).
    pub fn message(&self, r: &Received) -> &[u8] {
        &self.bufs[r.slot][..r.len]
    }

    /// Every datagram of the last receive with its sender, GRO batches split back into
    /// datagrams.
    pub fn datagrams(&self) -> impl Iterator<Item = (IpAddr, &[u8])> + '_ {
        self.received.iter().flat_map(move |r| {
            let from = IpAddr::V4(*r.from.ip());
            split_gro(self.message(r), r.segment_size).map(move |d| (from, d))
        })
    }

    /// Points every message at its buffer, address and control slots.
    fn prepare(&mut self) {
        for i in 0..self.bufs.len() {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            };
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
            hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            hdr.msg_controllen = mem::size_of::<[u64; CONTROL_WORDS]>() as _;
            hdr.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
    }
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.bufs.len())
            .field("received", &self.received)
            .finish()
    }
}

/// Splits a received buffer into the datagrams GRO coalesced: `segment_size` bytes each, the
/// last possibly shorter. A size of 0 (no GRO) or an empty buffer is one datagram.
fn split_gro(bytes: &[u8], segment_size: usize) -> impl Iterator<Item = &[u8]> {
    let size = if segment_size == 0 {
        bytes.len()
    } else {
        segment_size
    };
    // chunks() yields nothing for an empty slice, but an empty datagram is still a datagram
    // (the VTEP refuses it as truncated, and counts it).
    let empty = bytes.is_empty().then_some(bytes);
    bytes.chunks(size.max(1)).chain(empty)
}

/// A source port bucket's socket.
#[derive(Debug)]
enum Sender {
    /// Not used yet.
    Untried,
    /// Bound to the bucket's port.
    Bound(Socket),
    /// The port could not be bound: the bucket sends from the main socket.
    Unavailable,
}

/// The message arrays for sendmmsg, filled per call.
#[derive(Default)]
struct SendArrays {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
}

// SAFETY: the raw pointers in `msgs` point into `iovs`, `addrs` and the caller's datagrams; they
// are written by `finish` right before a sendmmsg call, read by the kernel within it, and never
// dereferenced afterwards. Nothing is shared, so moving the arrays to another thread is sound.
unsafe impl Send for SendArrays {}

impl SendArrays {
    fn clear(&mut self) {
        self.msgs.clear();
        self.iovs.clear();
        self.addrs.clear();
    }

    /// Queues one datagram; pointers are only taken in `finish`, once the arrays stop growing.
    fn push(&mut self, to: SocketAddrV4, data: &[u8]) {
        self.addrs.push(sockaddr_from(to));
        self.iovs.push(libc::iovec {
            // The kernel only reads from a send buffer; the cast to *mut is for iovec's sake.
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        });
    }

    /// Builds one mmsghdr per queued datagram.
    fn finish(&mut self) -> &mut [libc::mmsghdr] {
        self.msgs.clear();
        for i in 0..self.iovs.len() {
            // SAFETY: mmsghdr is plain old data; all-zero (null pointers, zero lengths) is valid.
            let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
            m.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
            m.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &mut self.iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            self.msgs.push(m);
        }
        &mut self.msgs
    }
}

/// The VTEP's sockets: the main one (bound to the VTEP address, receives, and sends for
/// buckets without a port) and the source port pool.
pub struct VtepSocket {
    socket: Socket,
    local: SocketAddrV4,
    gro: bool,
    senders: Vec<Sender>,
    send: SendArrays,
    recv_truncated: Tally,
}

impl VtepSocket {
    /// Binds the main socket to `addr` (e.g. `0.0.0.0:4789`; port 0 picks one), non-blocking,
    /// with DF set and UDP GRO on when the kernel has it (Linux 5.0+).
    pub fn bind(addr: SocketAddrV4) -> io::Result<VtepSocket> {
        let socket = udp_socket().map_err(|e| context(addr, "socket(AF_INET, SOCK_DGRAM)", e))?;
        // Buffers: forced past net.core.{r,w}mem_max when we may (CAP_NET_ADMIN), else a wish
        // the kernel caps. A burst of small datagrams must not overflow a 208 KB default.
        sockopt::set_buffer_sizes(&socket, SOCKET_BUFFER);
        let gro = set_int_opt(socket.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        socket
            .bind(&SockAddr::from(addr))
            .map_err(|e| context(addr, "bind", e))?;
        let local = match socket.local_addr()?.as_socket() {
            Some(SocketAddr::V4(a)) => a,
            _ => addr,
        };
        tracing::debug!(%local, gro, "VTEP socket bound");
        Ok(VtepSocket {
            socket,
            local,
            gro,
            senders: (0..SOURCE_PORT_BUCKETS).map(|_| Sender::Untried).collect(),
            send: SendArrays::default(),
            recv_truncated: Tally::default(),
        })
    }

    /// The address the main socket is bound to (with the port the kernel picked, if 0).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// True when UDP GRO is on: received messages may hold several datagrams.
    pub fn gro_enabled(&self) -> bool {
        self.gro
    }

    /// Messages dropped because they did not fit a receive buffer (never expected).
    pub fn recv_truncated(&self) -> u64 {
        self.recv_truncated.total()
    }

    /// Messages dropped as truncated since the last call (for the drop counters).
    pub fn take_recv_truncated(&mut self) -> u64 {
        self.recv_truncated.take_new()
    }

    /// The source port datagrams of `bucket` leave from (binds the bucket's socket if needed).
    pub fn source_port(&mut self, bucket: usize) -> u16 {
        self.sender_fd(bucket);
        match self.senders[bucket_of_index(bucket)] {
            Sender::Bound(_) => bucket_port(bucket),
            _ => self.local.port(),
        }
    }

    /// Reads up to a batch of messages (one recvmmsg); returns how many were read, 0 when none
    /// was waiting. Their datagrams are then in [`RecvBatch::datagrams`].
    pub fn recv_batch(&mut self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.received.clear();
        batch.prepare();
        let n = batch.limit;
        let got = loop {
            // SAFETY: `batch.msgs[..n]` are mmsghdrs that `prepare` pointed at the batch's own
            // buffers, addresses and control slots, all alive and exclusively borrowed for the
            // call; the kernel writes at most the lengths given.
            let rc = unsafe {
                libc::recvmmsg(
                    self.socket.as_raw_fd(),
                    batch.msgs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(0),
                _ => return Err(err),
            }
        };
        for slot in 0..got {
            let msg = &batch.msgs[slot];
            if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.recv_truncated.add();
                continue;
            }
            batch.received.push(Received {
                from: sockaddr_to(&batch.addrs[slot]),
                len: msg.msg_len as usize,
                segment_size: gro_segment_size(&msg.msg_hdr).unwrap_or(0),
                slot,
            });
        }
        Ok(got)
    }

    /// Sends datagrams in order with sendmmsg, one call per run of datagrams of one bucket.
    pub fn send_batch(&mut self, datagrams: &[Datagram<'_>]) -> SendOutcome {
        self.send_runs(datagrams, |d| d.bucket, |d| (d.to, d.data))
    }

    /// [`VtepSocket::send_batch`] for datagrams laid out in one buffer: each [`Queued`] names
    /// its bytes in `buf` (so a caller can keep its list from call to call).
    pub fn send_queued(&mut self, buf: &[u8], queued: &[Queued]) -> SendOutcome {
        self.send_runs(queued, |q| q.bucket, |q| (q.to, &buf[q.range.clone()]))
    }

    /// Sends `items` in order, one sendmmsg per run of one bucket (and per `MAX_MMSG`).
    fn send_runs<'b, T>(
        &mut self,
        items: &'b [T],
        bucket: impl Fn(&T) -> usize,
        datagram: impl Fn(&'b T) -> (SocketAddr, &'b [u8]),
    ) -> SendOutcome {
        let mut outcome = SendOutcome::default();
        let same_bucket = |a: &T, b: &T| bucket_of_index(bucket(a)) == bucket_of_index(bucket(b));
        for run in items.chunk_by(same_bucket) {
            let fd = self.sender_fd(bucket(&run[0]));
            for chunk in run.chunks(MAX_MMSG) {
                self.send.clear();
                for item in chunk {
                    match datagram(item) {
                        (SocketAddr::V4(to), data) => self.send.push(to, data),
                        (SocketAddr::V6(_), _) => outcome.failed += 1,
                    }
                }
                send_all(fd, self.send.finish(), &mut outcome);
            }
        }
        outcome
    }

    /// Sends one datagram to each peer at `port` (head-end replication) with sendmmsg.
    pub fn send_to_peers(
        &mut self,
        peers: &[IpAddr],
        port: u16,
        bucket: usize,
        datagram: &[u8],
    ) -> SendOutcome {
        let mut outcome = SendOutcome::default();
        let fd = self.sender_fd(bucket);
        for chunk in peers.chunks(MAX_MMSG) {
            self.send.clear();
            for peer in chunk {
                match peer.to_canonical() {
                    IpAddr::V4(ip) => self.send.push(SocketAddrV4::new(ip, port), datagram),
                    IpAddr::V6(_) => outcome.failed += 1,
                }
            }
            send_all(fd, self.send.finish(), &mut outcome);
        }
        outcome
    }

    /// Sends `datagrams` (all `seg_size` bytes but the last) to one peer with UDP segmentation
    /// offload: one gathering sendmsg (an iovec per head and per tail) per 64 datagrams (and
    /// 64 KB), so the payloads are copied once, by the kernel.
    ///
    /// The kernel refuses a segment bigger than the path MTU allows with `EINVAL` (with DF
    /// set): those datagrams are counted as [`SendOutcome::too_big`].
    pub fn send_segmented(
        &mut self,
        to: SocketAddr,
        bucket: usize,
        datagrams: &Datagrams<'_>,
    ) -> SendOutcome {
        let mut outcome = SendOutcome::default();
        let seg = usize::from(datagrams.seg_size);
        let total = datagrams.count;
        if total == 0 {
            return outcome;
        }
        if seg == 0 {
            // Not a layout UDP_SEGMENT can send.
            outcome.failed = 1;
            return outcome;
        }
        let SocketAddr::V4(to) = to else {
            outcome.failed = total;
            return outcome;
        };
        let fd = self.sender_fd(bucket);
        let per_call = datagrams_per_send(seg);
        let empty = libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        };
        let mut iov = [empty; 2 * MAX_GSO_SEGMENTS];
        for first in (0..total).step_by(per_call) {
            let n = per_call.min(total - first);
            let mut parts = 0;
            for i in first..first + n {
                let (head, tail) = datagrams.get(i);
                for part in [head, tail] {
                    if !part.is_empty() {
                        // The kernel only reads from a send buffer; *mut is for iovec's sake.
                        iov[parts] = libc::iovec {
                            iov_base: part.as_ptr().cast_mut().cast(),
                            iov_len: part.len(),
                        };
                        parts += 1;
                    }
                }
            }
            match send_gso(fd, to, &iov[..parts], datagrams.seg_size) {
                Ok(()) => outcome.sent += n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                        // This call's datagrams and every one after them.
                        outcome.queue_full += total - first;
                        return outcome;
                    }
                    Some(libc::EMSGSIZE) | Some(libc::EINVAL) => outcome.too_big += n,
                    _ => {
                        tracing::debug!(%to, error = %e, "VXLAN segmented send failed");
                        outcome.failed += n;
                    }
                },
            }
        }
        outcome
    }

    /// The descriptor datagrams of `bucket` are sent from, binding the bucket on first use.
    fn sender_fd(&mut self, bucket: usize) -> RawFd {
        let b = bucket_of_index(bucket);
        if let Sender::Untried = self.senders[b] {
            let addr = SocketAddrV4::new(*self.local.ip(), bucket_port(b));
            self.senders[b] = match bind_sender(addr) {
                Ok(s) => Sender::Bound(s),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "source port unavailable, using the main socket");
                    Sender::Unavailable
                }
            };
        }
        match &self.senders[b] {
            Sender::Bound(s) => s.as_raw_fd(),
            _ => self.socket.as_raw_fd(),
        }
    }
}

impl AsRawFd for VtepSocket {
    /// The main socket: poll it for readability.
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl std::fmt::Debug for VtepSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bound = self
            .senders
            .iter()
            .filter(|s| matches!(s, Sender::Bound(_)))
            .count();
        f.debug_struct("VtepSocket")
            .field("local", &self.local)
            .field("gro", &self.gro)
            .field("source_ports_bound", &bound)
            .finish()
    }
}

/// A bucket index in range (callers may pass any number).
fn bucket_of_index(bucket: usize) -> usize {
    bucket % SOURCE_PORT_BUCKETS
}

/// A non-blocking IPv4 UDP socket with DF set.
fn udp_socket() -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::IPV4,
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    set_int_opt(
        socket.as_raw_fd(),
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DO,
    )?;
    Ok(socket)
}

/// A send-only pool socket bound to `addr`.
fn bind_sender(addr: SocketAddrV4) -> io::Result<Socket> {
    let socket = udp_socket()?;
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    // Nothing is read from it: the kernel's minimum receive buffer is enough.
    let _ = socket.set_recv_buffer_size(0);
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket)
}

/// Sends every prepared message with sendmmsg, counting what happens to each.
fn send_all(fd: RawFd, msgs: &mut [libc::mmsghdr], outcome: &mut SendOutcome) {
    let mut off = 0;
    while off < msgs.len() {
        // SAFETY: `msgs[off..]` are mmsghdrs built by `SendArrays::finish`, pointing at its
        // addresses and iovecs and at the caller's datagrams, all alive for the call; the kernel
        // only reads them.
        let rc = unsafe {
            libc::sendmmsg(
                fd,
                msgs[off..].as_mut_ptr(),
                (msgs.len() - off) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if rc > 0 {
            // A short count: the next call says why the next datagram was not sent.
            off += rc as usize;
            outcome.sent += rc as usize;
            continue;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                outcome.queue_full += msgs.len() - off;
                return;
            }
            // Bigger than the path MTU with DF set: this datagram is refused, the rest go on.
            Some(libc::EMSGSIZE) => outcome.too_big += 1,
            _ => {
                tracing::debug!(error = %err, "VXLAN datagram not sent");
                outcome.failed += 1;
            }
        }
        off += 1;
    }
}

/// One sendmsg with a `UDP_SEGMENT` control message: the kernel cuts `data` into datagrams of
/// `seg_size` bytes.
fn send_gso(fd: RawFd, to: SocketAddrV4, iov: &[libc::iovec], seg_size: u16) -> io::Result<()> {
    let mut addr = sockaddr_from(to);
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: msghdr is plain old data; all-zero (null pointers, zero lengths) is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // The kernel only reads the iovecs; *mut is for msghdr's sake.
    msg.msg_iov = iov.as_ptr().cast_mut();
    msg.msg_iovlen = iov.len() as _;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as _;
    // SAFETY: `msg_control` points at `control`, 8-aligned and larger than CMSG_SPACE(2), so
    // CMSG_FIRSTHDR returns a pointer to its start, with room for the header and a u16.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), seg_size);
    }
    loop {
        // SAFETY: `msg` points at `addr`, the iovecs (at the caller's borrowed buffers) and
        // `control`, all alive for the call; the kernel only reads them.
        let rc = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
        if rc >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// The segment size of a `UDP_GRO` control message, if the kernel coalesced the message.
fn gro_segment_size(hdr: &libc::msghdr) -> Option<usize> {
    // SAFETY: after recvmmsg, `msg_control` and `msg_controllen` describe the part of our control
    // slot the kernel filled; the CMSG_* macros stay within it, and the data is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_UDP && c.cmsg_type == libc::UDP_GRO {
                let data = libc::CMSG_DATA(cmsg);
                let len = c.cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                // The kernel writes an int; accept a u16 too.
                let size = if len >= 4 {
                    ptr::read_unaligned(data.cast::<i32>()) as usize
                } else if len >= 2 {
                    usize::from(ptr::read_unaligned(data.cast::<u16>()))
                } else {
                    0
                };
                return (size > 0).then_some(size);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

fn sockaddr_from(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn sockaddr_to(s: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)),
        u16::from_be(s.sin_port),
    )
}

/// Wraps an error with the VTEP address and the step that failed.
fn context(addr: SocketAddrV4, what: &str, err: io::Error) -> io::Error {
    sockopt::context(format_args!("VTEP socket {addr}"), what, err, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encap_into, Error, Vtep, VtepConfig};
    use std::time::{Duration, Instant as StdInstant};
    use switch::{Instant, MacAddr};

    fn loopback(ip: [u8; 4]) -> VtepSocket {
        VtepSocket::bind(SocketAddrV4::new(Ipv4Addr::from(ip), 0)).unwrap()
    }

    /// Waits up to 2 s for the socket to be readable.
    fn wait_readable(s: &VtepSocket) -> bool {
        let mut pfd = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 2000) > 0 }
    }

    /// Receives until `want` datagrams arrived (or 5 s passed): (sender, bytes) of each, and
    /// the number of messages they came in.
    fn recv_all(s: &mut VtepSocket, want: usize) -> (Vec<(SocketAddrV4, Vec<u8>)>, usize) {
        let mut batch = RecvBatch::new(32);
        let mut got = Vec::new();
        let mut messages = 0;
        let deadline = StdInstant::now() + Duration::from_secs(5);
        while got.len() < want && StdInstant::now() < deadline {
            if s.recv_batch(&mut batch).unwrap() == 0 {
                wait_readable(s);
                continue;
            }
            messages += batch.received().len();
            for r in batch.received() {
                for d in split_gro(batch.message(r), r.segment_size) {
                    got.push((r.from, d.to_vec()));
                }
            }
        }
        (got, messages)
    }

    /// Datagram `i`: a VXLAN header and a frame whose bytes say `i`.
    fn numbered(i: usize, len: usize) -> Vec<u8> {
        let mut d = Vec::new();
        let frame: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
        encap_into(&mut d, 42, &frame);
        d
    }

    #[test]
    fn split_gro_gives_back_the_datagrams() {
        let bytes: Vec<u8> = (0..10).collect();
        let parts: Vec<&[u8]> = split_gro(&bytes, 4).collect();
        assert_eq!(parts, [&bytes[0..4], &bytes[4..8], &bytes[8..10]]);
        assert_eq!(split_gro(&bytes, 5).count(), 2);
        assert_eq!(split_gro(&bytes, 0).collect::<Vec<_>>(), [&bytes[..]]);
        assert_eq!(split_gro(&bytes, 100).collect::<Vec<_>>(), [&bytes[..]]);
        assert_eq!(split_gro(&[], 0).collect::<Vec<_>>(), [&[][..]]);
    }

    #[test]
    fn buckets_map_into_the_rfc_range() {
        assert_eq!(bucket_port(0), 61440);
        assert_eq!(bucket_port(63), 65472);
        assert_eq!(bucket_port(64), 61440);
        assert_eq!(bucket_of(49152 + 65), 1);
    }

    #[test]
    fn queued_datagrams_leave_from_one_buffer() {
        let mut rx = loopback([127, 0, 0, 1]);
        let mut tx = loopback([127, 0, 0, 1]);
        let to = SocketAddr::V4(rx.local_addr());
        let payloads: Vec<Vec<u8>> = (0..3).map(|i| numbered(i, 70 + i)).collect();
        let buf = payloads.concat();
        let mut queued = Vec::new();
        let mut start = 0;
        for p in &payloads {
            queued.push(Queued {
                to,
                bucket: 7,
                range: start..start + p.len(),
            });
            start += p.len();
        }
        let outcome = tx.send_queued(&buf, &queued);
        assert_eq!(outcome.sent, 3, "{outcome:?}");
        let (got, _) = recv_all(&mut rx, 3);
        let mut got: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
        got.sort();
        assert_eq!(got, payloads);
    }

    #[test]
    fn sendmmsg_100_datagrams_and_receive_them_all() {
        let mut rx = loopback([127, 0, 0, 1]);
        let mut tx = loopback([127, 0, 0, 1]);
        let to = SocketAddr::V4(rx.local_addr());
        let payloads: Vec<Vec<u8>> = (0..100).map(|i| numbered(i, 60 + i)).collect();
        // Two buckets, interleaved in runs: two sendmmsg calls or more.
        let datagrams: Vec<Datagram> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| Datagram {
                to,
                bucket: i / 50,
                data: p,
            })
            .collect();
        let outcome = tx.send_batch(&datagrams);
        assert_eq!(
            outcome,
            SendOutcome {
                sent: 100,
                ..SendOutcome::default()
            }
        );
        let (got, _) = recv_all(&mut rx, 100);
        assert_eq!(got.len(), 100);
        let mut got_bytes: Vec<Vec<u8>> = got.iter().map(|(_, d)| d.clone()).collect();
        got_bytes.sort();
        let mut want = payloads.clone();
        want.sort();
        assert_eq!(got_bytes, want);
        // Each came from its bucket's source port.
        let (port0, port1) = (tx.source_port(0), tx.source_port(1));
        for (from, d) in &got {
            let i = payloads.iter().position(|p| p == d).unwrap();
            assert_eq!(from.port(), if i < 50 { port0 } else { port1 });
            assert_eq!(*from.ip(), Ipv4Addr::LOCALHOST);
        }
    }

    #[test]
    fn send_to_peers_replicates() {
        // Two peers on one port, as real VTEPs are: 127.0.0.1:P and 127.0.0.2:P.
        let (mut rx1, mut rx2) = (0..20)
            .find_map(|_| {
                let rx1 = loopback([127, 0, 0, 1]);
                let port = rx1.local_addr().port();
                let rx2 = VtepSocket::bind(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), port));
                rx2.ok().map(|rx2| (rx1, rx2))
            })
            .expect("a port free on both 127.0.0.1 and 127.0.0.2");
        let port = rx1.local_addr().port();
        let mut tx = loopback([127, 0, 0, 1]);
        let d = numbered(1, 100);
        let peers = [rx1.local_addr().ip(), rx2.local_addr().ip()].map(|ip| IpAddr::V4(*ip));
        let outcome = tx.send_to_peers(&peers, port, 3, &d);
        assert_eq!(outcome.sent, 2, "{outcome:?}");
        for rx in [&mut rx1, &mut rx2] {
            let (got, _) = recv_all(rx, 1);
            assert_eq!(
                got,
                [(
                    SocketAddrV4::new(Ipv4Addr::LOCALHOST, tx.source_port(3)),
                    d.clone()
                )]
            );
        }
        let v6 = ["::1".parse().unwrap()];
        assert_eq!(tx.send_to_peers(&v6, 4789, 3, &d).failed, 1);
    }

    /// 40 equal datagrams in one UDP_SEGMENT send: 40 datagrams come out, byte for byte, whether
    /// GRO hands them over coalesced or not.
    #[test]
    fn udp_segment_40_datagrams_are_split_back() {
        let mut rx = loopback([127, 0, 0, 1]);
        let mut tx = loopback([127, 0, 0, 1]);
        let to = SocketAddr::V4(rx.local_addr());
        let seg = 1000;
        let payloads: Vec<Vec<u8>> = (0..40).map(|i| numbered(i, seg - 8)).collect();
        let all = payloads.concat();
        let outcome = tx.send_segmented(to, 5, &Datagrams::contiguous(&all, seg as u16));
        assert_eq!(outcome.sent, 40, "{outcome:?}");
        let (got, messages) = recv_all(&mut rx, 40);
        let got: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
        assert_eq!(got, payloads);
        if rx.gro_enabled() {
            assert!(messages < 40, "GRO on, yet {messages} messages");
        }
    }

    /// More than one UDP_SEGMENT call's worth (64 segments, 64 KB), with a shorter last one.
    #[test]
    fn udp_segment_splits_large_sends() {
        let mut rx = loopback([127, 0, 0, 1]);
        let mut tx = loopback([127, 0, 0, 1]);
        let to = SocketAddr::V4(rx.local_addr());
        let seg = 1400;
        let mut payloads: Vec<Vec<u8>> = (0..99).map(|i| numbered(i, seg - 8)).collect();
        payloads.push(numbered(99, 100));
        let all = payloads.concat();
        let outcome = tx.send_segmented(to, 6, &Datagrams::contiguous(&all, seg as u16));
        assert_eq!(outcome.sent, 100, "{outcome:?}");
        let (got, _) = recv_all(&mut rx, 100);
        let got: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
        assert_eq!(got, payloads);
    }

    #[test]
    fn segments_per_send_fill_one_udp_payload() {
        // VXLAN header 8, inner Ethernet 14, then the inner MTU.
        assert_eq!(segments_per_send(1450), 44);
        assert_eq!(segments_per_send(1500), 43);
        assert_eq!(segments_per_send(8950), 7);
        assert_eq!(segments_per_send(68), MAX_GSO_SEGMENTS, "the kernel's cap");
        assert_eq!(datagrams_per_send(0), MAX_GSO_SEGMENTS);
        assert_eq!(datagrams_per_send(MAX_UDP_PAYLOAD + 1), 1, "at least one");
        for mtu in 68..=9000 {
            let (n, len) = (segments_per_send(mtu), 22 + mtu);
            assert!(n * len <= MAX_UDP_PAYLOAD, "{n} x {len} overflows");
            assert!(
                n == MAX_GSO_SEGMENTS || (n + 1) * len > MAX_UDP_PAYLOAD,
                "{n} x {len}: one more fits"
            );
        }
    }

    /// A super-frame of `segments_per_send` full-size segments leaves in one send and arrives
    /// as one GRO batch; one segment more takes two of each.
    #[test]
    fn a_super_frame_of_segments_per_send_arrives_in_one_batch() {
        let mut rx = loopback([127, 0, 0, 1]);
        let mut tx = loopback([127, 0, 0, 1]);
        let to = SocketAddr::V4(rx.local_addr());
        let seg = 8 + 14 + 1450;
        let per_send = segments_per_send(1450);
        for (count, batches) in [(per_send, 1), (per_send + 1, 2)] {
            let payloads: Vec<Vec<u8>> = (0..count).map(|i| numbered(i, seg - 8)).collect();
            let all = payloads.concat();
            let outcome = tx.send_segmented(to, 7, &Datagrams::contiguous(&all, seg as u16));
            assert_eq!(outcome.sent, count, "{outcome:?}");
            let (got, messages) = recv_all(&mut rx, count);
            let got: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
            assert_eq!(got, payloads);
            if rx.gro_enabled() {
                assert_eq!(messages, batches, "{count} segments");
            }
        }
    }

    #[test]
    fn oversize_is_refused_not_fragmented() {
        let mut tx = loopback([127, 0, 0, 1]);
        let to = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9));
        let huge = vec![0u8; MAX_UDP_PAYLOAD + 1];
        let outcome = tx.send_batch(&[Datagram {
            to,
            bucket: 0,
            data: &huge,
        }]);
        assert_eq!(outcome.too_big, 1, "{outcome:?}");
    }

    /// The socket delivers whatever arrives; the VTEP takes only its peers' datagrams.
    #[test]
    fn non_peer_datagrams_are_delivered_then_refused_by_the_vtep() {
        let mut rx = loopback([127, 0, 0, 1]);
        let mut peer = loopback([127, 0, 0, 1]);
        let mut stranger = loopback([127, 0, 0, 2]);
        let to = SocketAddr::V4(rx.local_addr());

        let mut vtep = Vtep::new(VtepConfig::default());
        vtep.add_vni(42).unwrap();
        vtep.add_peer(42, IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();

        let from_peer = MacAddr([2, 0, 0, 0, 0, 1]);
        let from_stranger = MacAddr([2, 0, 0, 0, 0, 0x66]);
        let frame = |src: MacAddr| {
            let mut f = vec![0xffu8; 6];
            f.extend_from_slice(&src.0);
            f.extend_from_slice(&[0x08, 0x06]);
            f.resize(60, 0);
            let mut d = Vec::new();
            encap_into(&mut d, 42, &f);
            d
        };
        let spoofed = frame(from_stranger);
        let genuine = frame(from_peer);
        let send = |s: &mut VtepSocket, d: &[u8]| {
            s.send_batch(&[Datagram {
                to,
                bucket: 9,
                data: d,
            }])
            .sent
        };
        assert_eq!(send(&mut stranger, &spoofed), 1);
        assert_eq!(send(&mut peer, &genuine), 1);

        let mut batch = RecvBatch::new(8);
        let mut results = Vec::new();
        let deadline = StdInstant::now() + Duration::from_secs(5);
        while results.len() < 2 && StdInstant::now() < deadline {
            if rx.recv_batch(&mut batch).unwrap() == 0 {
                wait_readable(&rx);
                continue;
            }
            for (from, d) in batch.datagrams() {
                results.push((
                    from,
                    vtep.decap(Instant::from_secs(1), from, d).map(|(v, _)| v),
                ));
            }
        }
        results.sort_by_key(|(from, _)| *from);
        let stranger_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(
            results,
            [
                (IpAddr::V4(Ipv4Addr::LOCALHOST), Ok(42)),
                (stranger_ip, Err(Error::NotAPeer(stranger_ip, 42))),
            ]
        );
        let now = Instant::from_secs(1);
        assert_eq!(
            vtep.lookup(now, 42, from_peer),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(vtep.lookup(now, 42, from_stranger), None);
    }
}
