//! Which IP addresses an outbound request may reach.
//!
//! Partners hand us URLs; without this filter a URL could point the service at its own
//! loopback interface, the cloud metadata endpoint (169.254.169.254) or the private network
//! it runs in. The rule is a deny list of every special-purpose range in the IANA IPv4 and
//! IPv6 registries that is not globally reachable, and for IPv6 additionally anything outside
//! global unicast (2000::/3). IPv6 forms that carry an IPv4 address inside them are judged by
//! that IPv4 address, so `::ffff:127.0.0.1` is as forbidden as `127.0.0.1`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// IPv4 ranges that are not publicly routable (IANA IPv4 special-purpose registry).
const FORBIDDEN_V4: &[Ipv4Net] = &[
    v4(0, 0, 0, 0, 8),       // "this network", including 0.0.0.0
    v4(10, 0, 0, 0, 8),      // private
    v4(100, 64, 0, 0, 10),   // carrier-grade NAT
    v4(127, 0, 0, 0, 8),     // loopback
    v4(169, 254, 0, 0, 16),  // link-local, including the cloud metadata endpoint
    v4(172, 16, 0, 0, 12),   // private
    v4(192, 0, 0, 0, 24),    // IETF protocol assignments
    v4(192, 0, 2, 0, 24),    // documentation (TEST-NET-1)
    v4(192, 88, 99, 0, 24),  // deprecated 6to4 relay anycast
    v4(192, 168, 0, 0, 16),  // private
    v4(198, 18, 0, 0, 15),   // benchmarking
    v4(198, 51, 100, 0, 24), // documentation (TEST-NET-2)
    v4(203, 0, 113, 0, 24),  // documentation (TEST-NET-3)
    v4(224, 0, 0, 0, 4),     // multicast
    v4(240, 0, 0, 0, 4),     // reserved, including broadcast 255.255.255.255
];

/// IPv6 ranges inside global unicast (2000::/3) that are still not publicly routable.
/// Everything outside 2000::/3 (loopback, unspecified, unique-local, link-local, site-local,
/// multicast, discard-only, local NAT64, …) is refused before this list is consulted.
const FORBIDDEN_V6_GLOBAL: &[Ipv6Net] = &[
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), // IETF protocol assignments (Teredo, benchmarking, ORCHID)
    v6([0x2001, 0x0db8, 0, 0, 0, 0, 0, 0], 32), // documentation
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), // documentation (RFC 9637)
];

const GLOBAL_UNICAST_V6: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);
/// NAT64 well-known prefix: the last 32 bits are an IPv4 address the gateway will reach.
const NAT64_V6: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
/// 6to4: bits 16..48 are an IPv4 address a relay will reach.
const SIX_TO_FOUR_V6: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(s: [u16; 8], prefix: u8) -> Ipv6Net {
    Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        prefix,
    )
}

/// True when an outbound request must not connect to `ip` because it is private, loopback,
/// link-local, multicast, reserved or otherwise not a public unicast address.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_forbidden_v4(ip),
        IpAddr::V6(ip) => is_forbidden_v6(ip),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    FORBIDDEN_V4.iter().any(|net| net.contains(&ip))
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(embedded) = embedded_ipv4(ip) {
        return is_forbidden_v4(embedded);
    }
    !GLOBAL_UNICAST_V6.contains(&ip) || FORBIDDEN_V6_GLOBAL.iter().any(|net| net.contains(&ip))
}

/// The IPv4 address an IPv6 address stands for, in the forms that a host or a gateway turns
/// into an IPv4 connection: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`,
/// which also covers `::` and `::1` as 0.0.0.0 and 0.0.0.1), NAT64 and 6to4.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4() {
        return Some(v4);
    }
    let octets = ip.octets();
    if NAT64_V6.contains(&ip) {
        return Some(Ipv4Addr::new(
            octets[12], octets[13], octets[14], octets[15],
        ));
    }
    if SIX_TO_FOUR_V6.contains(&ip) {
        return Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(ip: &str) -> bool {
        is_forbidden(ip.parse().expect("test addresses are valid IP literals"))
    }

    fn assert_all_forbidden(ips: &[&str]) {
        for ip in ips {
            assert!(forbidden(ip), "{ip} should be forbidden");
        }
    }

    fn assert_all_allowed(ips: &[&str]) {
        for ip in ips {
            assert!(!forbidden(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn private_ipv4_ranges_are_forbidden_up_to_their_edges() {
        assert_all_forbidden(&[
            "10.0.0.0",
            "10.1.2.3",
            "10.255.255.255",
            "172.16.0.0",
            "172.20.1.1",
            "172.31.255.255",
            "192.168.0.0",
            "192.168.1.1",
            "192.168.255.255",
        ]);
        assert_all_allowed(&["9.255.255.255", "11.0.0.0", "172.15.255.255", "172.32.0.0"]);
        assert_all_allowed(&["192.167.255.255", "192.169.0.0"]);
    }

    #[test]
    fn ipv4_loopback_is_forbidden_across_the_whole_slash_8() {
        assert_all_forbidden(&["127.0.0.1", "127.0.0.0", "127.1.2.3", "127.255.255.255"]);
        assert_all_allowed(&["126.255.255.255", "128.0.0.0"]);
    }

    #[test]
    fn ipv4_link_local_and_the_metadata_endpoint_are_forbidden() {
        assert_all_forbidden(&["169.254.169.254", "169.254.0.0", "169.254.255.255"]);
        assert_all_allowed(&["169.253.255.255", "169.255.0.0"]);
    }

    #[test]
    fn unspecified_and_this_network_addresses_are_forbidden() {
        assert_all_forbidden(&["0.0.0.0", "0.0.0.1", "0.255.255.255"]);
    }

    #[test]
    fn carrier_grade_nat_is_forbidden() {
        assert_all_forbidden(&["100.64.0.0", "100.100.100.100", "100.127.255.255"]);
        assert_all_allowed(&["100.63.255.255", "100.128.0.0"]);
    }

    #[test]
    fn ipv4_multicast_reserved_and_broadcast_are_forbidden() {
        assert_all_forbidden(&[
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ]);
        assert_all_allowed(&["223.255.255.255"]);
    }

    #[test]
    fn ipv4_documentation_benchmark_and_protocol_ranges_are_forbidden() {
        assert_all_forbidden(&[
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
        ]);
        assert_all_allowed(&["198.17.255.255", "198.20.0.0", "192.0.3.1"]);
    }

    #[test]
    fn public_ipv4_addresses_are_allowed() {
        assert_all_allowed(&[
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "52.95.110.1",
            "200.1.1.1",
        ]);
    }

    #[test]
    fn ipv6_loopback_unspecified_and_link_local_are_forbidden() {
        assert_all_forbidden(&["::1", "::", "fe80::1", "fe80::1234:5678", "febf:ffff::1"]);
    }

    #[test]
    fn ipv6_unique_local_site_local_and_multicast_are_forbidden() {
        assert_all_forbidden(&[
            "fc00::1",
            "fd12:3456:789a::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
        ]);
    }

    #[test]
    fn ipv6_documentation_and_special_purpose_ranges_are_forbidden() {
        assert_all_forbidden(&[
            "2001:db8::1",
            "3fff::1",
            "2001::1",      // Teredo
            "2001:2::1",    // benchmarking
            "100::1",       // discard-only
            "64:ff9b:1::1", // local-use NAT64
        ]);
    }

    #[test]
    fn ipv4_mapped_and_compatible_ipv6_are_judged_by_their_ipv4() {
        assert_all_forbidden(&[
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "::192.168.1.1",
        ]);
        assert_all_allowed(&["::ffff:8.8.8.8", "::8.8.8.8"]);
    }

    #[test]
    fn nat64_and_6to4_addresses_are_judged_by_their_ipv4() {
        assert_all_forbidden(&[
            "64:ff9b::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
        ]);
        assert_all_allowed(&["64:ff9b::8.8.8.8", "2002:808:808::1"]);
    }

    #[test]
    fn public_ipv6_addresses_are_allowed() {
        assert_all_allowed(&[
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001::1",
        ]);
    }
}
