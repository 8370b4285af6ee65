//! Offload metadata that travels with each frame: the virtio-net header.
//!
//! TAP devices opened with `IFF_VNET_HDR` and AF_PACKET sockets with `PACKET_VNET_HDR` put this
//! 10-byte header in front of every frame (virtio spec v1.2 § 5.1.6, `struct virtio_net_hdr`).
//! It lets a 64 KB TCP "super-frame" cross the switch whole, with its checksum left for the last
//! hop to fill in. Fields are in the host's byte order for legacy devices, which on every
//! platform we run on is little-endian.

/// Length of `struct virtio_net_hdr` without `num_buffers`.
pub const VIRTIO_NET_HDR_LEN: usize = 10;

/// `flags`: the checksum from `csum_start` to the end must still be computed.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum is already known to be valid.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;

/// `gso_type`: not a super-frame.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4 super-frame.
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP fragmentation offload (obsolete).
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
/// `gso_type`: TCP over IPv6 super-frame.
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation (USO).
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the super-frame has ECN CWR set and needs ECN-aware segmentation.
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// Why a virtio-net header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Fewer than 10 bytes.
    #[error("truncated virtio-net header")]
    Truncated,
    /// A gso_type we do not know.
    #[error("unsupported GSO type {0}")]
    UnsupportedGso(u8),
    /// Offsets point outside the frame, or are inconsistent with it.
    #[error("offload metadata does not fit the frame")]
    BadOffsets,
    /// The super-frame is not TCP over IPv4/IPv6 as its gso_type says.
    #[error("super-frame headers do not match its GSO type")]
    BadHeaders,
}

/// `struct virtio_net_hdr` (virtio v1.2 § 5.1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, possibly with the ECN bit.
    pub gso_type: u8,
    /// Length of all headers (Ethernet, IP, TCP) of a super-frame.
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS) of a super-frame.
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header) when `NEEDS_CSUM`.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// A header that says nothing: a plain, fully checksummed frame.
    pub const NONE: VirtioNetHdr = VirtioNetHdr {
        flags: 0,
        gso_type: VIRTIO_NET_HDR_GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Reads a header from the first 10 bytes.
    pub fn parse(bytes: &[u8]) -> Result<VirtioNetHdr, OffloadError> {
        let b = bytes
            .first_chunk::<VIRTIO_NET_HDR_LEN>()
            .ok_or(OffloadError::Truncated)?;
        let hdr = VirtioNetHdr::read(b);
        match hdr.gso_kind() {
            VIRTIO_NET_HDR_GSO_NONE
            | VIRTIO_NET_HDR_GSO_TCPV4
            | VIRTIO_NET_HDR_GSO_TCPV6
            | VIRTIO_NET_HDR_GSO_UDP_L4 => Ok(hdr),
            other => Err(OffloadError::UnsupportedGso(other)),
        }
    }

    /// The fields of the 10 bytes `b` as they stand, unchecked: [`VirtioNetHdr::parse`]
    /// checks them for a port, the VTEP's tunnel header for its own use.
    pub fn read(b: &[u8; VIRTIO_NET_HDR_LEN]) -> VirtioNetHdr {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    /// Writes the header into the first 10 bytes of `out` (which must hold them).
    pub fn emit(&self, out: &mut [u8]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }

    /// The header as 10 bytes.
    pub fn to_bytes(&self) -> [u8; VIRTIO_NET_HDR_LEN] {
        let mut b = [0u8; VIRTIO_NET_HDR_LEN];
        self.emit(&mut b);
        b
    }

    /// The GSO type without the ECN bit.
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !VIRTIO_NET_HDR_GSO_ECN
    }

    /// True for a super-frame that must be segmented before a port without TSO.
    pub fn is_gso(&self) -> bool {
        self.gso_kind() != VIRTIO_NET_HDR_GSO_NONE
    }

    /// True when the L4 checksum is still to be computed.
    pub fn needs_csum(&self) -> bool {
        self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
    }
}

/// What a port can take without software help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Offloads {
    /// Frames may carry `NEEDS_CSUM` (partial checksums).
    pub csum: bool,
    /// TCP over IPv4 super-frames.
    pub tso4: bool,
    /// TCP over IPv6 super-frames.
    pub tso6: bool,
}

impl Offloads {
    /// Everything: a port that takes super-frames and partial checksums.
    pub const ALL: Offloads = Offloads {
        csum: true,
        tso4: true,
        tso6: true,
    };
    /// Nothing: every frame must be whole and checksummed.
    pub const NONE: Offloads = Offloads {
        csum: false,
        tso4: false,
        tso6: false,
    };

    /// True when a frame with this metadata can be handed to the port as it is.
    pub fn accepts(&self, hdr: &VirtioNetHdr) -> bool {
        let gso_ok = match hdr.gso_kind() {
            VIRTIO_NET_HDR_GSO_NONE => true,
            VIRTIO_NET_HDR_GSO_TCPV4 => self.tso4,
            VIRTIO_NET_HDR_GSO_TCPV6 => self.tso6,
            _ => false,
        };
        gso_ok && (!hdr.needs_csum() || self.csum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A TCPv4 super-frame header as a TAP hands it over: NEEDS_CSUM, MSS 1448, 66 header bytes,
    // checksum at 34 + 16.
    static TSO4: [u8; 10] = [0x01, 0x01, 66, 0, 0xa8, 0x05, 34, 0, 16, 0];

    #[test]
    fn deconstruct() {
        let h = VirtioNetHdr::parse(&TSO4).unwrap();
        assert!(h.needs_csum() && h.is_gso());
        assert_eq!(
            (h.hdr_len, h.gso_size, h.csum_start, h.csum_offset),
            (66, 1448, 34, 16)
        );
        assert_eq!(h.to_bytes(), TSO4);
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(
            VirtioNetHdr::parse(&TSO4[..9]),
            Err(OffloadError::Truncated)
        );
        let mut b = TSO4;
        b[1] = 7;
        assert_eq!(
            VirtioNetHdr::parse(&b),
            Err(OffloadError::UnsupportedGso(7))
        );
    }

    #[test]
    fn capabilities() {
        let h = VirtioNetHdr::parse(&TSO4).unwrap();
        assert!(Offloads::ALL.accepts(&h));
        assert!(!Offloads::NONE.accepts(&h));
        assert!(Offloads::NONE.accepts(&VirtioNetHdr::NONE));
        let ecn = VirtioNetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN,
            ..h
        };
        assert_eq!(ecn.gso_kind(), VIRTIO_NET_HDR_GSO_TCPV6);
    }
}
