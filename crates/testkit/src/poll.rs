//! Waiting for a condition with a deadline: tests never sleep a fixed time and hope.

use std::time::{Duration, Instant};

/// Calls `probe` about every `every` until it returns `Ok`, for at most `limit`. Returns the
/// value and the time it took, or the last `Err` and the time spent.
///
/// `probe` runs at least once, and once more after `limit` has passed, so a condition that
/// holds at the deadline counts.
pub fn poll<T>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<(T, Duration), (String, Duration)> {
    let start = Instant::now();
    loop {
        let round = Instant::now();
        match probe() {
            Ok(v) => return Ok((v, start.elapsed())),
            Err(e) if start.elapsed() >= limit => return Err((e, start.elapsed())),
            Err(_) => {}
        }
        if let Some(rest) = every.checked_sub(round.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// Checks `cond` every 20 ms until it holds (`true`) or `limit` passes (`false`).
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll(limit, Duration::from_millis(20), || {
        if cond() { Ok(()) } else { Err(String::new()) }
    })
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_returns_the_first_ok_and_the_last_err() {
        let mut n = 0;
        let got = poll(Duration::from_secs(5), Duration::ZERO, || {
            n += 1;
            if n == 3 {
                Ok(n)
            } else {
                Err(format!("n = {n}"))
            }
        });
        assert_eq!(got.map(|(v, _)| v), Ok(3));
        let mut n = 0;
        let got = poll(Duration::ZERO, Duration::ZERO, || {
            n += 1;
            Err::<(), _>(format!("n = {n}"))
        });
        assert_eq!(got.map_err(|(e, _)| e), Err("n = 1".to_string()));
    }

    #[test]
    fn wait_until_gives_up_at_the_deadline() {
        assert!(wait_until(Duration::ZERO, || true));
        assert!(!wait_until(Duration::from_millis(30), || false));
    }
}
