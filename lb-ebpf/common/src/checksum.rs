//! Internet checksum (RFC 1071) over big-endian 16-bit words, written with constant-bound loops
//! so the same code verifies in the XDP program.

/// Adds `bytes` to a running one's-complement sum as big-endian 16-bit words. An odd trailing
/// byte is padded with zero, as the RFC says.
///
/// The words are summed in the machine's own byte order and the folded result is swapped once
/// (RFC 1071 §2(B): the sum is independent of byte order up to that swap), which spares the XDP
/// program a byte swap per word.
#[inline(always)]
pub fn add(sum: u32, bytes: &[u8]) -> u32 {
    let (words, rest) = bytes.as_chunks::<2>();
    let mut native = 0u32;
    for w in words {
        native += u32::from(u16::from_ne_bytes(*w));
    }
    if let [last] = rest {
        native += u32::from(u16::from_ne_bytes([*last, 0]));
    }
    sum + u32::from(u16::from_be(fold(native)))
}

/// Adds the first `len` bytes of `bytes` to a running sum, in whole 8-byte blocks: the block
/// that holds byte `len - 1` is summed to its end, so bytes past `len` in it must be zero (a
/// message that is a whole number of 8-byte units, or a zero-filled window). A trailing part of
/// `bytes` shorter than a block is never summed.
///
/// The loop has a constant bound and constant offsets (it stops early by a comparison, not by a
/// variable index), so the XDP program sums only the message, not the whole window it was
/// copied into, and still verifies without CAP_PERFMON.
#[inline(always)]
pub fn add_blocks(sum: u32, bytes: &[u8], len: usize) -> u32 {
    let (blocks, _) = bytes.as_chunks::<8>();
    let mut native = 0u32;
    for (i, block) in blocks.iter().enumerate() {
        if i * 8 >= len {
            break;
        }
        let (words, _) = block.as_chunks::<2>();
        for w in words {
            native += u32::from(u16::from_ne_bytes(*w));
        }
    }
    sum + u32::from(u16::from_be(fold(native)))
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

    /// The sum of RFC 1071 written out word by word, big-endian: what `add` must equal.
    fn reference(mut sum: u32, bytes: &[u8]) -> u32 {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            sum += hi | pair.get(1).copied().map_or(0, u32::from);
        }
        sum
    }

    proptest::proptest! {
        #[test]
        fn same_sum_as_big_endian_words(
            start in 1u32..0x10_0000,
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            proptest::prop_assert_eq!(fold(add(start, &bytes)), fold(reference(start, &bytes)));
        }
    }

    proptest::proptest! {
        #[test]
        fn blocks_sum_the_message_and_nothing_past_its_last_block(
            start in 1u32..0x10_0000,
            message in proptest::collection::vec(proptest::num::u8::ANY, 0..160),
            junk in proptest::collection::vec(1u8..=255, 0..64),
        ) {
            // A window: the message, zeros to the end of its last block, then anything.
            let padded = message.len().div_ceil(8) * 8;
            let mut window = message.clone();
            window.resize(padded, 0);
            window.extend_from_slice(&junk);
            proptest::prop_assert_eq!(
                fold(add_blocks(start, &window, message.len())),
                fold(reference(start, &message))
            );
        }
    }

    #[test]
    fn blocks_stop_at_the_slice_end_and_skip_a_short_tail() {
        let bytes = [0x11u8; 20];
        // Two whole blocks; the 4-byte tail is never summed, whatever `len` says.
        assert_eq!(
            fold(add_blocks(0, &bytes, 100)),
            fold(reference(0, &bytes[..16]))
        );
        assert_eq!(fold(add_blocks(0, &bytes, 0)), 0);
        assert_eq!(
            fold(add_blocks(0, &bytes, 1)),
            fold(reference(0, &bytes[..8]))
        );
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(add(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }
}
