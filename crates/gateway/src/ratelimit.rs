//! Request-rate limits: one token bucket per authenticated principal.
//!
//! Each principal (an agency system, the desk software, an auditor's tool) may make
//! `requests_per_s_max` calls per second on average, with bursts of up to `request_burst_max`
//! calls. A call beyond that is refused with RESOURCE_EXHAUSTED naming the limit and a
//! `google.rpc.RetryInfo` saying when a retry will pass, so a well-behaved client backs off
//! instead of hammering. A refused call does nothing (it is checked before the request is read),
//! so retrying it with the same idempotency key is always safe.
//!
//! Why per principal, and not per connection: one agency system may open many connections, and
//! one misbehaving system must not starve the others. The buckets live in memory; a restart
//! refills them, which errs on the side of serving. Time is passed in ([`RateLimiter::check_at`])
//! so the arithmetic is tested without sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Principals whose buckets are kept before idle ones are forgotten (a bound on memory).
pub const BUCKETS_MAX: usize = 65_536;

/// One principal's bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Calls it may still make now (fractional: refills continuously).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

/// Token buckets by principal id.
#[derive(Debug)]
pub struct RateLimiter {
    /// Refill rate, calls per second.
    rate_per_s: f64,
    /// Bucket size, calls.
    burst: f64,
    /// The buckets.
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// The call was refused: how long until one more would pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refused {
    /// Wait at least this long before retrying.
    pub retry_after: Duration,
}

impl RateLimiter {
    /// `requests_per_s_max` calls per second on average, bursts up to `request_burst_max`.
    pub fn new(requests_per_s_max: u32, request_burst_max: u32) -> RateLimiter {
        RateLimiter {
            rate_per_s: f64::from(requests_per_s_max.max(1)),
            burst: f64::from(request_burst_max.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one call from `principal`'s bucket now.
    pub fn check(&self, principal: &str) -> Result<(), Refused> {
        self.check_at(principal, Instant::now())
    }

    /// Takes one call from `principal`'s bucket at `now`.
    pub fn check_at(&self, principal: &str, now: Instant) -> Result<(), Refused> {
        let mut buckets = self.buckets.lock();
        if buckets.len() >= BUCKETS_MAX && !buckets.contains_key(principal) {
            // Forget the buckets that are full again: they carry no information.
            let (rate, burst) = (self.rate_per_s, self.burst);
            buckets.retain(|_, b| refilled(b, now, rate, burst) < burst);
        }
        let b = buckets.entry(principal.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = refilled(b, now, self.rate_per_s, self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - b.tokens;
            Err(Refused {
                retry_after: Duration::from_secs_f64(missing / self.rate_per_s),
            })
        }
    }
}

/// The bucket's tokens at `now`.
fn refilled(b: &Bucket, now: Instant, rate_per_s: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
    (b.tokens + elapsed * rate_per_s).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let l = RateLimiter::new(10, 5);
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(l.check_at("tu-phap", t0).is_ok(), "call {i} of the burst");
        }
        let refused = l.check_at("tu-phap", t0).expect_err("burst spent");
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        // 100 ms later one more call has been earned, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.check_at("tu-phap", t1).is_ok());
        assert!(l.check_at("tu-phap", t1).is_err());
    }

    #[test]
    fn principals_do_not_share_a_bucket() {
        let l = RateLimiter::new(1, 1);
        let t0 = Instant::now();
        assert!(l.check_at("tu-phap", t0).is_ok());
        assert!(l.check_at("tu-phap", t0).is_err());
        assert!(
            l.check_at("cong-an", t0).is_ok(),
            "another agency is unaffected"
        );
    }

    #[test]
    fn an_idle_bucket_refills_only_up_to_the_burst() {
        let l = RateLimiter::new(100, 3);
        let t0 = Instant::now();
        assert!(l.check_at("bhxh", t0).is_ok());
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(l.check_at("bhxh", later).is_ok());
        }
        assert!(l.check_at("bhxh", later).is_err(), "no more than the burst");
    }
}
