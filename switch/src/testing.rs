//! Test support shared by the crates' tests (not part of the API): the root-or-skip rule, private
//! network namespaces, veth pairs, waiting on descriptors with a deadline, and frame fixtures.
//!
//! Root-only tests call [`needs_root`] first and do their work inside [`in_private_netns`],
//! so everything they make goes away with the namespace, also when they fail.

use crate::offload::{VirtioNetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// True when running as root. Otherwise prints `skipped: needs root` and returns false,
/// or panics under `CI=true`, where root tests must run.
pub fn needs_root() -> bool {
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

pub use crate::port::afpacket::interface_mtu;

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

/// Makes a veth pair `a`–`b` in the calling thread's namespace and brings both ends up.
pub fn veth_pair(a: &str, b: &str) {
    ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
    ip(&["link", "set", a, "up"]);
    ip(&["link", "set", b, "up"]);
}

/// Turns IPv6 off in the calling thread's namespace, for interfaces made after: no router
/// or multicast listener messages, so every frame a test receives is one it sent.
pub fn quiet_namespace() {
    for f in ["all", "default"] {
        let path = format!("/proc/sys/net/ipv6/conf/{f}/disable_ipv6");
        // A kernel without IPv6 has no such file, and nothing to quiet.
        let _ = std::fs::write(path, "1");
    }
}
