//! The TAP device of the TAP backend: opened through `/dev/net/tun` with
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, a 24-byte virtio-net header (`TUNSETVNETHDRSZ`) and
//! `TUNSETOFFLOAD` = `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_UDP_TUNNEL_GSO |
//! TUN_F_UDP_TUNNEL_GSO_CSUM` (Linux 6.17+, `include/uapi/linux/if_tun.h`; older kernels refuse
//! the tunnel bits with `EINVAL`, which is how [`probe`] tells).
//!
//! Frames the daemon writes enter the kernel as if received by the TAP (tc on its ingress
//! sends them to the underlay); frames the kernel sends out of the TAP (tc redirects VXLAN from
//! the underlay to it) are what the daemon reads.

use std::ffi::CString;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::vnet::TUNNEL_HDR_LEN;

/// `TUN_F_*` offload bits (`include/uapi/linux/if_tun.h`).
pub const TUN_F_CSUM: u32 = 0x01;
/// TSO over IPv4.
pub const TUN_F_TSO4: u32 = 0x02;
/// TSO over IPv6.
pub const TUN_F_TSO6: u32 = 0x04;
/// TSO/USO inside a UDP tunnel (Linux 6.17, commit 288f30435132).
pub const TUN_F_UDP_TUNNEL_GSO: u32 = 0x080;
/// Tunnel GSO with a partial outer UDP checksum.
pub const TUN_F_UDP_TUNNEL_GSO_CSUM: u32 = 0x100;
/// What the TAP backend asks for.
pub const OFFLOADS: u32 =
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_UDP_TUNNEL_GSO | TUN_F_UDP_TUNNEL_GSO_CSUM;

/// The TAP backend's device: an open TAP queue.
#[derive(Debug)]
pub struct TapDevice {
    fd: OwnedFd,
    name: String,
}

/// `struct ifreq` as TUNSETIFF reads it: a name and the flags.
#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ioctl_err(name: &str, what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("TAP {name}: {what}: {e}"))
}

impl TapDevice {
    /// Creates the TAP `name` (or attaches to an existing one) with the tunnel offloads, and
    /// brings it up with `mtu`. Needs CAP_NET_ADMIN; the device vanishes with the descriptor.
    pub fn open(name: &str, mtu: u32) -> io::Result<TapDevice> {
        let c = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a TAP name"))?;
        if c.as_bytes().len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TAP name {name:?} is longer than 15 bytes"),
            ));
        }
        // SAFETY: the path is a NUL-terminated literal; open returns a new descriptor or -1.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(ioctl_err(name, "opening /dev/net/tun"));
        }
        // SAFETY: `raw` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _pad: [0; 22],
        };
        for (d, s) in req.name.iter_mut().zip(c.as_bytes()) {
            *d = *s as libc::c_char;
        }
        // SAFETY: `fd` is open; TUNSETIFF reads and writes an ifreq, which `req` is laid out as
        // (name, then a short flags field, padded to the full size).
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) } < 0 {
            return Err(ioctl_err(name, "TUNSETIFF"));
        }
        let hdr_len = TUNNEL_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, valid for the call.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ as _, &hdr_len) } < 0 {
            return Err(ioctl_err(name, "TUNSETVNETHDRSZ 24"));
        }
        // SAFETY: TUNSETOFFLOAD takes the flags by value.
        if unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETOFFLOAD as _,
                OFFLOADS as libc::c_ulong,
            )
        } < 0
        {
            return Err(ioctl_err(
                name,
                "TUNSETOFFLOAD with TUN_F_UDP_TUNNEL_GSO (needs Linux 6.17 or later)",
            ));
        }
        let dev = TapDevice {
            fd,
            name: name.to_string(),
        };
        dev.set_mtu_and_up(mtu)?;
        Ok(dev)
    }

    /// Sets the MTU and raises the interface (SIOCSIFMTU, SIOCSIFFLAGS on a datagram socket).
    fn set_mtu_and_up(&self, mtu: u32) -> io::Result<()> {
        // SAFETY: plain socket(2) call; the result is checked.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            return Err(ioctl_err(&self.name, "socket for interface ioctls"));
        }
        // SAFETY: `s` was just opened and is owned here.
        let s = unsafe { OwnedFd::from_raw_fd(s) };
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, b) in req.ifr_name.iter_mut().zip(self.name.as_bytes()) {
            *d = *b as libc::c_char;
        }
        req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
        // SAFETY: SIOCSIFMTU reads the ifreq, valid for the call.
        if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFMTU as _, &req) } < 0 {
            return Err(ioctl_err(&self.name, "setting the MTU"));
        }
        // SAFETY: SIOCGIFFLAGS writes the flags into the ifreq, valid for the call.
        if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
            return Err(ioctl_err(&self.name, "reading its flags"));
        }
        // SAFETY: the union's flags member was just written by the kernel.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: SIOCSIFFLAGS reads the ifreq, valid for the call.
        if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
            return Err(ioctl_err(&self.name, "bringing it up"));
        }
        Ok(())
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame scattered over `head` then `rest`; `Ok(None)` when nothing waits.
    pub fn read_split(&self, head: &mut [u8], rest: &mut [u8]) -> io::Result<Option<usize>> {
        let iov = [
            libc::iovec {
                iov_base: head.as_mut_ptr().cast(),
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: rest.as_mut_ptr().cast(),
                iov_len: rest.len(),
            },
        ];
        loop {
            // SAFETY: both iovecs point into buffers valid for writes of their lengths for the
            // call.
            let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(e),
            }
        }
    }

    /// Writes one frame gathered from `parts` (header, outer headers, inner frame).
    pub fn write(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            // SAFETY: IoSlice is ABI-compatible with iovec; the slices are valid for the call.
            let n = unsafe {
                libc::writev(
                    self.fd.as_raw_fd(),
                    parts.as_ptr().cast(),
                    parts.len() as libc::c_int,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl AsRawFd for TapDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Whether this kernel's TAP takes UDP-tunnel GSO: opens a throw-away TAP named `name` with
/// the tunnel offloads. `Err` says why not (the kernel's refusal, or no CAP_NET_ADMIN).
pub fn probe(name: &str) -> io::Result<()> {
    TapDevice::open(name, 1500).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_bits_match_the_uapi() {
        // include/uapi/linux/if_tun.h of Linux 6.17/6.18.
        assert_eq!(OFFLOADS, 0x1 | 0x2 | 0x4 | 0x80 | 0x100);
    }

    /// Runs `f` on a thread of its own in a new, empty network namespace (the machine's own is
    /// never touched); `None` without root.
    fn in_new_netns<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true needs root"
            );
            println!("skipped: needs root");
            return None;
        }
        let t = std::thread::spawn(move || {
            // SAFETY: unshare(CLONE_NEWNET) moves only this thread into a new namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            f()
        });
        Some(t.join().expect("the namespace thread"))
    }

    #[test]
    fn root_this_kernel_takes_udp_tunnel_gso_on_a_tap() {
        let Some(r) = in_new_netns(|| probe("vxprobe0")) else {
            return;
        };
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let (major, minor) = release
            .split(['.', '-'])
            .take(2)
            .map(|p| p.parse::<u32>().unwrap_or(0))
            .fold((0, 0), |(a, _), v| if a == 0 { (v, 0) } else { (a, v) });
        if (major, minor) >= (6, 17) {
            r.expect("Linux 6.17+ takes TUN_F_UDP_TUNNEL_GSO");
        } else {
            assert!(r.is_err(), "an older kernel refuses it");
        }
    }

    #[test]
    fn long_names_are_refused_before_any_syscall() {
        let e = TapDevice::open("a-name-far-too-long", 1500).unwrap_err();
        assert!(e.to_string().contains("longer than 15"), "{e}");
    }
}
