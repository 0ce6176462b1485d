//! The SSRF guard: which addresses the downloader may connect to.
//!
//! By default only globally routable unicast addresses are allowed. Refused: loopback,
//! private (RFC 1918), link-local (169.254/16 — cloud metadata services live there),
//! CGNAT (100.64/10), multicast, broadcast, unspecified, documentation/benchmark/reserved
//! ranges, IPv6 unique-local (fc00::/7), link-local (fe80::/10), site-local, and IPv4
//! addresses embedded in IPv6 (IPv4-mapped `::ffff:0:0/96`, IPv4-compatible, NAT64
//! `64:ff9b::/96`, 6to4 `2002::/16`, Teredo `2001::/32`) — an embedded address is judged
//! as the IPv4 address it carries. `--allow-network CIDR` opens ranges explicitly.
//!
//! The check runs on every resolved address before connecting (see `dns.rs`) and on IP
//! literals in every URL, including each redirect hop, so neither redirects nor DNS
//! rebinding can reach a refused address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is refused, for the error detail.
pub fn refusal(ip: IpAddr, allow: &[IpNet]) -> Option<&'static str> {
    if allow.iter().any(|n| n.contains(&ip)) {
        return None;
    }
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some((v4, mapped)) = embedded_v4(v6) {
                // An allow-listed IPv4 range also opens its IPv6 spellings.
                if allow.iter().any(|n| n.contains(&IpAddr::V4(v4))) {
                    return None;
                }
                // IPv4-mapped/-compatible addresses never appear in honest DNS answers:
                // refused outright. Translation prefixes are judged by what they carry.
                if mapped {
                    return Some("IPv4-mapped IPv6 address");
                }
                return refusal_v4(v4);
            }
            refusal_v6(v6)
        }
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let table: [([u8; 4], u32, &'static str); 16] = [
        ([0, 0, 0, 0], 8, "unspecified/this-network address"),
        ([10, 0, 0, 0], 8, "private address (RFC 1918)"),
        ([100, 64, 0, 0], 10, "carrier-grade NAT address"),
        ([127, 0, 0, 0], 8, "loopback address"),
        ([169, 254, 0, 0], 16, "link-local address (cloud metadata)"),
        ([172, 16, 0, 0], 12, "private address (RFC 1918)"),
        ([192, 0, 0, 0], 24, "IETF protocol assignment"),
        ([192, 0, 2, 0], 24, "documentation address"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast"),
        ([192, 168, 0, 0], 16, "private address (RFC 1918)"),
        ([198, 18, 0, 0], 15, "benchmarking address"),
        ([198, 51, 100, 0], 24, "documentation address"),
        ([203, 0, 113, 0], 24, "documentation address"),
        ([224, 0, 0, 0], 4, "multicast address"),
        ([240, 0, 0, 0], 4, "reserved address"),
        ([255, 255, 255, 255], 32, "broadcast address"),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

/// The IPv4 address an IPv6 address carries, and whether it is the mapped/compatible form.
fn embedded_v4(ip: Ipv6Addr) -> Option<(Ipv4Addr, bool)> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated; not :: or ::1)
    if s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || (s[5] == 0 && u32::from(tail) > 1)) {
        return Some((tail, true));
    }
    // NAT64 well-known prefix 64:ff9b::/96
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some((tail, false));
    }
    // 6to4 2002:AABB:CCDD::/48 carries AA.BB.CC.DD
    if s[0] == 0x2002 {
        return Some((Ipv4Addr::new(o[2], o[3], o[4], o[5]), false));
    }
    // Teredo 2001:0::/32: the client address is the last 32 bits inverted
    if s[0] == 0x2001 && s[1] == 0 {
        return Some((Ipv4Addr::from(!u32::from(tail)), false));
    }
    None
}

fn refusal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if ip.is_loopback() {
        return Some("loopback address");
    }
    if s[0] & 0xff00 == 0xff00 {
        return Some("multicast address");
    }
    if s[0] & 0xfe00 == 0xfc00 {
        return Some("unique-local address (fc00::/7)");
    }
    if s[0] & 0xffc0 == 0xfe80 {
        return Some("link-local address (fe80::/10)");
    }
    if s[0] & 0xffc0 == 0xfec0 {
        return Some("site-local address (fec0::/10)");
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Some("documentation address");
    }
    if s[0] == 0x0100 && s[1..4] == [0, 0, 0] {
        return Some("discard-only address");
    }
    // Only 2000::/3 is globally routable unicast.
    if s[0] & 0xe000 != 0x2000 {
        return Some("reserved address");
    }
    None
}

/// Parse `--allow-network` values.
pub fn parse_networks(values: &[String]) -> anyhow::Result<Vec<IpNet>> {
    values
        .iter()
        .map(|v| {
            let v = v.trim();
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| anyhow::anyhow!("--allow-network {v:?}: not a CIDR range; use e.g. 10.0.0.0/8 or 127.0.0.1/32"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        refusal(s.parse().unwrap(), &[]).is_some()
    }

    #[test]
    fn refuses_every_non_public_range() {
        for ip in [
            "127.0.0.1",
            "127.0.0.2",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:0001::1",
            "::ffff:8.8.8.8",
            "2002:c0a8:0101::",
            "100::1",
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "64:ff9b::808:808",
        ] {
            assert!(!refused(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn allow_network_opens_exactly_its_range() {
        let allow = parse_networks(&["127.0.0.1/32".into()]).unwrap();
        assert_eq!(refusal("127.0.0.1".parse().unwrap(), &allow), None);
        assert_eq!(
            refusal("127.0.0.2".parse().unwrap(), &allow),
            Some("loopback address")
        );
        assert_eq!(refusal("::ffff:127.0.0.1".parse().unwrap(), &allow), None);
        let allow = parse_networks(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        assert_eq!(refusal("10.9.8.7".parse().unwrap(), &allow), None);
        assert_eq!(refusal("::1".parse().unwrap(), &allow), None);
        assert!(refusal("192.168.0.1".parse().unwrap(), &allow).is_some());
        assert!(parse_networks(&["10.0.0.0/33".into()]).is_err());
        assert!(parse_networks(&["example.com".into()]).is_err());
    }
}
