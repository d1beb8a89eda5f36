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
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(add(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }
}
