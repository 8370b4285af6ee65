//! The Ethernet part of a flow: `dl_src`, `dl_dst`, `vlan`, `len`, and the header they build.

use super::fields::{number, Fields, Key};
use super::{FlowError, MAX_FRAME_LEN, MIN_FRAME_LEN};
use crate::wire::ethernet::{HEADER_LEN, TAG_LEN, TPID_8021Q};
use crate::wire::{MacAddr, VlanTag};

/// The address under `key`, or `default` when the spec does not give it.
pub(super) fn mac(fields: &Fields<'_>, key: Key, default: MacAddr) -> Result<MacAddr, FlowError> {
    match fields.get(key) {
        None => Ok(default),
        Some(f) => f.value.parse().map_err(|_| FlowError::BadMac {
            field: f.name,
            value: f.value.to_string(),
        }),
    }
}

/// `vlan=N`: the VLAN to tag the frame with, 1-4094.
pub(super) fn vlan(fields: &Fields<'_>) -> Result<Option<u16>, FlowError> {
    fields
        .get(Key::Vlan)
        .map(|f| number(f, 1, 4094).map(|v| v as u16))
        .transpose()
}

/// `len=N`: the frame's length.
pub(super) fn frame_len(fields: &Fields<'_>) -> Result<Option<usize>, FlowError> {
    fields
        .get(Key::Len)
        .map(|f| number(f, MIN_FRAME_LEN as u64, MAX_FRAME_LEN as u64).map(|v| v as usize))
        .transpose()
}

/// Bytes of the Ethernet header, with its tag if any (the EtherType included).
pub(super) fn header_len(vlan: Option<u16>) -> usize {
    HEADER_LEN + if vlan.is_some() { TAG_LEN } else { 0 }
}

/// Writes the addresses and the 802.1Q tag, if any; the EtherType is the next layer's to write.
pub(super) fn write_addresses(out: &mut Vec<u8>, dst: MacAddr, src: MacAddr, vlan: Option<u16>) {
    out.extend_from_slice(&dst.0);
    out.extend_from_slice(&src.0);
    if let Some(vid) = vlan {
        let tag = VlanTag {
            tpid: TPID_8021Q,
            pcp: 0,
            dei: false,
            vid,
        };
        out.extend_from_slice(&tag.to_bytes());
    }
}
