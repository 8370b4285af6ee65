//! The message arrays of recvmsg(2) and sendmmsg(2): a virtio-net header and a frame per
//! message, and room for the VLAN auxiliary data, kept between calls so the hot path allocates
//! nothing.

use super::rx::vlan_tag;
use crate::offload::VIRTIO_NET_HDR_LEN;
use std::mem;
use std::ptr;

/// The arrays sendmmsg (and recvmsg, for super-frames) work on, kept between calls so a call
/// allocates nothing once they are big enough.
#[derive(Default)]
pub(super) struct MsgBatch {
    pub(super) msgs: Vec<libc::mmsghdr>,
    iovs: Vec<[libc::iovec; 2]>,
    pub(super) hdrs: Vec<[u8; VIRTIO_NET_HDR_LEN]>,
    /// Control-message space per message (room for one `tpacket_auxdata`), 8-byte aligned.
    ctrl: Vec<[u64; CTRL_WORDS]>,
}

/// Control buffer per message, in u64 words: a cmsghdr plus a tpacket_auxdata, with room.
const CTRL_WORDS: usize = 8;

// SAFETY: the raw pointers in `msgs` and `iovs` (into `iovs`, `hdrs` and the caller's buffers)
// are written at the start of each recv/send call, read by the kernel within that call, and
// never dereferenced afterwards; between calls they are stale and unused. Nothing is shared, so
// moving the arrays to another thread is sound.
unsafe impl Send for MsgBatch {}

impl MsgBatch {
    /// Grows the arrays to hold at least `n` messages.
    pub(super) fn reserve(&mut self, n: usize) {
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
    pub(super) fn want_control(&mut self, i: usize) {
        let msg = &mut self.msgs[i];
        msg.msg_hdr.msg_control = self.ctrl[i].as_mut_ptr().cast();
        msg.msg_hdr.msg_controllen = mem::size_of::<[u64; CTRL_WORDS]>();
    }

    /// The VLAN tag (TPID, TCI) the kernel took out of received message `i`, if any.
    pub(super) fn vlan_tag(&self, i: usize) -> Option<(u16, u16)> {
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
            // SAFETY: `hdr` is the message the kernel filled and `cmsg` a non-null header inside
            // its control buffer; CMSG_NXTHDR checks the next one against msg_controllen.
            cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
        }
        None
    }

    /// Points message `i` at header slot `i` followed by `len` bytes at `buf`.
    pub(super) fn point(&mut self, i: usize, buf: *mut u8, len: usize) {
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
