//! A DNS resolver that never hands reqwest a forbidden address.

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::{is_forbidden, NetError};

/// Resolves with the system resolver and drops every forbidden address. Filtering here rather
/// than before the request means the addresses checked are exactly the ones connected to, so
/// a host that answers differently on a second lookup (DNS rebinding) gains nothing.
#[derive(Debug, Clone, Copy)]
pub(super) struct FilteringResolver {
    allow_private: bool,
}

impl FilteringResolver {
    pub(super) fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0 is replaced by reqwest with the URL's port.
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|source| NetError::Resolve {
                    host: host.clone(),
                    source,
                })?
                .collect();
            let allowed = filter_addresses(resolved.clone(), allow_private);
            if allowed.is_empty() {
                let error = if resolved.is_empty() {
                    NetError::Resolve {
                        host,
                        source: std::io::Error::other("no addresses found"),
                    }
                } else {
                    tracing::warn!(%host, "refused a host that resolves only to non-public addresses");
                    NetError::ForbiddenAddress { target: host }
                };
                return Err(error.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

fn filter_addresses(addresses: Vec<SocketAddr>, allow_private: bool) -> Vec<SocketAddr> {
    if allow_private {
        return addresses;
    }
    addresses
        .into_iter()
        .filter(|address| !is_forbidden(address.ip()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(ips: &[&str]) -> Vec<SocketAddr> {
        ips.iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), 0))
            .collect()
    }

    #[test]
    fn forbidden_addresses_are_dropped_and_public_ones_kept() {
        let kept = filter_addresses(
            addresses(&[
                "127.0.0.1",
                "93.184.216.34",
                "::1",
                "2606:4700::1",
                "10.0.0.1",
            ]),
            false,
        );
        assert_eq!(kept, addresses(&["93.184.216.34", "2606:4700::1"]));
    }

    #[test]
    fn allow_private_keeps_every_address() {
        let all = addresses(&["127.0.0.1", "::1", "10.0.0.1"]);
        assert_eq!(filter_addresses(all.clone(), true), all);
    }

    // Resolving `localhost` reads /etc/hosts and opens no connection.
    #[tokio::test]
    async fn a_name_that_resolves_only_to_loopback_is_refused_with_a_clear_error() {
        let resolver = FilteringResolver::new(false);
        let error = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error,
        };
        let error = error.downcast::<NetError>().expect("a NetError");
        assert!(
            matches!(*error, NetError::ForbiddenAddress { ref target } if target == "localhost")
        );
        assert_eq!(
            error.to_string(),
            "localhost is a private, loopback or otherwise non-public address"
        );
    }

    #[tokio::test]
    async fn allow_private_resolves_localhost() {
        let resolver = FilteringResolver::new(true);
        let addrs: Vec<SocketAddr> = resolver
            .resolve("localhost".parse().unwrap())
            .await
            .expect("localhost resolves")
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        assert!(!addrs.is_empty());
    }
}
