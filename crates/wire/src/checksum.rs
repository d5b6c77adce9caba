//! The Internet checksum (RFC 1071), as used by the IPv4 and CARP headers.

/// One's-complement sum of 16-bit big-endian words, folded, not inverted.
fn sum(data: &[u8]) -> u32 {
    let mut acc: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// The checksum to store in a header whose checksum field is zero.
pub fn internet(data: &[u8]) -> u16 {
    !(sum(data) as u16)
}

/// True when `data`, checksum field included, sums to all ones.
pub fn verify(data: &[u8]) -> bool {
    sum(data) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(internet(&[0x12]), internet(&[0x12, 0x00]));
    }

    #[test]
    fn verify_accepts_what_internet_produced() {
        let mut data = vec![0x45, 0, 0, 56, 0x12, 0x34, 0x40, 0, 255, 112, 0, 0, 198, 18, 0, 1, 224, 0, 0, 18];
        let c = internet(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(verify(&data));
        data[15] ^= 1;
        assert!(!verify(&data));
    }
}
