//! Where a receiver may send. Receivers in the configuration file are trusted with any
//! destination; receivers defined through the API are not: without a rule, a
//! `receivers:write` holder could point a webhook at the collector's own loopback services,
//! a cloud metadata endpoint or an internal network and read the answers through test-send
//! (server-side request forgery). The rule is checked where the address is known: on the
//! literal IP of a URL when the receiver is built, and on every DNS answer at connect time
//! (a resolver that drops forbidden addresses), so a name that later resolves elsewhere
//! (DNS rebinding) is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// One `[api] receiver_url_allow` entry: a CIDR block or a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowEntry {
    Net { addr: IpAddr, prefix: u8 },
    Host(String),
}

/// The destinations a receiver may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destinations {
    /// Anything (receivers from the configuration file).
    Any,
    /// Public addresses only: loopback, private, link-local, shared (CGNAT), multicast,
    /// unspecified and documentation ranges refused (the default for API receivers).
    Public,
    /// Only these networks and host names (`[api] receiver_url_allow` when set).
    Only(Arc<Vec<AllowEntryText>>),
}

/// A parsed allow-list entry, kept with its text for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntryText {
    entry: AllowEntry,
    text: String,
}

impl Destinations {
    /// Parses `receiver_url_allow`: each entry `ADDR/PREFIX`, a bare address, or a host name
    /// (letters, digits, `-` and `.`). An empty list allows nothing.
    pub fn only(entries: &[String]) -> Result<Destinations, String> {
        let mut parsed = Vec::with_capacity(entries.len());
        for text in entries {
            parsed.push(AllowEntryText {
                entry: parse_entry(text)?,
                text: text.clone(),
            });
        }
        Ok(Destinations::Only(Arc::new(parsed)))
    }

    /// Whether `host` (as written in the receiver) at `ip` may be reached.
    pub fn allows(&self, host: &str, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match self {
            Destinations::Any => true,
            Destinations::Public => is_public(ip),
            Destinations::Only(list) => list.iter().any(|e| match &e.entry {
                AllowEntry::Net { addr, prefix } => in_net(ip, *addr, *prefix),
                AllowEntry::Host(h) => h.eq_ignore_ascii_case(host.trim_end_matches('.')),
            }),
        }
    }

    /// Checks a URL's host when it is a literal address (names are checked when resolved).
    /// The error names the host, never the rest of the URL (which may hold a secret).
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        let host = parsed.host_str().ok_or("the URL has no host")?;
        match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => self.check_ip(host, ip),
            // A name: checked on every resolution (see `resolver`).
            Err(_) => Ok(()),
        }
    }

    /// Checks a host name or literal address by resolving it now (for clients that resolve
    /// on their own, such as SMTP).
    pub fn check_host(&self, host: &str, port: u16) -> Result<(), String> {
        if matches!(self, Destinations::Any) {
            return Ok(());
        }
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return self.check_ip(host, ip);
        }
        let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
        // Every address: the client picks one itself, so a name with one public and one
        // internal address must not pass.
        if !addrs.is_empty() && addrs.iter().all(|a| self.allows(host, a.ip())) {
            Ok(())
        } else {
            Err(self.refusal(host))
        }
    }

    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        if self.allows(host, ip) {
            Ok(())
        } else {
            Err(self.refusal(host))
        }
    }

    fn refusal(&self, host: &str) -> String {
        match self {
            Destinations::Only(_) => {
                format!("{host} is not in [api] receiver_url_allow")
            }
            _ => format!(
                "{host} is a loopback, private or link-local destination, which receivers \
                 defined through the API may not reach unless [api] receiver_url_allow lists it"
            ),
        }
    }

    /// A DNS resolver for reqwest that keeps only the addresses this rule allows.
    pub fn resolver(&self) -> Option<GuardedResolver> {
        match self {
            Destinations::Any => None,
            other => Some(GuardedResolver {
                rule: other.clone(),
            }),
        }
    }
}

/// See [`Destinations::resolver`].
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    rule: Destinations,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let rule = self.rule.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found.filter(|a| rule.allows(&host, a.ip())).collect();
            if allowed.is_empty() {
                return Err(rule.refusal(&host).into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn parse_entry(text: &str) -> Result<AllowEntry, String> {
    let bad = |why: &str| format!("receiver_url_allow entry {text:?}: {why}");
    if let Some((addr, prefix)) = text.split_once('/') {
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix.parse().map_err(|_| bad("not a prefix length"))?;
        if prefix > max {
            return Err(bad("prefix too long"));
        }
        return Ok(AllowEntry::Net {
            addr: canonical(addr),
            prefix,
        });
    }
    if let Ok(addr) = text.parse::<IpAddr>() {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        return Ok(AllowEntry::Net {
            addr: canonical(addr),
            prefix,
        });
    }
    let valid = !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid {
        return Err(bad("neither ADDR/PREFIX, an address, nor a host name"));
    }
    Ok(AllowEntry::Host(
        text.trim_end_matches('.').to_ascii_lowercase(),
    ))
}

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are judged as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let blocked: [(Ipv4Addr, u8); 11] = [
        (Ipv4Addr::new(0, 0, 0, 0), 8),      // "this network"
        (Ipv4Addr::new(10, 0, 0, 0), 8),     // private
        (Ipv4Addr::new(100, 64, 0, 0), 10),  // shared address space (CGNAT)
        (Ipv4Addr::new(127, 0, 0, 0), 8),    // loopback
        (Ipv4Addr::new(169, 254, 0, 0), 16), // link-local, cloud metadata
        (Ipv4Addr::new(172, 16, 0, 0), 12),  // private
        (Ipv4Addr::new(192, 0, 0, 0), 24),   // IETF protocol assignments
        (Ipv4Addr::new(192, 168, 0, 0), 16), // private
        (Ipv4Addr::new(198, 18, 0, 0), 15),  // benchmarking
        (Ipv4Addr::new(224, 0, 0, 0), 4),    // multicast
        (Ipv4Addr::new(240, 0, 0, 0), 4),    // reserved, broadcast
    ];
    !blocked
        .iter()
        .any(|&(net, prefix)| in_net(IpAddr::V4(ip), IpAddr::V4(net), prefix))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let blocked: [(Ipv6Addr, u8); 6] = [
        (Ipv6Addr::UNSPECIFIED, 128),
        (Ipv6Addr::LOCALHOST, 128),
        (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), // unique local
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), // multicast
        (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96), // NAT64 of any IPv4
    ];
    !blocked
        .iter()
        .any(|&(net, prefix)| in_net(IpAddr::V6(ip), IpAddr::V6(net), prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn public_refuses_internal_ranges() {
        let public = Destinations::Public;
        for internal in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!public.allows("h", ip(internal)), "{internal}");
        }
        for outside in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(public.allows("h", ip(outside)), "{outside}");
        }
        assert!(Destinations::Any.allows("h", ip("127.0.0.1")));
    }

    #[test]
    fn allow_list_matches_networks_and_names_only() {
        let only = Destinations::only(&[
            "127.0.0.0/8".into(),
            "hooks.example.net".into(),
            "2001:db8::/32".into(),
            "192.0.2.7".into(),
        ])
        .expect("valid");
        assert!(only.allows("x", ip("127.0.0.2")));
        assert!(only.allows("x", ip("::ffff:127.0.0.2")));
        assert!(only.allows("HOOKS.example.net.", ip("10.0.0.1")));
        assert!(only.allows("x", ip("2001:db8::5")));
        assert!(only.allows("x", ip("192.0.2.7")));
        assert!(!only.allows("x", ip("192.0.2.8")));
        assert!(!only.allows("x", ip("1.1.1.1")), "not listed");
        for bad in ["10.0.0.0/33", "not a host!", "", "1.2.3.4/x"] {
            assert!(Destinations::only(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn literal_urls_checked_at_build() {
        let public = Destinations::Public;
        assert!(public.check_url("http://127.0.0.1:9/x").is_err());
        assert!(public.check_url("http://[::1]:9/x").is_err());
        assert!(public
            .check_url("https://hooks.slack.com/services/T/B/C")
            .is_ok());
        let e = public
            .check_url("http://169.254.169.254/latest?token=s3cret")
            .expect_err("metadata");
        assert!(!e.contains("s3cret"), "{e}");
        assert!(public.check_host("127.0.0.1", 25).is_err());
        assert!(public.check_host("localhost", 25).is_err());
    }

    #[tokio::test]
    async fn resolver_drops_forbidden_answers() {
        use reqwest::dns::Resolve;
        let resolver = Destinations::Public.resolver().expect("restricted");
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let err = resolver.resolve(name).await.err().expect("refused");
        assert!(err.to_string().contains("localhost"), "{err}");
        let only = Destinations::only(&["127.0.0.0/8".into()]).expect("valid");
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let addrs: Vec<SocketAddr> = only
            .resolver()
            .expect("restricted")
            .resolve(name)
            .await
            .expect("allowed")
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
