//! The SSRF guard: webhook URLs come from job messages, so without it any producer could make
//! a worker call its cloud metadata endpoint, an admin port on loopback or a service on the
//! private network.
//!
//! Every address a host resolves to is judged; one forbidden address refuses the host, because
//! the connector may try any of them. IPv6 forms that carry an IPv4 address (mapped, compatible,
//! NAT64, 6to4) are judged by that IPv4 address. The same check runs inside the HTTP client's
//! resolver ([`GuardedResolver`]), so a name that re-resolves to a forbidden address between the
//! check and the connection (DNS rebinding) is still refused.
//!
//! Operators may allow exceptions (`webhooks.allow`): addresses, CIDRs or exact host names.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Decides which URLs and addresses a webhook may reach.
#[derive(Clone, Debug, Default)]
pub struct SsrfGuard {
    allowed_nets: Vec<IpNet>,
    /// Lower case, without a trailing dot.
    allowed_hosts: Vec<String>,
}

/// A `webhooks.allow` entry that is neither an address, a CIDR nor a host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhooks.allow entry `{0}` is neither an IP address, a CIDR nor a host name")]
pub struct GuardError(pub String);

/// Why a URL was not called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("scheme `{0}` is not allowed for webhooks (only http and https)")]
    Scheme(String),
    #[error("webhook URLs must not carry a user name or password")]
    Userinfo,
    #[error("the webhook URL has no host")]
    NoHost,
    #[error("host `{host}` resolves to {address}, which is {reason}")]
    Address {
        host: String,
        address: IpAddr,
        reason: Forbidden,
    },
    /// The only variant that is not a decision: the name could not be resolved (now).
    #[error("host `{host}` could not be resolved: {error}")]
    Lookup { host: String, error: String },
}

/// Why an address may not be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    pub reason: Reason,
    /// Set when the address is an IPv6 form carrying this IPv4 address; `reason` is about it.
    pub embedded_ipv4: Option<Ipv4Addr>,
}

/// The kind of range a forbidden address is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    CloudMetadata,
    Loopback,
    Private,
    LinkLocal,
    SharedAddressSpace,
    Unspecified,
    ThisNetwork,
    Broadcast,
    Multicast,
    Documentation,
    Benchmarking,
    UniqueLocal,
    /// Reserved or special-purpose: not globally reachable unicast.
    Reserved,
}

/// A [`reqwest`] resolver that refuses forbidden addresses at connect time.
///
/// reqwest does not call a resolver for URLs whose host is an IP literal; [`SsrfGuard::check_url`]
/// covers those before the request.
#[derive(Clone, Debug)]
pub struct GuardedResolver(pub Arc<SsrfGuard>);

impl SsrfGuard {
    /// A guard that allows the `allow` entries (`10.1.2.3`, `10.0.0.0/8`, `::1/128`,
    /// `hooks.internal`) despite the rules.
    pub fn new(allow: &[String]) -> Result<SsrfGuard, GuardError> {
        let mut guard = SsrfGuard::default();
        for entry in allow {
            let trimmed = entry.trim();
            let unbracketed = trimmed
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .unwrap_or(trimmed);
            if let Ok(net) = unbracketed.parse::<IpNet>() {
                guard.allowed_nets.push(net.trunc());
                continue;
            }
            // The URL parser's host rules, so an entry means what it would mean in a URL
            // (`127.1` is 127.0.0.1, names are IDNA-normalised and lower-cased).
            match Host::parse(trimmed) {
                Ok(Host::Ipv4(address)) => {
                    guard.allowed_nets.push(IpNet::from(IpAddr::V4(address)));
                }
                Ok(Host::Ipv6(address)) => {
                    guard.allowed_nets.push(IpNet::from(IpAddr::V6(address)));
                }
                Ok(Host::Domain(name)) if !name.is_empty() => {
                    guard.allowed_hosts.push(normalize_host(&name));
                }
                Ok(Host::Domain(_)) | Err(_) => return Err(GuardError(entry.clone())),
            }
        }
        Ok(guard)
    }

    /// Checks what can be checked without DNS: the scheme, userinfo and an IP-literal host.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(Refused::Scheme(other.to_owned())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Userinfo);
        }
        match url.host() {
            None => Err(Refused::NoHost),
            Some(Host::Domain(_)) => Ok(()),
            Some(Host::Ipv4(address)) => self.check_address(url_host(url), address.into()),
            Some(Host::Ipv6(address)) => self.check_address(url_host(url), address.into()),
        }
    }

    /// The addresses `url` may be called at: all of what its host resolves to, or a refusal
    /// naming the first forbidden address.
    pub async fn resolve(&self, url: &Url) -> Result<Vec<SocketAddr>, Refused> {
        self.check_url(url)?;
        let port = url.port_or_known_default().unwrap_or(80);
        match url.host() {
            None => Err(Refused::NoHost),
            Some(Host::Ipv4(address)) => Ok(vec![SocketAddr::new(address.into(), port)]),
            Some(Host::Ipv6(address)) => Ok(vec![SocketAddr::new(address.into(), port)]),
            Some(Host::Domain(name)) => self.resolve_host(name, port).await,
        }
    }

    /// Resolves `host` and judges every address.
    pub async fn resolve_host(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        if let Ok(address) = host.parse::<IpAddr>() {
            self.check_address(host, address)?;
            return Ok(vec![SocketAddr::new(address, port)]);
        }
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|error| Refused::Lookup {
                host: host.to_owned(),
                error: error.to_string(),
            })?
            .collect();
        if addresses.is_empty() {
            return Err(Refused::Lookup {
                host: host.to_owned(),
                error: "no addresses".to_owned(),
            });
        }
        if self.host_allowed(host) {
            return Ok(addresses);
        }
        for address in &addresses {
            self.check_address(host, address.ip())?;
        }
        Ok(addresses)
    }

    /// Refuses `address` (reached through `host`) unless it is allowed.
    pub fn check_address(&self, host: &str, address: IpAddr) -> Result<(), Refused> {
        if self.address_allowed(address) {
            return Ok(());
        }
        match forbidden(address) {
            None => Ok(()),
            Some(reason) => Err(Refused::Address {
                host: host.to_owned(),
                address,
                reason,
            }),
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.allowed_hosts.contains(&normalize_host(host))
    }

    fn address_allowed(&self, address: IpAddr) -> bool {
        // An allowed IPv4 address is allowed in its IPv6 disguises too, and the other way round:
        // both reach the same host.
        let embedded = match address {
            IpAddr::V4(_) => None,
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
        };
        self.allowed_nets
            .iter()
            .any(|net| net.contains(&address) || embedded.is_some_and(|ipv4| net.contains(&ipv4)))
    }
}

impl Refused {
    /// Whether trying again later could succeed: only for a failed lookup.
    pub fn is_retryable(&self) -> bool {
        match self {
            Refused::Lookup { .. } => true,
            Refused::Scheme(_) | Refused::Userinfo | Refused::NoHost | Refused::Address { .. } => {
                false
            }
        }
    }
}

/// Why `address` may not be called, regardless of any allowlist; `None` when it is public.
pub fn forbidden(address: IpAddr) -> Option<Forbidden> {
    match address {
        IpAddr::V4(v4) => forbidden_v4(v4).map(|reason| Forbidden {
            reason,
            embedded_ipv4: None,
        }),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(ipv4) => forbidden_v4(ipv4).map(|reason| Forbidden {
                reason,
                embedded_ipv4: Some(ipv4),
            }),
            None => forbidden_v6(v6).map(|reason| Forbidden {
                reason,
                embedded_ipv4: None,
            }),
        },
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.0);
        Box::pin(async move {
            // Port 0: reqwest puts in the URL's port or the scheme's default.
            let addresses = guard.resolve_host(name.as_str(), 0).await?;
            let addresses: Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedded_ipv4 {
            None => self.reason.fmt(f),
            Some(ipv4) => write!(f, "a form of IPv4 {ipv4}, which is {}", self.reason),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::CloudMetadata => "a cloud metadata endpoint",
            Reason::Loopback => "loopback",
            Reason::Private => "private",
            Reason::LinkLocal => "link-local",
            Reason::SharedAddressSpace => "shared address space (CGNAT, 100.64.0.0/10)",
            Reason::Unspecified => "the unspecified address",
            Reason::ThisNetwork => "\"this network\" (0.0.0.0/8)",
            Reason::Broadcast => "broadcast",
            Reason::Multicast => "multicast",
            Reason::Documentation => "reserved for documentation",
            Reason::Benchmarking => "reserved for benchmarking",
            Reason::UniqueLocal => "unique-local (fc00::/7)",
            Reason::Reserved => "reserved, not globally reachable",
        })
    }
}

/// IPv4 special-purpose ranges (IANA registry), most specific first so the reason is precise.
const V4_RULES: &[(Ipv4Net, Reason)] = &[
    // AWS, GCP, Azure, OpenStack; Alibaba Cloud.
    (v4net([169, 254, 169, 254], 32), Reason::CloudMetadata),
    (v4net([100, 100, 100, 200], 32), Reason::CloudMetadata),
    (v4net([255, 255, 255, 255], 32), Reason::Broadcast),
    (v4net([0, 0, 0, 0], 8), Reason::ThisNetwork),
    (v4net([10, 0, 0, 0], 8), Reason::Private),
    (v4net([100, 64, 0, 0], 10), Reason::SharedAddressSpace),
    (v4net([127, 0, 0, 0], 8), Reason::Loopback),
    (v4net([169, 254, 0, 0], 16), Reason::LinkLocal),
    (v4net([172, 16, 0, 0], 12), Reason::Private),
    // IETF protocol assignments (includes Oracle Cloud's metadata at 192.0.0.192).
    (v4net([192, 0, 0, 0], 24), Reason::Reserved),
    (v4net([192, 0, 2, 0], 24), Reason::Documentation),
    // The deprecated 6to4 relay anycast.
    (v4net([192, 88, 99, 0], 24), Reason::Reserved),
    (v4net([192, 168, 0, 0], 16), Reason::Private),
    (v4net([198, 18, 0, 0], 15), Reason::Benchmarking),
    (v4net([198, 51, 100, 0], 24), Reason::Documentation),
    (v4net([203, 0, 113, 0], 24), Reason::Documentation),
    (v4net([224, 0, 0, 0], 4), Reason::Multicast),
    (v4net([240, 0, 0, 0], 4), Reason::Reserved),
];

/// IPv6 ranges judged on their own (the IPv4-carrying forms are handled before these).
const V6_RULES: &[(Ipv6Net, Reason)] = &[
    // AWS's IPv6 metadata endpoint (Nitro).
    (
        v6net([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
        Reason::CloudMetadata,
    ),
    (v6net([0, 0, 0, 0, 0, 0, 0, 0], 128), Reason::Unspecified),
    (v6net([0, 0, 0, 0, 0, 0, 0, 1], 128), Reason::Loopback),
    (
        v6net([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        Reason::Documentation,
    ),
    (
        v6net([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        Reason::Documentation,
    ),
    (
        v6net([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48),
        Reason::Benchmarking,
    ),
    // IETF protocol assignments: Teredo (which hides an IPv4 address), ORCHID, AMT, ...
    (v6net([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), Reason::Reserved),
    (v6net([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), Reason::UniqueLocal),
    (v6net([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Reason::LinkLocal),
    (v6net([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Reason::Multicast),
];

fn forbidden_v4(address: Ipv4Addr) -> Option<Reason> {
    V4_RULES
        .iter()
        .find(|(net, _)| net.contains(&address))
        .map(|(_, kind)| *kind)
}

fn forbidden_v6(address: Ipv6Addr) -> Option<Reason> {
    if let Some((_, reason)) = V6_RULES.iter().find(|(net, _)| net.contains(&address)) {
        return Some(*reason);
    }
    // Only 2000::/3 is allocated for global unicast; the rest (discard-only 100::/64, local-use
    // NAT64 64:ff9b:1::/48, site-local fec0::/10, SIIT ::ffff:0:0:0/96, ...) is special.
    let global_unicast = v6net([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);
    if global_unicast.contains(&address) {
        None
    } else {
        Some(Reason::Reserved)
    }
}

/// The IPv4 address an IPv6 address stands for, where it is one of the forms a connection
/// ends up at that IPv4 address: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:aabb:ccdd::/48`.
fn embedded_ipv4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = address.segments();
    let octets = address.octets();
    let low = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    match segments {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // `::` and `::1` are IPv6's own unspecified and loopback addresses.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, _, _, _, _, _, _, _] => {
            Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]))
        }
        _ => None,
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The host as written in the URL (with brackets for IPv6), for messages.
fn url_host(url: &Url) -> &str {
    url.host_str().unwrap_or_default()
}

const fn v4net(octets: [u8; 4], prefix: u8) -> Ipv4Net {
    let [a, b, c, d] = octets;
    match Ipv4Net::new(Ipv4Addr::new(a, b, c, d), prefix) {
        Ok(net) => net,
        Err(_) => panic!("invalid IPv4 prefix length"),
    }
}

const fn v6net(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    match Ipv6Net::new(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix) {
        Ok(net) => net,
        Err(_) => panic!("invalid IPv6 prefix length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(entries: &[&str]) -> SsrfGuard {
        let entries: Vec<String> = entries.iter().map(|entry| (*entry).to_owned()).collect();
        SsrfGuard::new(&entries).unwrap()
    }

    fn check(guard: &SsrfGuard, address: &str) -> Result<(), Refused> {
        guard.check_address("example.test", address.parse().unwrap())
    }

    #[test]
    fn judges_addresses() {
        use Reason as R;
        let plain = |reason| {
            Some(Forbidden {
                reason,
                embedded_ipv4: None,
            })
        };
        let embeds = |ipv4: &str, reason| {
            Some(Forbidden {
                reason,
                embedded_ipv4: Some(ipv4.parse().unwrap()),
            })
        };
        let cases: &[(&str, Option<Forbidden>)] = &[
            // Public.
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.215.14", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.0.1.1", None),
            ("198.17.255.255", None),
            ("198.20.0.0", None),
            ("223.255.255.255", None),
            ("2606:4700:4700::1111", None),
            ("2001:4860:4860::8888", None),
            ("2a00:1450:4001:81b::200e", None),
            // IPv4 special ranges.
            ("127.0.0.1", plain(R::Loopback)),
            ("127.255.255.254", plain(R::Loopback)),
            ("10.0.0.1", plain(R::Private)),
            ("172.16.0.1", plain(R::Private)),
            ("172.31.255.255", plain(R::Private)),
            ("192.168.1.1", plain(R::Private)),
            ("169.254.0.1", plain(R::LinkLocal)),
            ("169.254.169.254", plain(R::CloudMetadata)),
            ("169.254.170.2", plain(R::LinkLocal)),
            ("100.64.0.1", plain(R::SharedAddressSpace)),
            ("100.127.255.255", plain(R::SharedAddressSpace)),
            ("100.100.100.200", plain(R::CloudMetadata)),
            ("0.0.0.0", plain(R::ThisNetwork)),
            ("0.1.2.3", plain(R::ThisNetwork)),
            ("255.255.255.255", plain(R::Broadcast)),
            ("224.0.0.1", plain(R::Multicast)),
            ("239.255.255.250", plain(R::Multicast)),
            ("240.0.0.1", plain(R::Reserved)),
            ("192.0.0.192", plain(R::Reserved)),
            ("192.88.99.1", plain(R::Reserved)),
            ("192.0.2.1", plain(R::Documentation)),
            ("198.51.100.7", plain(R::Documentation)),
            ("203.0.113.9", plain(R::Documentation)),
            ("198.18.0.1", plain(R::Benchmarking)),
            ("198.19.255.255", plain(R::Benchmarking)),
            // IPv6 special ranges.
            ("::", plain(R::Unspecified)),
            ("::1", plain(R::Loopback)),
            ("fe80::1", plain(R::LinkLocal)),
            ("febf::1", plain(R::LinkLocal)),
            ("fc00::1", plain(R::UniqueLocal)),
            ("fd12:3456::1", plain(R::UniqueLocal)),
            ("fd00:ec2::254", plain(R::CloudMetadata)),
            ("ff02::1", plain(R::Multicast)),
            ("2001:db8::1", plain(R::Documentation)),
            ("3fff::1", plain(R::Documentation)),
            ("2001:2::1", plain(R::Benchmarking)),
            ("2001::1", plain(R::Reserved)),
            ("100::1", plain(R::Reserved)),
            ("64:ff9b:1::1", plain(R::Reserved)),
            ("fec0::1", plain(R::Reserved)),
            ("::ffff:0:7f00:1", plain(R::Reserved)),
            ("4000::1", plain(R::Reserved)),
            // IPv6 forms carrying an IPv4 address.
            ("::ffff:127.0.0.1", embeds("127.0.0.1", R::Loopback)),
            ("::ffff:7f00:1", embeds("127.0.0.1", R::Loopback)),
            (
                "::ffff:169.254.169.254",
                embeds("169.254.169.254", R::CloudMetadata),
            ),
            ("::ffff:10.1.2.3", embeds("10.1.2.3", R::Private)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", embeds("127.0.0.1", R::Loopback)),
            ("::192.168.0.1", embeds("192.168.0.1", R::Private)),
            ("::0.0.0.2", embeds("0.0.0.2", R::ThisNetwork)),
            ("::8.8.8.8", None),
            ("64:ff9b::127.0.0.1", embeds("127.0.0.1", R::Loopback)),
            (
                "64:ff9b::a9fe:a9fe",
                embeds("169.254.169.254", R::CloudMetadata),
            ),
            ("64:ff9b::8.8.8.8", None),
            ("2002:7f00:1::", embeds("127.0.0.1", R::Loopback)),
            ("2002:c0a8:101::1", embeds("192.168.1.1", R::Private)),
            (
                "2002:a9fe:a9fe::",
                embeds("169.254.169.254", R::CloudMetadata),
            ),
            ("2002:808:808::1", None),
        ];
        let guard = SsrfGuard::default();
        for (address, expected) in cases {
            let parsed: IpAddr = address.parse().unwrap();
            assert_eq!(forbidden(parsed), *expected, "{address}");
            assert_eq!(
                check(&guard, address).is_ok(),
                expected.is_none(),
                "{address}"
            );
        }
    }

    #[test]
    fn allows_exceptions_by_address_and_cidr() {
        let guard = allow(&[
            "127.0.0.1",
            "10.0.0.0/8",
            "[::1]",
            "fd00::/8",
            " 192.168.1.5/24 ",
        ]);
        let cases = [
            ("127.0.0.1", true),
            ("::ffff:127.0.0.1", true),
            ("127.0.0.2", false),
            ("10.200.0.1", true),
            ("::ffff:10.200.0.1", true),
            ("11.0.0.1", true),
            ("172.16.0.1", false),
            ("::1", true),
            ("fd12::1", true),
            ("fd00:ec2::254", true),
            ("fe80::1", false),
            // `192.168.1.5/24` means the whole /24.
            ("192.168.1.200", true),
            ("192.168.2.1", false),
            ("169.254.169.254", false),
        ];
        for (address, allowed) in cases {
            assert_eq!(check(&guard, address).is_ok(), allowed, "{address}");
        }
    }

    #[test]
    fn refuses_malformed_allow_entries() {
        for entry in ["", "http://x", "10.0.0.0/33", "a b", "::1/129", "x:1"] {
            let entries = vec![entry.to_owned()];
            assert_eq!(
                SsrfGuard::new(&entries).unwrap_err(),
                GuardError(entry.to_owned()),
                "{entry:?}"
            );
        }
    }

    #[test]
    fn checks_scheme_userinfo_and_literal_hosts() {
        let guard = allow(&["10.0.0.7"]);
        let cases: &[(&str, Result<(), Refused>)] = &[
            ("https://hooks.example.com/x", Ok(())),
            ("http://hooks.example.com:8080/x", Ok(())),
            ("https://8.8.8.8/x", Ok(())),
            ("http://10.0.0.7/x", Ok(())),
            (
                "ftp://hooks.example.com/x",
                Err(Refused::Scheme("ftp".into())),
            ),
            ("file:///etc/passwd", Err(Refused::Scheme("file".into()))),
            ("https://user@hooks.example.com/", Err(Refused::Userinfo)),
            ("https://:pw@hooks.example.com/", Err(Refused::Userinfo)),
            (
                "http://127.0.0.1:9000/",
                Err(Refused::Address {
                    host: "127.0.0.1".into(),
                    address: "127.0.0.1".parse().unwrap(),
                    reason: Forbidden {
                        reason: Reason::Loopback,
                        embedded_ipv4: None,
                    },
                }),
            ),
            (
                // WHATWG URL parsing turns these spellings into 127.0.0.1.
                "http://2130706433/",
                Err(Refused::Address {
                    host: "127.0.0.1".into(),
                    address: "127.0.0.1".parse().unwrap(),
                    reason: Forbidden {
                        reason: Reason::Loopback,
                        embedded_ipv4: None,
                    },
                }),
            ),
            (
                "http://[::ffff:169.254.169.254]/latest/meta-data",
                Err(Refused::Address {
                    host: "[::ffff:a9fe:a9fe]".into(),
                    address: "::ffff:169.254.169.254".parse().unwrap(),
                    reason: Forbidden {
                        reason: Reason::CloudMetadata,
                        embedded_ipv4: Some(Ipv4Addr::new(169, 254, 169, 254)),
                    },
                }),
            ),
        ];
        for (url, expected) in cases {
            let url: Url = url.parse().unwrap();
            assert_eq!(guard.check_url(&url), *expected, "{url}");
        }
        for spelling in ["http://0x7f.1/", "http://0177.0.0.1/", "http://127.1/"] {
            let url: Url = spelling.parse().unwrap();
            assert!(guard.check_url(&url).is_err(), "{spelling}");
        }
    }

    #[test]
    fn refusals_name_host_address_and_reason() {
        let refused = Refused::Address {
            host: "evil.example".into(),
            address: "::ffff:127.0.0.1".parse().unwrap(),
            reason: Forbidden {
                reason: Reason::Loopback,
                embedded_ipv4: Some(Ipv4Addr::LOCALHOST),
            },
        };
        assert_eq!(
            refused.to_string(),
            "host `evil.example` resolves to ::ffff:127.0.0.1, which is a form of IPv4 127.0.0.1, \
             which is loopback"
        );
        assert!(!refused.is_retryable());
        let lookup = Refused::Lookup {
            host: "x".into(),
            error: "nxdomain".into(),
        };
        assert!(lookup.is_retryable());
    }

    #[tokio::test]
    async fn resolve_refuses_names_that_reach_forbidden_addresses() {
        let url: Url = "http://localhost:8080/hook".parse().unwrap();
        let refused = SsrfGuard::default().resolve(&url).await.unwrap_err();
        assert!(
            matches!(&refused, Refused::Address { host, .. } if host == "localhost"),
            "{refused:?}"
        );

        for entry in ["localhost", "LocalHost."] {
            let addresses = allow(&[entry]).resolve(&url).await.unwrap();
            assert!(!addresses.is_empty());
            assert!(
                addresses
                    .iter()
                    .all(|address| address.ip().is_loopback() && address.port() == 8080),
                "{addresses:?}"
            );
        }

        let literal: Url = "http://127.0.0.1:81/".parse().unwrap();
        assert_eq!(
            allow(&["127.0.0.0/8"]).resolve(&literal).await.unwrap(),
            vec!["127.0.0.1:81".parse::<SocketAddr>().unwrap()]
        );
    }

    #[tokio::test]
    async fn resolver_applies_the_guard() {
        let resolver = GuardedResolver(Arc::new(SsrfGuard::default()));
        let error = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(addresses) => panic!("resolved to {:?}", addresses.collect::<Vec<_>>()),
            Err(error) => error,
        };
        let refused = error.downcast_ref::<Refused>().unwrap();
        assert!(!refused.is_retryable(), "{refused}");

        let resolver = GuardedResolver(Arc::new(allow(&["localhost"])));
        let addresses: Vec<_> = resolver
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addresses.is_empty());
    }
}
