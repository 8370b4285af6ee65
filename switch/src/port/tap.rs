//! TAP ports: a TAP device the switch owns, for a VM, an application, or the gateway address of
//! a network living in the host's stack (like docker0, or OVS's bridge-local port).
//!
//! The device is opened through `/dev/net/tun` (Linux `Documentation/networking/tuntap.rst`)
//! with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`: every read and write carries one Ethernet frame
//! behind a 10-byte virtio-net header (`TUNSETVNETHDRSZ`, see [`crate::offload`]). With
//! `TUNSETOFFLOAD` = `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6` the kernel hands over TCP
//! super-frames of up to 64 KB with partial checksums, and takes them back the same way.
//!
//! The device is made with tun-rs (`Layer::L2` and `offload(true)` give exactly those flags);
//! the two ioctls on top pin the header size and narrow the offloads to TCP, since tun-rs also
//! turns on UDP segmentation (`TUN_F_USO4/6`) where the kernel has it, which our
//! [`Offloads`] do not describe.

use super::{Capabilities, FrameRef, Packet, Port, Tally};
use crate::offload::{Offloads, VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, RawFd};
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

/// Most frames a port moves in one call, as declared in its capabilities.
const MAX_BURST: usize = 64;

/// A switch port on a TAP device; the device lives as long as the port.
pub struct TapPort {
    dev: SyncDevice,
    name: String,
    ifindex: u32,
    mtu: usize,
    /// Frames received unusable (truncated, bad offsets or offload metadata).
    bad_frames: Tally,
    /// Frames the kernel refused on send.
    rejected_frames: Tally,
    /// An error met after some frames were read, reported by the next `recv`.
    pending_err: Option<io::Error>,
}

impl TapPort {
    /// Creates the TAP `name`, or attaches to an existing TAP of that name, sets its MTU when
    /// given, and brings it up.
    ///
    /// Needs CAP_NET_ADMIN. A TAP created here is not persistent: it vanishes when the port is
    /// dropped. An existing persistent TAP (`ip tuntap add`) stays after the drop.
    pub fn create(name: &str, mtu: Option<u32>) -> io::Result<TapPort> {
        let mtu = mtu
            .map(|m| {
                u16::try_from(m).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("MTU {m} too large"))
                })
            })
            .transpose()?;
        // No configuration in the builder (its MTU and up steps would fail under the same
        // message as the device creation); they are done below, each with its own context.
        let dev = DeviceBuilder::new()
            .name(name)
            .layer(Layer::L2)
            .offload(true)
            .inherit_enable_state()
            .build_sync()
            .map_err(|e| create_error(name, e))?;
        let step =
            |what: &str, e: io::Error| io::Error::new(e.kind(), format!("TAP {name}: {what}: {e}"));
        dev.set_nonblocking(true)
            .map_err(|e| step("setting non-blocking", e))?;
        let fd = dev.as_raw_fd();
        let hdr_len = VIRTIO_NET_HDR_LEN as libc::c_int;
        // SAFETY: `fd` is the open TUN descriptor; TUNSETVNETHDRSZ reads one int through the
        // pointer, which is valid for the call.
        let rc = unsafe {
            libc::ioctl(
                fd,
                libc::TUNSETVNETHDRSZ as _,
                &hdr_len as *const libc::c_int,
            )
        };
        if rc != 0 {
            return Err(step("TUNSETVNETHDRSZ", io::Error::last_os_error()));
        }
        let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        // SAFETY: `fd` is the open TUN descriptor; TUNSETOFFLOAD takes the flags by value.
        let rc = unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD as _, offloads as libc::c_ulong) };
        if rc != 0 {
            return Err(step("TUNSETOFFLOAD", io::Error::last_os_error()));
        }
        if let Some(mtu) = mtu {
            dev.set_mtu(mtu).map_err(|e| step("setting the MTU", e))?;
        }
        dev.enabled(true).map_err(|e| step("bringing it up", e))?;
        // The kernel's name (the same as asked, unless the name was a pattern like `tap%d`).
        let name = dev.name().map_err(|e| step("TUNGETIFF", e))?;
        let ifindex = dev.if_index().map_err(|e| step("if_nametoindex", e))?;
        accept_fixed_id_tso(&name).map_err(|e| step("ETHTOOL_STSO", e))?;
        let mtu = dev.mtu().map_err(|e| step("SIOCGIFMTU", e))?;
        Ok(TapPort {
            dev,
            name,
            ifindex,
            mtu: usize::from(mtu),
            bad_frames: Tally::default(),
            rejected_frames: Tally::default(),
            pending_err: None,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Frames read and dropped here: truncated (longer than the packet buffer) or with an
    /// unusable virtio-net header.
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames.total()
    }

    /// Frames the kernel refused on write (`EINVAL`: bad offload metadata or too short); they
    /// count as taken and are dropped.
    pub fn rejected_frames(&self) -> u64 {
        self.rejected_frames.total()
    }

    /// Reads the interface's MTU again (it may have changed since the port was created).
    pub fn refresh_mtu(&mut self) -> io::Result<usize> {
        self.mtu = usize::from(self.dev.mtu()?);
        Ok(self.mtu)
    }
}

impl Port for TapPort {
    fn refresh(&mut self) {
        // A vanished interface keeps the last MTU; the port goes down through recv/send.
        let _ = self.refresh_mtu();
    }

    fn take_tx_refused(&mut self) -> u64 {
        self.rejected_frames.take_new()
    }

    fn take_rx_bad(&mut self) -> u64 {
        self.bad_frames.take_new()
    }

    fn link_up(&self) -> bool {
        super::afpacket::link_is_up(&self.name, self.ifindex)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            mtu: self.mtu,
            offloads: Offloads::ALL,
            max_burst: MAX_BURST,
        }
    }

    /// Reads one frame per readv(2) until the device is empty or `pkts` is full. A frame whose
    /// virtio-net header does not parse, or that does not fit its packet buffer, is skipped and
    /// counted in [`TapPort::bad_frames`]. Buffers should hold [`super::MAX_FRAME_LEN`] bytes.
    fn recv(&mut self, pkts: &mut [Packet]) -> io::Result<usize> {
        if let Some(err) = self.pending_err.take() {
            return Err(err);
        }
        let mut n = 0;
        while n < pkts.len() {
            let pkt = &mut pkts[n];
            let cap = pkt.buf.len();
            let mut hdr = [0u8; VIRTIO_NET_HDR_LEN];
            let read = self
                .dev
                .recv_vectored(&mut [IoSliceMut::new(&mut hdr), IoSliceMut::new(&mut pkt.buf)]);
            let total = match read {
                Ok(0) => break,
                Ok(total) => total,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    // The kernel could not express the frame's offload state as a header; it
                    // dropped that frame.
                    Some(libc::EINVAL) => {
                        self.bad_frames.add();
                        continue;
                    }
                    // EBADFD: the device was deleted under us. Report the frames read so far
                    // first.
                    _ if n > 0 => {
                        self.pending_err = Some(e);
                        break;
                    }
                    _ => return Err(e),
                },
            };
            // The kernel returns the whole length even when it truncated the copy.
            let len = total.saturating_sub(VIRTIO_NET_HDR_LEN);
            match VirtioNetHdr::parse(&hdr) {
                Ok(meta) if total >= VIRTIO_NET_HDR_LEN && len <= cap => {
                    pkt.meta = meta;
                    pkt.len = len;
                    n += 1;
                }
                _ => self.bad_frames.add(),
            }
        }
        Ok(n)
    }

    /// Writes one frame per writev(2), its virtio-net header first. Stops at a full device
    /// (`EAGAIN`) and returns the count so far. `EIO` (the interface is down) and `EBADFD` (it
    /// was deleted) are errors.
    fn send(&mut self, frames: &[FrameRef<'_>]) -> io::Result<usize> {
        let mut n = 0;
        while n < frames.len() {
            let frame = &frames[n];
            let hdr = frame.meta.to_bytes();
            match self
                .dev
                .send_vectored(&[IoSlice::new(&hdr), IoSlice::new(frame.data)])
            {
                Ok(_) => n += 1,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    Some(libc::EINVAL) | Some(libc::EMSGSIZE) => {
                        self.rejected_frames.add();
                        n += 1;
                    }
                    // The next call meets the error again and reports it.
                    _ if n > 0 => break,
                    _ => return Err(e),
                },
            }
        }
        Ok(n)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.dev.as_raw_fd())
    }
}

impl std::fmt::Debug for TapPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapPort")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .field("mtu", &self.mtu)
            .field("fd", &self.dev.as_raw_fd())
            .finish()
    }
}

/// `ETHTOOL_STSO` (include/uapi/linux/ethtool.h): turn TCP segmentation offload on or off.
const ETHTOOL_STSO: u32 = 0x1f;

/// `struct ethtool_value` (include/uapi/linux/ethtool.h).
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Turns on every TSO feature the TAP `name` can take, which adds `tx-tcp-mangleid-segmentation`
/// to what TUNSETOFFLOAD gave.
///
/// Without it the kernel cuts every TCP super-frame marked as having fixed IPv4 IDs
/// (`SKB_GSO_TCP_FIXEDID`: GRO sets it when it merges such a flow, e.g. on a NIC receiving
/// from a stack that sends DF packets with ID 0) into MTU-sized frames in software before the
/// TAP, and the switch reads them one 1.5 KB frame at a time. The feature lets the device give
/// those segments new IDs, which RFC 6864 § 4.1 allows for atomic datagrams; the kernel applies
/// it only to frames with DF set.
fn accept_fixed_id_tso(name: &str) -> io::Result<()> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STSO,
        data: 1,
    };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() || name.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value its ifr_data points at; both
    // live on this stack frame for the whole call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Says which step of creating TAP `name` failed and why, with a hint on privileges.
///
/// tun-rs opens `/dev/net/tun` and then asks for the device (TUNSETIFF); opening the node again
/// tells the two failures apart.
fn create_error(name: &str, err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::InvalidInput {
        return io::Error::new(err.kind(), format!("TAP {name}: {err}"));
    }
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun");
    let (what, err) = match tun {
        Err(open_err) => ("opening /dev/net/tun".to_string(), open_err),
        Ok(_) => (format!("creating TAP {name} (TUNSETIFF)"), err),
    };
    let hint = match err.kind() {
        io::ErrorKind::PermissionDenied => " (needs CAP_NET_ADMIN)",
        io::ErrorKind::NotFound => " (is the tun module loaded?)",
        _ => "",
    };
    io::Error::new(err.kind(), format!("{what}: {err}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::afpacket::interface_exists;
    use crate::testing::{
        deadline, in_private_netns, interface_mtu, ip, needs_root, tso4_frame, wait_readable,
    };
    use std::time::Instant;

    /// rx_packets of interface `name`, from the calling thread's namespace (`/sys/class/net`
    /// would show the namespace sysfs was mounted in).
    fn rx_packets(name: &str) -> u64 {
        let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
        let line = dev
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("{name} not in /proc/thread-self/net/dev"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// True for an ARP request (RFC 826) asking for `target`.
    fn is_arp_request_for(frame: &[u8], target: [u8; 4]) -> bool {
        frame.len() >= 42
            && frame[12..14] == [0x08, 0x06]
            && frame[20..22] == [0, 1]
            && frame[38..42] == target
    }

    /// Waits until `cond` holds or 5 seconds pass.
    fn eventually(what: &str, cond: impl Fn() -> bool) {
        let until = deadline(5);
        while !cond() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn tap_exchanges_frames_with_the_kernel() {
        if !needs_root() {
            return;
        }
        in_private_netns(|| {
            let name = format!("vst-tap-{}", std::process::id());
            let mut tap = TapPort::create(&name, Some(1400)).unwrap();
            assert_eq!(tap.name(), name);
            assert!(interface_exists(&name));
            assert_eq!(interface_mtu(&name).unwrap(), 1400);
            let caps = tap.capabilities();
            assert_eq!(
                (caps.mtu, caps.offloads, caps.max_burst),
                (1400, Offloads::ALL, 64)
            );
            assert!(tap.ifindex() > 0);

            ip(&["addr", "add", "10.99.0.1/24", "dev", &name]);
            ip(&["link", "set", &name, "up"]);
            // A datagram to a neighbour makes the kernel ask for its MAC through the TAP.
            let sock = std::net::UdpSocket::bind("10.99.0.1:0").unwrap();
            sock.send_to(b"hello", "10.99.0.2:9").unwrap();

            let until = deadline(5);
            let mut pkts = vec![Packet::new(); 8];
            let request = 'found: loop {
                assert!(
                    wait_readable(tap.raw_fd().unwrap(), until),
                    "no ARP request"
                );
                let n = tap.recv(&mut pkts).unwrap();
                for p in &pkts[..n] {
                    if is_arp_request_for(p.frame(), [10, 99, 0, 2]) {
                        break 'found p.frame().to_vec();
                    }
                }
            };
            assert_eq!(tap.bad_frames(), 0);

            // Answer it: 10.99.0.2 is at 02:00:00:00:00:02.
            let peer = [0x02, 0, 0, 0, 0, 0x02];
            let tap_mac = &request[6..12];
            let mut reply = Vec::new();
            reply.extend_from_slice(tap_mac);
            reply.extend_from_slice(&peer);
            reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
            reply.extend_from_slice(&peer);
            reply.extend_from_slice(&[10, 99, 0, 2]);
            reply.extend_from_slice(tap_mac);
            reply.extend_from_slice(&[10, 99, 0, 1]);
            reply.resize(60, 0);
            let before = rx_packets(&name);
            let sent = tap.send(&[FrameRef {
                meta: VirtioNetHdr::NONE,
                data: &reply,
            }]);
            assert_eq!(sent.unwrap(), 1);
            eventually("rx_packets to count the reply", || {
                rx_packets(&name) > before
            });
            eventually("the kernel to learn the neighbour", || {
                let out = std::process::Command::new("ip")
                    .args(["neigh", "show", "10.99.0.2", "dev", &name])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains("02:00:00:00:00:02")
            });

            // A TCP super-frame goes in whole, with its virtio-net header.
            let (hdr, mut frame) = tso4_frame(20000);
            frame[0..6].copy_from_slice(tap_mac);
            let before = rx_packets(&name);
            let sent = tap.send(&[FrameRef {
                meta: hdr,
                data: &frame,
            }]);
            assert_eq!(sent.unwrap(), 1);
            assert_eq!(tap.rejected_frames(), 0);
            eventually("rx_packets to count the super-frame", || {
                rx_packets(&name) > before
            });

            drop(tap);
            eventually("the TAP to vanish", || !interface_exists(&name));
        });
    }

    #[test]
    fn tap_takes_fixed_id_super_frames_whole() {
        if !needs_root() {
            return;
        }
        if std::process::Command::new("ethtool")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "needs ethtool under CI"
            );
            println!("skipped: needs ethtool (apt-get install ethtool)");
            return;
        }
        in_private_netns(|| {
            let name = format!("vst-tsoid-{}", std::process::id());
            let _tap = TapPort::create(&name, None).unwrap();
            let out = std::process::Command::new("ethtool")
                .args(["-k", &name])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            for feature in ["tx-tcp-segmentation", "tx-tcp-mangleid-segmentation"] {
                assert!(
                    text.lines().any(|l| l.trim() == format!("{feature}: on")),
                    "{feature} is not on:\n{text}"
                );
            }
        });
    }

    #[test]
    fn create_errors_say_why() {
        let err = TapPort::create("a-name-much-too-long-for-linux", None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("a-name-much-too-long"), "{err}");
    }
}
