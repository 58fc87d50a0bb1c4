//! FNV-1a hashing for digests (the membership digest and the user-event digest), and the
//! fast keyed hash of maps by socket address ([`AddrHash`]).

/// FNV-1a, 64 bits: stable across builds and platforms, unlike `DefaultHasher`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

/// A fast hash for maps keyed by socket address (foca's members by address, looked up once
/// per update of every datagram and push-pull): a multiply-rotate mix per word, keyed by a
/// per-process random seed so that addresses cannot be chosen to collide. std's SipHash
/// was the larger part of building such a map at a thousand members.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddrHash(u64);

impl AddrHash {
    /// A hasher builder with this process's seed (drawn once, from std's random keys).
    pub(crate) fn new() -> Self {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(0x5ea1_u64)
        });
        AddrHash(seed)
    }
}

impl Default for AddrHash {
    fn default() -> Self {
        Self::new()
    }
}

impl std::hash::BuildHasher for AddrHash {
    type Hasher = AddrHasher;
    fn build_hasher(&self) -> AddrHasher {
        AddrHasher(self.0)
    }
}

/// The hasher [`AddrHash`] builds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddrHasher(u64);

impl AddrHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
}

impl std::hash::Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }
    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
    fn finish(&self) -> u64 {
        // Both ends matter to the map: the low bits pick the bucket, the top seven tag it.
        let x = self.0.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 32)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::hash::BuildHasher;
    use std::net::SocketAddr;

    use super::AddrHash;

    #[test]
    fn a_map_by_address_finds_every_address_and_the_hashes_spread() {
        let addrs: Vec<SocketAddr> = (0..2000u32)
            .map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 7948)))
            .chain((0..50u16).map(|p| SocketAddr::from(([10, 0, 0, 1], 8000 + p))))
            .collect();
        let mut map = HashMap::with_hasher(AddrHash::new());
        for (i, a) in addrs.iter().enumerate() {
            map.insert(*a, i);
        }
        assert!(
            addrs
                .iter()
                .enumerate()
                .all(|(i, a)| map.get(a) == Some(&i))
        );
        let hash = AddrHash::new();
        let low: HashSet<u64> = addrs.iter().map(|a| hash.hash_one(a) & 0xfff).collect();
        let top: HashSet<u64> = addrs.iter().map(|a| hash.hash_one(a) >> 57).collect();
        assert!(low.len() > 1500, "bucket bits collide: {}", low.len());
        assert_eq!(top.len(), 128, "the tag bits do not vary");
    }
}
