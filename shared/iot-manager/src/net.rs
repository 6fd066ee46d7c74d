//! Outbound HTTP for webhooks and Azure IoT Hub, guarded against SSRF: only public unicast
//! addresses are reached (no loopback, link-local, private, shared, multicast or unspecified
//! address) unless an allowed network names them (`IOT_MANAGER_ALLOWED_NETWORKS`; the local
//! stack and tests allow loopback). The check runs when credentials are stored (every address
//! the URL's host resolves to) and again on every connection: the client's resolver drops
//! refused addresses, so a name that later resolves elsewhere (DNS rebinding) is refused too,
//! and an IP literal is checked before the request. No redirects, no proxies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The text upstream gives a stored URL whose host resolves to a refused address.
pub const RESERVED_HOST: &str = "hostname resolves to reserved address";
/// The text of a refused connection.
pub const RESERVED_DESTINATION: &str = "destination address is in reserved address range";

#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("{0}")]
    Invalid(String),
    #[error("lookup {0}: no such host")]
    Lookup(String),
    #[error("{RESERVED_HOST}")]
    Reserved,
}

/// An IP network (`10.0.0.0/8`, `::1/128`; a bare address is one host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid network {text:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid network {text:?}"))?,
        };
        Ok(Network { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> Option<(u128, u32)> {
            match ip {
                IpAddr::V4(v4) => Some((u128::from(u32::from(v4)) << 96, 32)),
                IpAddr::V6(v6) => Some((u128::from(v6), 128)),
            }
        };
        let ip = canonical(ip);
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let (Some((a, _)), Some((b, _))) = (bits(self.addr), bits(ip)) else {
            return false;
        };
        let mask = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.prefix))
        };
        a & mask == b & mask
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)))
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xffc0) == 0xfe80
        || (first & 0xfe00) == 0xfc00)
}

/// Whether `ip` is a public unicast address (upstream's `IsGlobalUnicast` and not private).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

/// Which addresses outbound requests may reach.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allowed: Vec<Network>,
}

impl AddressPolicy {
    /// Public addresses and those in `allowed`.
    pub fn new(allowed: Vec<Network>) -> Self {
        AddressPolicy { allowed }
    }

    /// A comma- or space-separated list of networks.
    pub fn parse(list: &str) -> Result<Self, String> {
        let allowed = list
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(Network::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AddressPolicy { allowed })
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allowed.iter().any(|n| n.contains(ip))
    }

    /// Checks a URL to be stored: http(s), with a host whose every address is permitted.
    pub async fn check_url(&self, text: &str) -> Result<(), AddressError> {
        let url = url::Url::parse(text).map_err(|e| AddressError::Invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(AddressError::Invalid("must be an http or https URL".into()));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses: Vec<IpAddr> = match url.host() {
            None => return Err(AddressError::Lookup(String::new())),
            Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
                .await
                .map_err(|_| AddressError::Lookup(name.to_owned()))?
                .map(|a| a.ip())
                .collect(),
        };
        if addresses.is_empty() {
            return Err(AddressError::Lookup(
                url.host_str().unwrap_or("").to_owned(),
            ));
        }
        if addresses.iter().all(|ip| self.permits(*ip)) {
            Ok(())
        } else {
            Err(AddressError::Reserved)
        }
    }

    /// Before a request: a host given as an IP literal (the resolver never sees it) must be
    /// permitted.
    pub fn check_literal(&self, url: &reqwest::Url) -> Result<(), String> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(format!("dial tcp {ip}: {RESERVED_DESTINATION}"))
        }
    }
}

/// The HTTP client's resolver: the system's answers, refused addresses dropped.
struct GuardedResolver(AddressPolicy);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if found.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("dial {host}: {RESERVED_DESTINATION}").into();
                return Err(refused);
            }
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// The outbound client: guarded resolver, no redirects, no proxy, `timeout` per request, and
/// an extra trusted root certificate (PEM) when given.
pub fn client(
    policy: &AddressPolicy,
    timeout: Duration,
    extra_root_pem: Option<&str>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver(policy.clone())))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout);
    if let Some(pem) = extra_root_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("extra root certificate: {e}"))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_unicast_by_default() {
        let policy = AddressPolicy::default();
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!policy.permits(ip(refused)), "{refused}");
        }
        for allowed in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(policy.permits(ip(allowed)), "{allowed}");
        }
    }

    #[test]
    fn allowed_networks_open_exceptions() {
        let policy = AddressPolicy::parse("127.0.0.0/8, ::1").unwrap();
        assert!(policy.permits(ip("127.0.0.1")));
        assert!(policy.permits(ip("127.9.9.9")));
        assert!(policy.permits(ip("::1")));
        assert!(policy.permits(ip("::ffff:127.0.0.1")));
        assert!(!policy.permits(ip("10.0.0.1")));
        assert!(AddressPolicy::parse("10.0.0.0/33").is_err());
        assert!(AddressPolicy::parse("nonsense").is_err());
    }

    #[tokio::test]
    async fn stored_urls_are_resolved_and_checked() {
        let policy = AddressPolicy::default();
        assert!(matches!(
            policy.check_url("http://169.254.169.254/latest").await,
            Err(AddressError::Reserved)
        ));
        assert!(matches!(
            policy.check_url("http://localhost:8080/").await,
            Err(AddressError::Reserved)
        ));
        assert!(matches!(
            policy.check_url("ftp://1.1.1.1/").await,
            Err(AddressError::Invalid(_))
        ));
        assert!(policy.check_url("https://1.1.1.1/hook").await.is_ok());
    }

    #[tokio::test]
    async fn the_client_refuses_reserved_destinations() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let policy = AddressPolicy::default();
        let http = client(&policy, Duration::from_secs(2), None).unwrap();
        // by name: the resolver drops the loopback address
        let err = http
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        let shown = format!("{:?}", err);
        assert!(shown.contains(RESERVED_DESTINATION), "{shown}");
        // by literal: checked before sending
        let url: reqwest::Url = format!("http://127.0.0.1:{port}/").parse().unwrap();
        assert!(policy.check_literal(&url).is_err());
    }
}
