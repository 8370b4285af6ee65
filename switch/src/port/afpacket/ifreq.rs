//! Interfaces as the kernel names them: index, MTU and state, through if_nametoindex(3) and
//! netdevice(7) ioctls on a socket of the calling thread's namespace.

use socket2::{Domain, Socket, Type};
use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};

/// True when an interface called `name` exists in the calling thread's network namespace.
pub fn interface_exists(name: &str) -> bool {
    ifindex_of(name).is_ok()
}

/// The index of interface `name` (if_nametoindex(3)).
pub(super) fn ifindex_of(name: &str) -> io::Result<u32> {
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
pub(super) fn ioctl_mtu(fd: RawFd, name: &str) -> io::Result<usize> {
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

/// The MTU of interface `name` in the calling thread's network namespace.
pub fn interface_mtu(name: &str) -> io::Result<usize> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    ioctl_mtu(socket.as_raw_fd(), name)
}
