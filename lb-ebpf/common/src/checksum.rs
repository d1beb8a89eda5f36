//! Internet checksum (RFC 1071) over big-endian 16-bit words, written with constant-bound loops
//! so the same code verifies in the XDP program.

/// Adds `bytes` to a running one's-complement sum as big-endian 16-bit words. An odd trailing
/// byte is padded with zero, as the RFC says.
#[inline(always)]
pub fn add(mut sum: u32, bytes: &[u8]) -> u32 {
    let (words, rest) = bytes.as_chunks::<2>();
    for w in words {
        sum += u32::from(u16::from_be_bytes(*w));
    }
    if let [last] = rest {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// [`add`] over the 8-byte units of `bytes` that start before `len`: the bytes from `len` on
/// must be zero (they would add nothing), and the loop stops where the message does instead of
/// running over the whole fixed-size window. Bytes past the last whole unit are left out, so
/// `bytes` should be a whole number of units long.
#[inline(always)]
pub fn add_prefix(mut sum: u32, bytes: &[u8], len: usize) -> u32 {
    let (units, _) = bytes.as_chunks::<8>();
    for (i, unit) in units.iter().enumerate() {
        if i * 8 >= len {
            break;
        }
        sum = add(sum, unit);
    }
    sum
}

/// Folds the carries back in; the result is the one's-complement sum (not yet inverted).
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Sum of the ICMPv6 pseudo-header (RFC 8200 §8.1): source, destination, upper-layer length,
/// next header 58.
#[inline(always)]
pub fn icmpv6_pseudo_header(src: &[u8; 16], dst: &[u8; 16], icmp_len: u32) -> u32 {
    let sum = add(add(0, src), dst);
    sum + (icmp_len >> 16) + (icmp_len & 0xffff) + u32::from(crate::wire::IPPROTO_ICMPV6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example: words 0001 f203 f4f5 f6f7 sum to 0xddf2 after folding.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &bytes)), 0xddf2);
    }

    #[test]
    fn a_prefix_sums_what_the_whole_zero_padded_buffer_sums() {
        let mut buf = [0u8; 40];
        for (i, b) in buf.iter_mut().enumerate().take(27) {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        for len in 27..=40 {
            assert_eq!(add_prefix(5, &buf, len), add(5, &buf), "len {len}");
        }
        assert_eq!(add_prefix(0, &buf, 0), 0);
        assert_eq!(add_prefix(0, &buf, 8), add(0, &buf[..8]));
        assert_eq!(add_prefix(0, &buf, 9), add(0, &buf[..16]));
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(add(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }
}
