//! Opening an AF_PACKET port's socket: the options that make it a switch port, the buffer
//! sizes, the bind to one interface and the promiscuous membership (packet(7)).

use crate::port::sockopt::{self, set_int_opt};
use socket2::{Domain, Socket, Type};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};

/// Receive and send buffer size asked for: room for dozens of 64 KB super-frames (on receive,
/// only super-frames use it: the rest go through the ring).
const SOCKET_BUFFER: usize = 4 << 20;
/// `PACKET_VERSION` value of the ring layout we read.
const TPACKET_V2: libc::c_int = libc::tpacket_versions::TPACKET_V2 as libc::c_int;

/// Opens a packet socket on interface `ifindex` (called `ifname`), with its options set, bound
/// to every protocol, and promiscuous.
pub(super) fn open(ifname: &str, ifindex: u32) -> io::Result<Socket> {
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
    sockopt::set_buffer_sizes(&socket, SOCKET_BUFFER);
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

    Ok(socket)
}

/// Binds the packet socket `fd` to interface `ifindex` for `protocol` (host order; 0 takes no
/// frames at all).
pub(super) fn bind(fd: RawFd, ifindex: u32, protocol: u16) -> io::Result<()> {
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

/// Adds the interface name and the step that failed to an error, and a hint when it is about
/// privileges.
pub(super) fn context(ifname: &str, what: &str, err: io::Error) -> io::Error {
    sockopt::context(
        format_args!("AF_PACKET port {ifname}"),
        what,
        err,
        Some("CAP_NET_RAW"),
    )
}
