//! What sealing costs per packet: seal and open (replay check included) of typical shoal
//! datagrams, for each AES key size, on one core.
//!
//! Run: `cargo bench -p shoal-core --bench seal`. Prints nanoseconds per packet, of this
//! thread's CPU time (`/proc/thread-self/schedstat`), so a busy machine does not inflate it.

use shoal_core::envelope::{self, Kind};
use shoal_core::seal::{Channel, Guard, Key, Keyring};

const ROUNDS: u32 = 200_000;
const NOW: u64 = 1_800_000_000;

fn main() {
    println!("seal + open per packet (ns), {ROUNDS} rounds each");
    println!("{:>10} {:>8} {:>8} {:>8}", "key", "64 B", "400 B", "1400 B");
    for bits in [128usize, 192, 256] {
        let key = Key::from_bytes(vec![7u8; bits / 8]).expect("valid key size");
        let mut row = format!("{:>10}", format!("AES-{bits}"));
        for size in [64usize, 400, 1400] {
            row.push_str(&format!(" {:>8.0}", per_packet(&key, size)));
        }
        println!("{row}");
    }
}

fn per_packet(key: &Key, size: usize) -> f64 {
    let ring = || Some(Keyring::new(key.clone()));
    let mut sender = Guard::new(ring(), false, "prod", 1);
    let mut receiver = Guard::new(ring(), false, "prod", 2);
    let packet = envelope::seal(Kind::SwimDigest, &vec![0x5a; size]);
    let start = cpu_ns();
    for _ in 0..ROUNDS {
        let sealed = sender.seal(Channel::Datagram, &packet, NOW).into_owned();
        let opened = receiver.open(Channel::Datagram, &sealed, NOW);
        assert!(opened.is_ok(), "a fresh packet opens");
    }
    (cpu_ns() - start) as f64 / f64::from(ROUNDS)
}

/// This thread's CPU time so far, in nanoseconds (the wall clock if the kernel does not say).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            let epoch = std::time::UNIX_EPOCH;
            std::time::SystemTime::now()
                .duration_since(epoch)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}
