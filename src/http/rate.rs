//! A per-client rate limit: a token bucket per client address, for the requests anyone may
//! make without credentials (creating a cart).
//!
//! Each address may make `per_minute` requests in a burst, then one every `60 / per_minute`
//! seconds. The table of addresses is bounded: when it is full, buckets that have refilled
//! (clients that went quiet) are dropped first, and a client never seen is refused rather
//! than let the table grow.

use std::net::IpAddr;

use dashmap::DashMap;

/// Addresses tracked at most.
const CLIENTS_MAX: usize = 100_000;

/// A token bucket per client address.
pub struct RateLimiter {
    /// Requests per minute per client (and the burst); 0 means no limit.
    per_minute: u32,
    /// Tokens (in thousandths) and when they were counted, by client.
    buckets: DashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of a request the client may still make.
    milli_tokens: u64,
    /// When `milli_tokens` was counted.
    at_ms: u64,
}

impl RateLimiter {
    /// `per_minute` requests per client per minute; 0 for no limit.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: DashMap::new(),
        }
    }

    /// Takes one request of `client` at `now_ms`: `Ok`, or `Err(seconds)` until it may.
    pub fn take(&self, client: IpAddr, now_ms: u64) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let full = u64::from(self.per_minute) * 1000;
        if self.buckets.len() >= CLIENTS_MAX && !self.buckets.contains_key(&client) {
            self.buckets.retain(|_, bucket| self.refilled(*bucket, now_ms) < full);
            if self.buckets.len() >= CLIENTS_MAX {
                return Err(60);
            }
        }
        let mut bucket = self.buckets.entry(client).or_insert(Bucket {
            milli_tokens: full,
            at_ms: now_ms,
        });
        let tokens = self.refilled(*bucket, now_ms);
        if tokens >= 1000 {
            *bucket = Bucket {
                milli_tokens: tokens - 1000,
                at_ms: now_ms,
            };
            return Ok(());
        }
        // Refill is `per_minute` tokens per 60 000 ms: one thousandth per `60 / per_minute` ms.
        let missing = 1000 - tokens;
        let wait_ms = (missing * 60_000).div_ceil(full);
        Err(wait_ms.div_ceil(1000).max(1))
    }

    /// The bucket's tokens at `now_ms` (a clock that went back refills nothing).
    fn refilled(&self, bucket: Bucket, now_ms: u64) -> u64 {
        let full = u64::from(self.per_minute) * 1000;
        let elapsed_ms = now_ms.saturating_sub(bucket.at_ms);
        // per_minute tokens per minute = per_minute thousandths per 60 ms.
        let gained = elapsed_ms.saturating_mul(u64::from(self.per_minute)) / 60;
        bucket.milli_tokens.saturating_add(gained).min(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_client_gets_its_burst_then_one_request_per_interval() {
        let limiter = RateLimiter::new(3);
        for _ in 0..3 {
            assert_eq!(limiter.take(client(1), 0), Ok(()));
        }
        assert_eq!(limiter.take(client(1), 0), Err(20), "the next in 20 s");
        assert_eq!(limiter.take(client(2), 0), Ok(()), "another client has its own bucket");
        assert_eq!(limiter.take(client(1), 19_000), Err(1));
        assert_eq!(limiter.take(client(1), 20_000), Ok(()));
        assert_eq!(limiter.take(client(1), 20_000), Err(20));
        assert_eq!(
            limiter.take(client(1), 20_000 + 600_000),
            Ok(()),
            "a quiet client refills to its burst, not beyond"
        );
        for _ in 0..2 {
            assert_eq!(limiter.take(client(1), 620_000), Ok(()));
        }
        assert!(limiter.take(client(1), 620_000).is_err());
    }

    #[test]
    fn no_limit_when_switched_off() {
        let limiter = RateLimiter::new(0);
        for _ in 0..1000 {
            assert_eq!(limiter.take(client(1), 0), Ok(()));
        }
    }
}
