//! Guards that run before a body is read or verified: the client address
//! (through trusted proxies), IP allowlists and per-source rate limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use crate::rules::RateLimit;

/// The address a request is from: the peer, or — only when the peer is a
/// trusted proxy — the right-most address in `X-Forwarded-For` that is not
/// itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for part in text.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) if is_trusted(&ip) => client = ip,
                Ok(ip) => return ip,
                Err(_) => return client,
            }
        }
    }
    client
}

pub fn ip_allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    // An IPv4 client reached over an IPv6 socket arrives as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    allow.is_empty() || allow.iter().any(|n| n.contains(&ip))
}

/// Rate limiters by source, kept across rule reloads: a reload that leaves a
/// source's limit unchanged keeps its state, so editing any rule file cannot
/// reset a limit.
#[derive(Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<(String, RateLimit), Arc<PerClient>>>,
    /// When idle clients were last forgotten.
    swept: Mutex<Option<Instant>>,
}

/// One quota per client address.
type PerClient = DefaultKeyedRateLimiter<IpAddr>;

/// Client addresses tracked per limiter before those that are back to a full
/// quota are forgotten at once, rather than at the next sweep.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// How often clients back to a full quota are forgotten, and limiters left
/// with no client (or by a reload that changed the limit) dropped. A client
/// back to a full quota is in the same state as one never seen, so
/// forgetting it changes no answer.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl RateLimits {
    /// `Ok` when a request of `client` to `source` may pass, else how long to
    /// wait. Each client address has its own quota, so one noisy client does
    /// not starve the others; behind a trusted proxy the address is the one
    /// `X-Forwarded-For` gives ([`client_ip`]).
    pub fn check(&self, source: &str, client: IpAddr, limit: RateLimit) -> Result<(), Duration> {
        let limiter = {
            let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
            map.entry((source.to_owned(), limit))
                .or_insert_with(|| Arc::new(RateLimiter::hashmap(quota(limit))))
                .clone()
        };
        let due = {
            let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
            let last = *swept.get_or_insert_with(Instant::now);
            let due = last.elapsed() >= SWEEP_EVERY
                || (limiter.len() > MAX_TRACKED_CLIENTS
                    && last.elapsed() >= Duration::from_secs(1));
            if due {
                *swept = Some(Instant::now());
            }
            due
        };
        if due {
            self.sweep();
        }
        limiter
            .check_key(&client_key(client))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets clients back to a full quota and drops limiters that track none.
    pub fn sweep(&self) {
        let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, limiter| {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            !limiter.is_empty()
        });
    }

    /// Client addresses tracked, over every limiter.
    pub fn tracked(&self) -> usize {
        let map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|l| l.len()).sum()
    }
}

/// The quota key of a client: an IPv4 address, or an IPv6 /64 — one host
/// usually holds a whole /64, and cycling through its addresses must neither
/// escape the limit nor grow the table.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(std::net::Ipv6Addr::from(octets))
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn quota(limit: RateLimit) -> Quota {
    let count = NonZeroU32::new(limit.count).unwrap_or(NonZeroU32::MIN);
    let period = limit.per / limit.count.max(1);
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .map_or(Quota::per_second(count), |q| q.allow_burst(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_used_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.1.1.1".parse().unwrap());
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_ip(proxy, &h, &trusted), proxy);
    }

    #[test]
    fn allowlists_match_cidrs_and_mapped_addresses() {
        let allow: Vec<IpNet> = vec!["140.82.112.0/20".parse().unwrap()];
        assert!(ip_allowed("140.82.115.1".parse().unwrap(), &allow));
        assert!(ip_allowed("::ffff:140.82.115.1".parse().unwrap(), &allow));
        assert!(!ip_allowed("127.0.0.1".parse().unwrap(), &allow));
        assert!(ip_allowed("127.0.0.1".parse().unwrap(), &[]));
    }

    #[test]
    fn rate_limit_allows_the_burst_then_refuses_with_a_wait() {
        let limits = RateLimits::default();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let limit = RateLimit {
            count: 3,
            per: Duration::from_secs(60),
        };
        for _ in 0..3 {
            assert!(limits.check("s", ip, limit).is_ok());
        }
        let wait = limits.check("s", ip, limit).unwrap_err();
        assert!(
            wait > Duration::from_secs(1) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(limits.check("other", ip, limit).is_ok());
        // Another client of the same source has its own quota.
        assert!(
            limits
                .check("s", "203.0.113.10".parse().unwrap(), limit)
                .is_ok()
        );
    }

    #[test]
    fn idle_clients_are_forgotten_and_ipv6_counts_per_64() {
        let limits = RateLimits::default();
        // 1000 per second: each client's one request is paid back within 1 ms.
        let limit = RateLimit {
            count: 1000,
            per: Duration::from_secs(1),
        };
        for i in 0..200u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0xC633_6400 + i));
            assert!(limits.check("s", ip, limit).is_ok());
        }
        assert_eq!(limits.tracked(), 200);
        let deadline = Instant::now() + Duration::from_secs(5);
        while limits.tracked() > 0 {
            assert!(
                Instant::now() < deadline,
                "idle clients kept: {}",
                limits.tracked()
            );
            std::thread::yield_now();
            limits.sweep();
        }
        assert!(limits.limiters.lock().unwrap().is_empty());

        // Every address of one /64 shares one quota.
        let tight = RateLimit {
            count: 2,
            per: Duration::from_secs(60),
        };
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limits.check("s", a, tight).is_ok());
        assert!(limits.check("s", b, tight).is_ok());
        assert!(limits.check("s", a, tight).is_err());
        assert!(limits.check("s", other, tight).is_ok());
        assert_eq!(limits.tracked(), 2);
    }
}
