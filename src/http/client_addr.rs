//! Who the client is and how it reached us, believing forwarding headers only from the
//! reverse proxies named in `CALLINGEST_TRUSTED_PROXIES`: anyone else could write them.

use std::net::IpAddr;

use ipnet::IpNet;
use poem::http::uri::Scheme;
use poem::http::HeaderMap;
use poem::Request;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(proxies: Vec<IpNet>) -> Self {
        Self(proxies)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|net| net.contains(&address))
    }

    fn peer(request: &Request) -> Option<IpAddr> {
        request
            .remote_addr()
            .as_socket_addr()
            .map(|address| canonical(address.ip()))
    }

    /// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest
    /// address of `X-Forwarded-For` (read from the right) that is not a trusted proxy itself.
    pub fn client_ip(&self, request: &Request) -> Option<IpAddr> {
        Some(self.client_ip_of(Self::peer(request)?, request.headers()))
    }

    fn client_ip_of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in forwarded.iter().rev() {
            // A hop that is not an address was not written by a proxy we trust: stop at the
            // last one we could vouch for.
            let Ok(address) = hop.parse::<IpAddr>() else {
                break;
            };
            client = canonical(address);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }

    /// Whether the client reached us over HTTPS: a TLS connection, or a trusted proxy saying
    /// so with `X-Forwarded-Proto: https` (its first value: the scheme the client used).
    pub fn is_https(&self, request: &Request) -> bool {
        *request.scheme() == Scheme::HTTPS
            || self.forwarded_https(Self::peer(request), request.headers())
    }

    fn forwarded_https(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> bool {
        if !peer.is_some_and(|peer| self.trusts(peer)) {
            return false;
        }
        headers
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .is_some_and(|scheme| scheme.trim().eq_ignore_ascii_case("https"))
    }
}

/// IPv4 addresses seen through an IPv6 socket (`::ffff:a.b.c.d`) as plain IPv4.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        headers
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|p| p.parse().unwrap()).collect())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarding_headers_of_untrusted_peers_are_ignored() {
        let sent = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip_of(ip("203.0.113.9"), &sent),
            ip("203.0.113.9")
        );
        assert!(!none.forwarded_https(Some(ip("203.0.113.9")), &sent));
        let other = proxies(&["10.0.0.0/8"]);
        assert!(!other.forwarded_https(Some(ip("203.0.113.9")), &sent));
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_the_scheme() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let sent = headers(&[
            ("x-forwarded-for", "198.51.100.7, 203.0.113.1"),
            ("x-forwarded-for", "10.0.0.5"),
            ("x-forwarded-proto", "https"),
        ]);
        // The spoofable leftmost entry is not believed: the nearest untrusted hop is.
        assert_eq!(
            trusted.client_ip_of(ip("10.0.0.2"), &sent),
            ip("203.0.113.1")
        );
        assert!(trusted.forwarded_https(Some(ip("10.0.0.2")), &sent));
        let plain = headers(&[("x-forwarded-proto", "http")]);
        assert!(!trusted.forwarded_https(Some(ip("10.0.0.2")), &plain));
        assert_eq!(trusted.client_ip_of(ip("10.0.0.2"), &plain), ip("10.0.0.2"));
        // An IPv4 peer seen through an IPv6 socket is still recognised.
        assert!(trusted.forwarded_https(Some(canonical(ip("::ffff:10.0.0.2"))), &sent));
    }
}
