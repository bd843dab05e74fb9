//! Per-peer token buckets: each peer may send `rate` requests a second on
//! average and up to `rate` at once. The table is bounded: peers whose
//! bucket has filled up again are forgotten (a full bucket is what a new
//! peer gets anyway), and peers beyond `MAX_TRACKED` share one bucket, so a
//! scan from many addresses costs the tracked peers nothing and the memory
//! stays bounded.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Peers remembered at most.
pub const MAX_TRACKED: usize = 4096;
/// How often a full table is swept of refilled buckets (a sweep reads
/// every tracked peer).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: capacity,
            at: now,
        }
    }

    /// Refills for the time since the last request, then takes one token
    /// if there is one.
    fn take(&mut self, rate: f64, capacity: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refilled(&self, rate: f64, capacity: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * rate >= capacity
    }
}

/// The buckets of every peer seen lately.
pub struct Buckets<K> {
    rate: f64,
    capacity: f64,
    tracked: HashMap<K, Bucket>,
    /// The bucket the peers that did not fit share.
    overflow: Option<Bucket>,
    swept: Option<Instant>,
}

impl<K: Hash + Eq> Buckets<K> {
    /// `per_second` requests a second per peer (at least 1), as a burst too.
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Buckets {
            rate,
            capacity: rate,
            tracked: HashMap::new(),
            overflow: None,
            swept: None,
        }
    }

    /// Whether `peer` may send one more request at `now`.
    pub fn admit(&mut self, peer: K, now: Instant) -> bool {
        let (rate, capacity) = (self.rate, self.capacity);
        if let Some(bucket) = self.tracked.get_mut(&peer) {
            return bucket.take(rate, capacity, now);
        }
        let sweep_due = self
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY);
        if self.tracked.len() >= MAX_TRACKED && sweep_due {
            self.swept = Some(now);
            self.tracked.retain(|_, b| !b.refilled(rate, capacity, now));
        }
        if self.tracked.len() < MAX_TRACKED {
            let mut bucket = Bucket::full(capacity, now);
            let admitted = bucket.take(rate, capacity, now);
            self.tracked.insert(peer, bucket);
            return admitted;
        }
        self.overflow
            .get_or_insert_with(|| Bucket::full(capacity, now))
            .take(rate, capacity, now)
    }

    /// Peers remembered now.
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(b: &mut Buckets<u32>, peer: u32, n: usize, now: Instant) -> usize {
        (0..n).filter(|_| b.admit(peer, now)).count()
    }

    #[test]
    fn a_peer_gets_its_burst_then_its_rate() {
        let mut b = Buckets::new(10);
        let now = Instant::now();
        assert_eq!(
            admitted(&mut b, 1, 50, now),
            10,
            "the burst is one second's worth"
        );
        assert!(!b.admit(1, now));
        let later = now + Duration::from_millis(500);
        assert_eq!(
            admitted(&mut b, 1, 50, later),
            5,
            "half a second refills half"
        );
        let much_later = later + Duration::from_secs(3600);
        assert_eq!(
            admitted(&mut b, 1, 50, much_later),
            10,
            "a bucket never holds more than its burst"
        );
    }

    #[test]
    fn one_flooding_peer_leaves_the_others_their_own_allowance() {
        let mut b = Buckets::new(5);
        let now = Instant::now();
        assert_eq!(admitted(&mut b, 1, 1000, now), 5);
        assert_eq!(admitted(&mut b, 2, 5, now), 5);
    }

    #[test]
    fn peers_beyond_the_tracked_ones_share_one_bucket_and_refilled_ones_are_forgotten() {
        let mut b = Buckets::new(2);
        let now = Instant::now();
        for peer in 0..MAX_TRACKED as u32 {
            assert!(b.admit(peer, now));
        }
        assert_eq!(b.tracked(), MAX_TRACKED);
        let strangers = (MAX_TRACKED as u32..MAX_TRACKED as u32 * 2)
            .filter(|&p| b.admit(p, now))
            .count();
        assert_eq!(strangers, 2, "the untracked peers share one burst");
        assert_eq!(b.tracked(), MAX_TRACKED, "memory stays bounded");
        // A second later every tracked bucket is full again: the sweep
        // forgets them and a new peer gets a bucket of its own.
        let later = now + Duration::from_secs(2);
        assert!(b.admit(u32::MAX, later));
        assert_eq!(b.tracked(), 1);
    }
}
