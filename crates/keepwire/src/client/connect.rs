//! Name resolution (cached) and connecting in Happy Eyeballs order.
//!
//! R1.2: DNS and the TCP handshake are separate phases of a transaction's
//! latency, so both are timed and reported. Lookups go through the system
//! resolver (`getaddrinfo` on tokio's blocking pool) and are cached per host
//! for a fixed TTL, because the system API does not tell the record's own.
//! Addresses are tried as RFC 8305 says: families interleaved, IPv6 first,
//! a new attempt started every 250 ms while earlier ones are still pending,
//! the first to connect wins.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// RFC 8305 §5 "Connection Attempt Delay" (recommended 250 ms).
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Resolved addresses and when they were resolved, per (host, port).
type Cache = HashMap<(String, u16), (Instant, Vec<SocketAddr>)>;

/// A per-host cache of resolved addresses.
#[derive(Debug)]
pub struct Resolver {
    ttl: Duration,
    cache: Mutex<Cache>,
}

impl Resolver {
    /// A resolver whose answers live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Resolver {
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Addresses for `host:port`, and whether they came from the cache.
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<(Vec<SocketAddr>, bool)> {
        let key = (host.to_ascii_lowercase(), port);
        if let Some((at, addrs)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok((addrs.clone(), true));
        }
        let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host_for_lookup, port))
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {host}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} has no addresses"),
            ));
        }
        let ordered = interleave(addrs);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (Instant::now(), ordered.clone()));
        Ok((ordered, false))
    }
}

impl Resolver {
    /// Drops expired answers, then the oldest beyond `max` entries.
    pub fn sweep(&self, max: usize) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.ttl;
        cache.retain(|_, (at, _)| at.elapsed() < ttl);
        if cache.len() > max {
            let mut ages: Vec<Instant> = cache.values().map(|(at, _)| *at).collect();
            ages.sort_unstable();
            let cut = ages[cache.len() - max];
            cache.retain(|_, (at, _)| *at >= cut);
        }
    }
}

/// RFC 8305 §4: alternate address families, starting with IPv6.
pub fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let (v6, v4): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| a.is_ipv6());
    let mut out = Vec::with_capacity(v6.len() + v4.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// Connects to the first address that answers, starting a new attempt every
/// `delay` while earlier ones are pending; bounded by `timeout` overall.
pub async fn happy_eyeballs(
    addrs: &[SocketAddr],
    delay: Duration,
    timeout: Duration,
) -> io::Result<TcpStream> {
    race(addrs, delay, timeout, TcpStream::connect).await
}

/// RFC 8305's race with any `connect` (a TCP handshake, or a QUIC one):
/// the first address to succeed wins, a new attempt starts every `delay`
/// while earlier ones are pending, and losers are dropped.
pub(crate) async fn race<T, F>(
    addrs: &[SocketAddr],
    delay: Duration,
    timeout: Duration,
    connect: impl Fn(SocketAddr) -> F,
) -> io::Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = io::Result<T>> + Send + 'static,
{
    let start = |attempts: &mut JoinSet<_>, a: SocketAddr| {
        let attempt = connect(a);
        attempts.spawn(async move { attempt.await.map_err(|e| (a, e)) });
    };
    let race = async {
        let mut pending = addrs.iter().copied();
        let mut attempts = JoinSet::new();
        let mut last_err = None;
        if let Some(a) = pending.next() {
            start(&mut attempts, a);
        }
        loop {
            let next_start = tokio::time::sleep(delay);
            tokio::select! {
                done = attempts.join_next() => match done {
                    Some(Ok(Ok(stream))) => return Ok(stream),
                    Some(Ok(Err((a, e)))) => {
                        last_err = Some(io::Error::new(e.kind(), format!("connect to {a}: {e}")));
                        if let Some(a) = pending.next() {
                            start(&mut attempts, a);
                        }
                    }
                    Some(Err(join)) => last_err = Some(io::Error::other(join)),
                    None => {
                        return Err(last_err.unwrap_or_else(|| {
                            io::Error::new(io::ErrorKind::NotFound, "no address to connect to")
                        }))
                    }
                },
                _ = next_start, if pending.len() > 0 => {
                    if let Some(a) = pending.next() {
                        start(&mut attempts, a);
                    }
                }
            }
        }
    };
    tokio::time::timeout(timeout, race).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {timeout:?}"),
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_alternate_v6_first() {
        let a: Vec<SocketAddr> = [
            "1.1.1.1:80",
            "2.2.2.2:80",
            "[::1]:80",
            "3.3.3.3:80",
            "[::2]:80",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let got: Vec<String> = interleave(a).iter().map(|a| a.to_string()).collect();
        assert_eq!(
            got,
            [
                "[::1]:80",
                "1.1.1.1:80",
                "[::2]:80",
                "2.2.2.2:80",
                "3.3.3.3:80"
            ]
        );
    }

    #[tokio::test]
    async fn a_dead_first_address_does_not_stop_the_second() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        }; // closed: refuses connections
        let s = happy_eyeballs(
            &[dead, live.local_addr().unwrap()],
            ATTEMPT_DELAY,
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        assert_eq!(s.peer_addr().unwrap(), live.local_addr().unwrap());
        let err = happy_eyeballs(&[dead], ATTEMPT_DELAY, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&dead.to_string()), "{err}");
    }

    #[tokio::test]
    async fn resolver_sweep_drops_expired_then_oldest_answers() {
        let r = Resolver::new(Duration::from_secs(60));
        for port in [1, 2, 3] {
            r.resolve("localhost", port).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        r.sweep(2);
        let ports = |r: &Resolver| {
            let mut p: Vec<u16> = r.cache.lock().unwrap().keys().map(|k| k.1).collect();
            p.sort_unstable();
            p
        };
        assert_eq!(ports(&r), [2, 3]);
        let expired = Resolver::new(Duration::ZERO);
        expired.resolve("localhost", 1).await.unwrap();
        expired.sweep(10);
        assert!(ports(&expired).is_empty());
    }

    #[tokio::test]
    async fn resolver_caches_within_its_ttl() {
        let r = Resolver::new(Duration::from_secs(60));
        let (a, cached) = r.resolve("localhost", 80).await.unwrap();
        assert!(!cached && !a.is_empty());
        let (b, cached) = r.resolve("LOCALHOST", 80).await.unwrap();
        assert!(cached);
        assert_eq!(a, b);
        assert!(r.resolve("no-such-host.invalid", 80).await.is_err());
    }
}
