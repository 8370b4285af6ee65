//! A device's transmit offloads, switched the way `ethtool -K DEV tx off` does, through the
//! SIOCETHTOOL ioctl (so no ethtool binary is needed). Turning transmit checksumming off also
//! turns off TSO and GSO on the device: the kernel drops every segmentation feature that depends
//! on it.

use super::netns::{join, spawn_in};
use super::{IoContext, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `ETHTOOL_GTXCSUM` (include/uapi/linux/ethtool.h): get transmit checksumming.
const ETHTOOL_GTXCSUM: u32 = 0x16;
/// `ETHTOOL_STXCSUM`: set transmit checksumming.
const ETHTOOL_STXCSUM: u32 = 0x17;
/// `ETHTOOL_GTSO`: get TCP segmentation offload.
const ETHTOOL_GTSO: u32 = 0x1e;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// One ethtool "value" command on `ifname` through socket `sock`; returns the value's data.
fn value_cmd(sock: &OwnedFd, ifname: &str, cmd: u32, data: u32) -> std::io::Result<u32> {
    let mut value = EthtoolValue { cmd, data };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if ifname.len() >= req.ifr_name.len() {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL with an ifreq whose ifr_data points at a live ethtool_value.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value.data)
}

/// Turns transmit checksum offload (and with it TSO/GSO) of `ifname` in namespace `ns` on or off,
/// and checks it took. Returns whether TSO is left on.
pub fn set_tx_offload(ns: &str, ifname: &str, on: bool) -> Result<bool> {
    super::proc::trace_action(&format!(
        "ip netns exec {ns} ethtool -K {ifname} tx {}  # SIOCETHTOOL",
        if on { "on" } else { "off" }
    ));
    let ifname = ifname.to_string();
    let where_ = format!("{ifname} in netns {ns}");
    let handle = spawn_in(ns, "ethtool", move || {
        // SAFETY: socket(2); the fd is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context(|| "socket(AF_INET)".into());
        }
        // SAFETY: fd is a fresh descriptor nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        value_cmd(&sock, &ifname, ETHTOOL_STXCSUM, u32::from(on))
            .context(|| format!("ETHTOOL_STXCSUM on {where_}"))?;
        let now = value_cmd(&sock, &ifname, ETHTOOL_GTXCSUM, 0)
            .context(|| format!("ETHTOOL_GTXCSUM on {where_}"))?;
        if (now != 0) != on {
            return Err(super::Error::Unexpected(format!(
                "transmit checksumming of {where_} stayed {}",
                if now != 0 { "on" } else { "off" }
            )));
        }
        let tso = value_cmd(&sock, &ifname, ETHTOOL_GTSO, 0)
            .context(|| format!("ETHTOOL_GTSO on {where_}"))?;
        Ok(tso != 0)
    })?;
    join(handle)
}
