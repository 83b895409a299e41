//! Which resolved addresses are the host's own network (loopback, private, link-local and the like), checked at connect time so DNS cannot smuggle a request onto it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kind of internal range `ip` lies in, or `None` for a public address.
pub fn internal_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b) {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        (100, 64..=127) => "shared (carrier-grade NAT)",
        (192, 0) if c == 0 => "IETF protocol assignments",
        (198, 18..=19) => "benchmarking",
        (192, 88) if c == 99 => "6to4 relay anycast",
        _ if ip.is_broadcast() || a >= 240 => "reserved",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_documentation() => "documentation",
        _ => return None,
    })
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    // An IPv4 address inside an IPv6 one is judged as the IPv4 address.
    if let Some(v4) = embedded_v4(ip) {
        return v4_range(v4);
    }
    let first = ip.segments()[0];
    Some(match first {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "unspecified",
        0xfc00..=0xfdff => "private (unique local)",
        // Local-use NAT64 (RFC 8215) may lead anywhere on the host's side.
        0x64 if ip.segments()[1] == 0xff9b && ip.segments()[2] == 1 => "local-use NAT64",
        // Teredo tunnels to an IPv4 address of the tunnel's choosing.
        0x2001 if ip.segments()[1] == 0 => "Teredo",
        0x0100 if ip.segments()[1..4] == [0, 0, 0] => "discard-only",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xff00..=0xffff => "multicast",
        0x2001 if ip.segments()[1] == 0xdb8 => "documentation",
        _ => return None,
    })
}

/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::/96`) and 6to4 (`2002::/16`) addresses carry an IPv4 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail());
    }
    // IPv4-translated (`::ffff:0:a.b.c.d`, RFC 2765).
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return Some(tail());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_named_and_public_ones_are_not() {
        let r = |s: &str| internal_range(s.parse().unwrap());
        assert_eq!(r("127.0.0.1"), Some("loopback"));
        assert_eq!(r("10.1.2.3"), Some("private"));
        assert_eq!(r("172.31.0.1"), Some("private"));
        assert_eq!(r("192.168.0.1"), Some("private"));
        assert_eq!(r("169.254.169.254"), Some("link-local"));
        assert_eq!(r("100.100.0.1"), Some("shared (carrier-grade NAT)"));
        assert_eq!(r("0.0.0.0"), Some("unspecified"));
        assert_eq!(r("::1"), Some("loopback"));
        assert_eq!(r("fd00::1"), Some("private (unique local)"));
        assert_eq!(r("fe80::1"), Some("link-local"));
        assert_eq!(r("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(r("64:ff9b::a9fe:a9fe"), Some("link-local"));
        assert_eq!(r("2002:c0a8:0101::1"), Some("private"));
        assert_eq!(r("::ffff:0:127.0.0.1"), Some("loopback"));
        assert_eq!(r("64:ff9b:1::1"), Some("local-use NAT64"));
        assert_eq!(r("2001:0:4136:e378::1"), Some("Teredo"));
        assert_eq!(r("192.88.99.1"), Some("6to4 relay anycast"));
        assert_eq!(r("8.8.8.8"), None);
        assert_eq!(r("172.32.0.1"), None);
        assert_eq!(r("2606:4700::1111"), None);
    }
}
