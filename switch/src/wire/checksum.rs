//! The Internet checksum (RFC 1071) and the pseudo-header sums of TCP and UDP over IPv4
//! (RFC 9293 § 3.1, RFC 768) and IPv6 (RFC 8200 § 8.1).
//!
//! Sums are computed 8 bytes at a time into four independent accumulators and folded to 16 bits
//! at the end: on the hot path (segmentation, coalescing) this is most of the per-byte work.

/// Adds `w` to `acc` with the end-around carry of one's complement arithmetic.
#[inline(always)]
fn add_carry(acc: u64, w: u64) -> u64 {
    let (sum, carry) = acc.overflowing_add(w);
    sum + u64::from(carry)
}

/// The one's complement sum of `data` in 64-bit native-endian words, not yet folded.
///
/// The sum does not depend on byte order as long as it is swapped back at the end (RFC 1071
/// § 2(B)), and wider words only defer the carries (§ 2(C)), so this reads 8 bytes at a time
/// into four independent accumulators.
#[inline]
fn sum_native(data: &[u8]) -> u64 {
    let word = |b: &[u8]| u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let mut lanes = [0u64; 4];
    let mut blocks = data.chunks_exact(32);
    for b in &mut blocks {
        lanes[0] = add_carry(lanes[0], word(&b[0..8]));
        lanes[1] = add_carry(lanes[1], word(&b[8..16]));
        lanes[2] = add_carry(lanes[2], word(&b[16..24]));
        lanes[3] = add_carry(lanes[3], word(&b[24..32]));
    }
    let mut acc = lanes.iter().fold(0, |acc, &l| add_carry(acc, l));
    let mut words = blocks.remainder().chunks_exact(8);
    for w in &mut words {
        acc = add_carry(acc, word(w));
    }
    // The last 0..7 bytes, zero-padded: an odd final byte is the high byte of its word.
    let tail = words.remainder();
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    add_carry(acc, u64::from_ne_bytes(last))
}

/// Folds a one's complement sum of any width to 16 bits.
#[inline]
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// One's complement sum of `data` as big-endian 16-bit words, plus `initial`, folded to 16 bits
/// and not complemented (RFC 1071 § 4.1). `data` must start at an even offset of the checksummed
/// region.
#[inline]
pub fn ones_complement_sum(data: &[u8], initial: u32) -> u16 {
    // Native-endian words give the byte-swapped sum on little-endian hosts: read it back as the
    // big-endian bytes it stands for.
    let native = fold(sum_native(data));
    let sum = u16::from_be_bytes(native.to_ne_bytes());
    fold(u64::from(sum) + u64::from(initial))
}

/// The Internet checksum (RFC 1071): the complement of the one's complement sum of `data`,
/// started from the partial sum `initial` (e.g. a pseudo-header sum).
#[inline]
pub fn internet_checksum(data: &[u8], initial: u32) -> u16 {
    !ones_complement_sum(data, initial)
}

/// Partial sum of the IPv4 pseudo-header of TCP and UDP (RFC 9293 § 3.1, RFC 768): addresses,
/// protocol and the length of the L4 header plus payload. Feed it to [`internet_checksum`].
#[inline]
pub fn pseudo_header_sum_v4(src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: u16) -> u32 {
    let be = |hi: u8, lo: u8| u32::from(u16::from_be_bytes([hi, lo]));
    be(src[0], src[1])
        + be(src[2], src[3])
        + be(dst[0], dst[1])
        + be(dst[2], dst[3])
        + u32::from(protocol)
        + u32::from(l4_len)
}

/// Partial sum of the IPv6 pseudo-header of TCP and UDP (RFC 8200 § 8.1): addresses, the
/// upper-layer packet length and the next header. Feed it to [`internet_checksum`].
#[inline]
pub fn pseudo_header_sum_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, l4_len: u32) -> u32 {
    let addrs = src
        .chunks_exact(2)
        .chain(dst.chunks_exact(2))
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    addrs + (l4_len >> 16) + (l4_len & 0xffff) + u32::from(next_header)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The sum done the obvious way: 16-bit big-endian words, folded at each step. Independent
    /// of the code under test.
    pub(crate) fn naive_sum(data: &[u8], initial: u32) -> u16 {
        let mut sum = u64::from(initial);
        for w in data.chunks(2) {
            sum += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
            sum = (sum & 0xffff) + (sum >> 16);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 § 3: the sum of 00 01 f2 03 f4 f5 f6 f7 is dd f2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(&data, 0), 0xddf2);
        assert_eq!(internet_checksum(&data, 0), !0xddf2);
        assert_eq!(ones_complement_sum(&[], 0), 0);
        assert_eq!(ones_complement_sum(&[0xab], 0), 0xab00);
    }

    #[test]
    fn pseudo_headers() {
        // 10.0.0.1 > 10.0.0.2, TCP, 20 bytes: 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + 20.
        let v4 = pseudo_header_sum_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 20);
        assert_eq!(v4, 0x0a00 + 1 + 0x0a00 + 2 + 6 + 20);
        let mut a = [0u8; 16];
        a[15] = 1;
        let v6 = pseudo_header_sum_v6(&a, &a, 17, 0x1_0008);
        assert_eq!(v6, 1 + 1 + 1 + 8 + 17);
    }

    proptest! {
        #[test]
        fn matches_naive(data in proptest::collection::vec(any::<u8>(), 0..300),
                         initial in any::<u32>(), split in 0usize..150) {
            prop_assert_eq!(ones_complement_sum(&data, initial), naive_sum(&data, initial));
            // Chaining at an even offset gives the same sum.
            let split = (split * 2).min(data.len() & !1);
            let head = u32::from(ones_complement_sum(&data[..split], initial));
            prop_assert_eq!(ones_complement_sum(&data[split..], head), naive_sum(&data, initial));
        }
    }
}
