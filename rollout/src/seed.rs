//! Sampling seeds derived from several integers (run seed, step, rank, batch, phase), so that
//! each stream is reproducible on its own and distinct streams never coincide. Adding offsets to
//! a seed would collide (seed 7 batch 1 = seed 8 batch 0); hashing each part in does not.

/// Mixes `parts` into one seed with splitmix64's finaliser, one part at a time.
pub fn derive_seed(parts: &[u64]) -> u64 {
    parts.iter().fold(0x243F_6A88_85A3_08D3, |acc, &p| splitmix64(acc ^ splitmix64(p)))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::derive_seed;

    #[test]
    fn parts_and_their_order_matter() {
        assert_eq!(derive_seed(&[1, 2, 3]), derive_seed(&[1, 2, 3]));
        assert_ne!(derive_seed(&[7, 1]), derive_seed(&[8, 0]), "offset-style collision");
        assert_ne!(derive_seed(&[1, 2]), derive_seed(&[2, 1]));
        assert_ne!(derive_seed(&[0]), derive_seed(&[0, 0]));
    }
}
