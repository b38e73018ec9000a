//! Per-client rate limits on points (`[server] rate_limit`, `rate_burst`):
//! a token bucket per client address, or per token when tokens are in
//! use.
//!
//! A request of `n` points is admitted when the client's bucket holds at
//! least `min(n, burst)` points' worth; it then takes all `n`, possibly
//! leaving the bucket in debt. So a batch larger than the burst is never
//! refused forever (Prometheus sends up to 2,000 samples a request
//! whatever the limit), and over time a client still gets `rate` points a
//! second at most. A refused request applies nothing; the client is told
//! when enough will have refilled.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::peer::Peer;
use super::tokens::TokenId;

/// Most clients tracked at once; past it, new clients share one bucket
/// until idle ones are forgotten, so memory stays bounded.
pub const MAX_TRACKED_CLIENTS: usize = 100_000;

/// Whose bucket a request draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// A token of `[server] auth_token_file`.
    Token(TokenId),
    /// An IPv4 address, or the /64 prefix of an IPv6 one (one host
    /// usually holds a whole /64).
    Addr(IpAddr),
    /// A client on a unix socket, by user id: local users do not share
    /// a bucket.
    Uid(u32),
    /// A client on a unix socket whose user id the kernel did not give.
    Local,
    /// New clients while [`MAX_TRACKED_CLIENTS`] are tracked.
    Overflow,
}

impl ClientKey {
    /// The key of a client without a token: its address, or its user id
    /// on a unix socket.
    pub fn of_peer(peer: Peer) -> ClientKey {
        match peer {
            Peer::Local { uid: Some(uid) } => ClientKey::Uid(uid),
            Peer::Local { uid: None } => ClientKey::Local,
            Peer::Ip(IpAddr::V4(v4)) => ClientKey::Addr(IpAddr::V4(v4)),
            Peer::Ip(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::Addr(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientKey::Addr(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

/// The limit in force: `rate` points per second, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    /// Points per second refilled.
    pub rate: f64,
    /// Most points a full bucket holds.
    pub burst: f64,
}

/// One client's bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Points available (negative: debt).
    points: f64,
    updated: Instant,
}

impl Bucket {
    /// The bucket refilled up to `now`.
    fn refilled(self, limit: Limit, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        Bucket {
            points: (self.points + elapsed * limit.rate).min(limit.burst),
            updated: now,
        }
    }
}

/// The buckets of every client seen recently.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
}

impl RateLimiter {
    /// Takes `points` from `key`'s bucket, or says how long until the
    /// request would be admitted.
    pub fn admit(
        &self,
        key: ClientKey,
        points: usize,
        limit: Limit,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let key = if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(&key) {
            forget_full(&mut buckets, limit, now);
            if buckets.len() >= MAX_TRACKED_CLIENTS {
                ClientKey::Overflow
            } else {
                key
            }
        } else {
            key
        };
        let bucket = buckets.entry(key).or_insert(Bucket {
            points: limit.burst,
            updated: now,
        });
        let refilled = bucket.refilled(limit, now);
        let points = points as f64;
        let needed = points.min(limit.burst);
        if refilled.points >= needed {
            *bucket = Bucket {
                points: refilled.points - points,
                updated: now,
            };
            Ok(())
        } else {
            *bucket = refilled;
            let wait = (needed - refilled.points) / limit.rate;
            Err(Duration::from_secs_f64(wait.clamp(0.0, 86_400.0)))
        }
    }

    /// Forgets the clients whose bucket is full again (they are as if
    /// never seen); returns how many are left.
    pub fn sweep(&self, limit: Limit, now: Instant) -> usize {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        forget_full(&mut buckets, limit, now);
        buckets.len()
    }

    /// How many clients are tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn forget_full(buckets: &mut HashMap<ClientKey, Bucket>, limit: Limit, now: Instant) {
    buckets.retain(|_, bucket| bucket.refilled(limit, now).points < limit.burst);
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Limit = Limit {
        rate: 100.0,
        burst: 200.0,
    };

    fn addr(text: &str) -> ClientKey {
        ClientKey::of_peer(Peer::Ip(text.parse().unwrap()))
    }

    #[test]
    fn burst_then_refill_at_the_rate() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        let a = addr("192.0.2.1");
        assert_eq!(limiter.admit(a, 150, LIMIT, t0), Ok(()));
        // 50 left: a request of 100 waits 0.5 s.
        let wait = limiter.admit(a, 100, LIMIT, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        assert!(limiter.admit(a, 100, LIMIT, t0 + wait).is_ok());
        // Another client has its own bucket.
        assert_eq!(limiter.admit(addr("192.0.2.2"), 200, LIMIT, t0), Ok(()));
    }

    #[test]
    fn a_batch_above_the_burst_passes_from_a_full_bucket_and_leaves_debt() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        let a = addr("192.0.2.1");
        assert_eq!(limiter.admit(a, 1000, LIMIT, t0), Ok(()));
        // Debt of 800: the next batch of any size waits until the bucket
        // is full again, (800 + 200) / 100 = 10 s.
        let wait = limiter.admit(a, 1000, LIMIT, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 10.0).abs() < 1e-9, "{wait:?}");
        assert!(limiter.admit(a, 1000, LIMIT, t0 + wait).is_ok());
    }

    #[test]
    fn over_a_long_run_a_client_gets_the_rate() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        let a = addr("198.51.100.7");
        let mut admitted = 0;
        // Try 50 points every 10 ms for 10 s: 5,000 points/s offered.
        for step in 0..1000 {
            let now = t0 + Duration::from_millis(step * 10);
            if limiter.admit(a, 50, LIMIT, now).is_ok() {
                admitted += 50;
            }
        }
        // burst + rate × 10 s = 1,200, within one request.
        assert!((1150..=1250).contains(&admitted), "{admitted}");
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_mapped_v4_is_v4() {
        assert_eq!(addr("2001:db8:1:2::1"), addr("2001:db8:1:2:ffff::9"));
        assert_ne!(addr("2001:db8:1:2::1"), addr("2001:db8:1:3::1"));
        assert_eq!(addr("::ffff:192.0.2.1"), addr("192.0.2.1"));
        assert_eq!(
            ClientKey::of_peer(Peer::Local { uid: None }),
            ClientKey::Local
        );
        assert_eq!(
            ClientKey::of_peer(Peer::Local { uid: Some(7) }),
            ClientKey::Uid(7)
        );
        assert_ne!(
            ClientKey::of_peer(Peer::Local { uid: Some(7) }),
            ClientKey::of_peer(Peer::Local { uid: Some(8) })
        );
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        limiter.admit(addr("192.0.2.1"), 100, LIMIT, t0).unwrap();
        limiter.admit(addr("192.0.2.2"), 10, LIMIT, t0).unwrap();
        assert_eq!(limiter.sweep(LIMIT, t0 + Duration::from_millis(500)), 1);
        assert_eq!(limiter.sweep(LIMIT, t0 + Duration::from_secs(1)), 0);
    }
}
