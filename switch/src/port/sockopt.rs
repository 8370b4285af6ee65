//! Socket options and error context shared by every socket the datapath opens (the AF_PACKET
//! ports here, the VTEP's UDP sockets in `vxlan`).

use socket2::Socket;
use std::fmt;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};

/// Sets an integer socket option (setsockopt(2)).
pub fn set_int_opt(
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

/// Grows a socket's receive and send buffers to `bytes`: past `net.core.[rw]mem_max` with
/// CAP_NET_ADMIN (`SO_*BUFFORCE`), else as far as the limits allow. Best effort: a smaller
/// buffer only means earlier backpressure.
pub fn set_buffer_sizes(socket: &Socket, bytes: usize) {
    let fd = socket.as_raw_fd();
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    if set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
        let _ = socket.set_recv_buffer_size(bytes);
    }
    if set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size).is_err() {
        let _ = socket.set_send_buffer_size(bytes);
    }
}

/// Adds what the socket is (`subject`) and the step that failed (`what`) to an error, and,
/// when the error is a refused permission, the privilege `needs` names.
pub fn context(
    subject: impl fmt::Display,
    what: &str,
    err: io::Error,
    needs: Option<&str>,
) -> io::Error {
    let hint = match needs {
        Some(cap) if err.kind() == io::ErrorKind::PermissionDenied => format!(" (needs {cap})"),
        _ => String::new(),
    };
    io::Error::new(err.kind(), format!("{subject}: {what}: {err}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_the_socket_the_step_and_the_privilege() {
        let denied = io::Error::from_raw_os_error(libc::EPERM);
        let e = context("AF_PACKET port va", "bind", denied, Some("CAP_NET_RAW"));
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            e.to_string().starts_with("AF_PACKET port va: bind: "),
            "{e}"
        );
        assert!(e.to_string().ends_with(" (needs CAP_NET_RAW)"), "{e}");
        let other = io::Error::from_raw_os_error(libc::ENODEV);
        let e = context(
            "VTEP socket 0.0.0.0:4789",
            "bind",
            other,
            Some("CAP_NET_RAW"),
        );
        assert!(!e.to_string().contains("needs"), "{e}");
    }

    #[test]
    fn an_option_on_a_bad_descriptor_is_an_error() {
        let err = set_int_opt(-1, libc::SOL_SOCKET, libc::SO_RCVBUF, 1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }
}
