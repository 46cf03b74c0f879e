//! Where a forward proxy may connect (R6; server-side request forgery).
//!
//! A forward proxy connects wherever its clients say, so without a policy
//! it is a door from outside into whatever the proxy's host can reach:
//! services on loopback (its own admin port), the cloud metadata service at
//! 169.254.169.254 (Alibaba's at 100.100.100.200), the private network
//! behind it. Squid's default configuration denies `to_localhost`; Stripe's
//! Smokescreen refuses private ranges after resolving. keepwire refuses all
//! of these by default and checks the addresses a name resolved to, inside
//! the connect path, on exactly the addresses then dialled: a name that
//! resolves (or rebinds) into a refused range is refused too, and nothing
//! is resolved again between the check and the connect.
//!
//! Precedence, most specific intent first: the proxy's own listening
//! addresses are always refused (a request to them is a loop or a way to
//! its admin port); then `deny` (an operator's explicit deny wins over an
//! explicit allow, as Envoy's RBAC evaluates deny policies first); then
//! `allow` (opens built-in ranges); then the built-in ranges; anything else
//! is allowed. IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are judged
//! as the IPv4 address they reach.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{LazyLock, RwLock};

use ipnet::IpNet;

/// Ranges refused unless allowed, with the rule named in the refusal.
const BUILT_IN: &[(&str, &str)] = &[
    // 0.0.0.0/8 is "this network": connecting to 0.0.0.0 reaches loopback.
    ("0.0.0.0/8", "unspecified"),
    ("::/128", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("169.254.0.0/16", "link-local"),
    ("fe80::/10", "link-local"),
    ("fc00::/7", "unique-local"),
    ("fec0::/10", "site-local"),
    // RFC 6598 carrier-grade NAT: inside a provider, and where some clouds
    // put their metadata service.
    ("100.64.0.0/10", "shared address space"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    ("240.0.0.0/4", "reserved"),
];

static RANGES: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    BUILT_IN
        .iter()
        .map(|(net, rule)| (net.parse().expect("a valid built-in range"), *rule))
        .collect()
});

/// Most own addresses remembered (listening addresses are few).
const MAX_OWN: usize = 64;

/// Which destinations a forward proxy may connect to. See the module docs
/// for the order rules apply in.
#[derive(Debug, Default)]
pub struct DestinationPolicy {
    /// Ranges opened despite the built-in refusals.
    pub allow: Vec<IpNet>,
    /// Ranges refused whatever else says (wins over `allow`).
    pub deny: Vec<IpNet>,
    /// The proxy's own listening and admin addresses (an unspecified IP
    /// stands for every local address on that port).
    own: RwLock<Vec<SocketAddr>>,
}

/// A destination the policy refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The host as the client named it.
    pub host: String,
    /// The address refused.
    pub addr: IpAddr,
    /// The rule that refused it (`loopback`, `private`, ...).
    pub rule: &'static str,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        if host.parse::<IpAddr>().is_ok_and(|ip| ip == self.addr) {
            write!(f, "destination {} refused: ", self.addr)?;
        } else {
            write!(f, "destination {} ({}) refused: ", self.host, self.addr)?;
        }
        match self.rule {
            "own address" => write!(f, "the proxy's own address"),
            "deny_destination" => write!(f, "denied by deny_destination"),
            rule => write!(f, "{rule} (allow with --allow-destination)"),
        }
    }
}

impl std::error::Error for Refused {}

impl DestinationPolicy {
    /// The default policy opened by `allow` and closed by `deny`.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        DestinationPolicy {
            allow,
            deny,
            own: RwLock::new(Vec::new()),
        }
    }

    /// Refuses `addr` from now on: one of the proxy's own listening or
    /// admin addresses (an unspecified IP: any local address on its port).
    pub fn add_own_address(&self, addr: SocketAddr) {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        if self.own_list().contains(&addr) {
            return;
        }
        let mut own = self.own.write().unwrap_or_else(|e| e.into_inner());
        if !own.contains(&addr) && own.len() < MAX_OWN {
            own.push(addr);
        }
    }

    fn own_list(&self) -> std::sync::RwLockReadGuard<'_, Vec<SocketAddr>> {
        self.own.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The rule that refuses `addr`, if any.
    pub fn check(&self, addr: SocketAddr) -> Result<(), &'static str> {
        let ip = addr.ip();
        let canonical = ip.to_canonical();
        if self.is_own(canonical, addr.port()) {
            return Err("own address");
        }
        let listed = |nets: &[IpNet]| {
            nets.iter()
                .any(|n| n.contains(&ip) || n.contains(&canonical))
        };
        if listed(&self.deny) {
            return Err("deny_destination");
        }
        if listed(&self.allow) {
            return Ok(());
        }
        match RANGES.iter().find(|(net, _)| net.contains(&canonical)) {
            Some((_, rule)) => Err(rule),
            None => Ok(()),
        }
    }

    fn is_own(&self, ip: IpAddr, port: u16) -> bool {
        self.own_list().iter().any(|own| {
            own.port() == port && (own.ip() == ip || (own.ip().is_unspecified() && is_local(ip)))
        })
    }

    /// The addresses `host` resolved to that may be dialled, in their
    /// order; an error naming the first refusal if none may (an IP literal
    /// `host` named without its brackets).
    pub fn filter(&self, host: &str, addrs: Vec<SocketAddr>) -> io::Result<Vec<SocketAddr>> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut first = None;
        let kept: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.check(*a) {
                Ok(()) => true,
                Err(rule) => {
                    first.get_or_insert(Refused {
                        host: host.to_string(),
                        addr: a.ip().to_canonical(),
                        rule,
                    });
                    false
                }
            })
            .collect();
        match (kept.is_empty(), first) {
            (true, Some(refused)) => Err(io::Error::new(io::ErrorKind::PermissionDenied, refused)),
            _ => Ok(kept),
        }
    }
}

/// Whether `ip` is one of this host's addresses: binding to it succeeds
/// only then (no interface list to read, no platform code).
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The refusal inside an error from [`DestinationPolicy::filter`], if it is
/// one.
pub fn refusal<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<Refused>())
        {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn built_in_ranges_are_refused_by_name() {
        let p = DestinationPolicy::default();
        for (addr, rule) in [
            ("127.0.0.1:80", "loopback"),
            ("127.9.9.9:80", "loopback"),
            ("[::1]:80", "loopback"),
            ("[::ffff:127.0.0.1]:80", "loopback"),
            ("169.254.169.254:80", "link-local"),
            ("[fe80::1]:80", "link-local"),
            ("10.1.2.3:80", "private"),
            ("172.31.0.1:80", "private"),
            ("192.168.1.1:80", "private"),
            ("[::ffff:10.0.0.1]:80", "private"),
            ("[fd00::1]:80", "unique-local"),
            ("0.0.0.0:80", "unspecified"),
            ("[::]:80", "unspecified"),
            ("100.100.100.200:80", "shared address space"),
        ] {
            assert_eq!(p.check(sa(addr)), Err(rule), "{addr}");
        }
        for ok in ["93.184.215.14:80", "172.32.0.1:443", "[2606:4700::1]:443"] {
            assert_eq!(p.check(sa(ok)), Ok(()), "{ok}");
        }
    }

    #[test]
    fn deny_wins_over_allow_and_allow_opens_built_ins() {
        let p = DestinationPolicy::new(
            vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
            vec![
                "10.1.0.0/16".parse().unwrap(),
                "8.8.8.8/32".parse().unwrap(),
            ],
        );
        assert_eq!(p.check(sa("127.0.0.1:80")), Ok(()));
        assert_eq!(p.check(sa("[::ffff:127.0.0.1]:80")), Ok(()));
        assert_eq!(p.check(sa("10.2.0.1:80")), Ok(()));
        assert_eq!(p.check(sa("10.1.0.1:80")), Err("deny_destination"));
        assert_eq!(p.check(sa("8.8.8.8:53")), Err("deny_destination"));
        assert_eq!(p.check(sa("[::1]:80")), Err("loopback"));
    }

    #[test]
    fn own_addresses_are_refused_even_when_allowed() {
        let p = DestinationPolicy::new(vec!["0.0.0.0/0".parse().unwrap()], vec![]);
        p.add_own_address(sa("127.0.0.1:9090"));
        p.add_own_address(sa("0.0.0.0:8081"));
        assert_eq!(p.check(sa("127.0.0.1:9090")), Err("own address"));
        assert_eq!(p.check(sa("127.0.0.1:9091")), Ok(()));
        // Unspecified: every local address on that port.
        assert_eq!(p.check(sa("127.0.0.2:8081")), Err("own address"));
        assert_eq!(p.check(sa("93.184.215.14:8081")), Ok(()));
    }

    #[test]
    fn filter_keeps_allowed_addresses_and_names_the_first_refusal() {
        let p = DestinationPolicy::default();
        let kept = p
            .filter(
                "mixed.test",
                vec![sa("127.0.0.1:80"), sa("93.184.215.14:80")],
            )
            .unwrap();
        assert_eq!(kept, vec![sa("93.184.215.14:80")]);
        let err = p
            .filter("localhost", vec![sa("[::1]:80"), sa("127.0.0.1:80")])
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(
            err.to_string(),
            "destination localhost (::1) refused: loopback (allow with --allow-destination)"
        );
        assert_eq!(refusal(&err).unwrap().rule, "loopback");
        let err = p.filter("127.0.0.1", vec![sa("127.0.0.1:80")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "destination 127.0.0.1 refused: loopback (allow with --allow-destination)"
        );
    }
}
