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

/// Proxies whose `X-Forwarded-For` is believed (`http.trusted_proxies`): addresses or CIDR
/// ranges.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `entries` (`10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`); `Err` names a bad one.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| {
                let (address, prefix) = match entry.split_once('/') {
                    Some((address, prefix)) => (address, Some(prefix)),
                    None => (entry.as_str(), None),
                };
                let address: IpAddr = address.trim().parse().map_err(|_| entry.clone())?;
                let bits = if address.is_ipv4() { 32 } else { 128 };
                let prefix = match prefix {
                    None => bits,
                    Some(prefix) => prefix
                        .trim()
                        .parse::<u8>()
                        .ok()
                        .filter(|p| *p <= bits)
                        .ok_or_else(|| entry.clone())?,
                };
                Ok((address, prefix))
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Self)
    }

    /// Whether `address` is one of the proxies.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0
            .iter()
            .any(|(network, prefix)| within(address, *network, *prefix))
    }

    /// The client behind a request from `peer`: the rightmost address of `forwarded_for` that
    /// is not a trusted proxy, when `peer` is one; else `peer` itself (a header from anyone
    /// else is not believed).
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let Some(forwarded_for) = forwarded_for else {
            return peer;
        };
        let hops: Vec<IpAddr> = forwarded_for
            .split(',')
            .filter_map(|hop| hop.trim().parse().ok())
            .collect();
        hops.iter()
            .rev()
            .find(|hop| !self.contains(**hop))
            .or(hops.first())
            .copied()
            .unwrap_or(peer)
    }
}

fn within(address: IpAddr, network: IpAddr, prefix: u8) -> bool {
    let (address, network, bits) = match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u128::from(u32::from(a)), u128::from(u32::from(n)), 32u32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128u32),
        _ => return false,
    };
    let prefix = u32::from(prefix);
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (address >> shift) == (network >> shift)
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
    fn the_client_is_the_rightmost_address_a_trusted_proxy_did_not_add() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".to_owned(), "192.168.1.1".to_owned()]).unwrap();
        let (edge, inner) = (IpAddr::from([10, 1, 2, 3]), IpAddr::from([192, 168, 1, 1]));
        assert_eq!(
            proxies.client(edge, Some("203.0.113.9, 198.51.100.7, 192.168.1.1")),
            IpAddr::from([198, 51, 100, 7]),
            "the leftmost entries are the client's to forge"
        );
        assert_eq!(
            proxies.client(inner, Some("203.0.113.9")),
            IpAddr::from([203, 0, 113, 9])
        );
        assert_eq!(
            proxies.client(IpAddr::from([203, 0, 113, 50]), Some("1.2.3.4")),
            IpAddr::from([203, 0, 113, 50]),
            "a client that is not a proxy cannot name another address"
        );
        assert_eq!(proxies.client(edge, None), edge);
        assert!(TrustedProxies::parse(&["10.0.0.0/33".to_owned()]).is_err());
        assert!(TrustedProxies::parse(&["not an address".to_owned()]).is_err());
    }

    #[test]
    fn no_limit_when_switched_off() {
        let limiter = RateLimiter::new(0);
        for _ in 0..1000 {
            assert_eq!(limiter.take(client(1), 0), Ok(()));
        }
    }
}
