//! Who a client is, for per-client bounds: its IPv4 address, or the /64 of
//! its IPv6 address (the block one host is usually given, so a client
//! cannot multiply its budget by rotating addresses inside it).

use std::net::IpAddr;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum PeerKey {
    V4(u32),
    V6Prefix(u64),
}

impl PeerKey {
    pub fn of(ip: IpAddr) -> PeerKey {
        match ip {
            IpAddr::V4(v4) => PeerKey::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => PeerKey::V4(v4.into()),
                None => PeerKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// A network: an address and a prefix length (`10.0.0.0/8`,
/// `2001:db8::/32`; a bare address is a /32 or /128). IPv4-mapped IPv6
/// addresses are taken as IPv4, on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    /// The address as 128 bits, IPv4 in the low 32 (`v4` says which).
    bits: u128,
    prefix: u8,
    v4: bool,
}

fn canonical(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(v4) => (u32::from(v4).into(), true),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (u32::from(v4).into(), true),
            None => (u128::from(v6), false),
        },
    }
}

impl IpNet {
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network (like 10.0.0.0/8)"))?;
        let (bits, v4) = canonical(ip);
        let width = if v4 { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= width => p,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {width}")),
            },
        };
        Ok(IpNet { bits, prefix, v4 })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (bits, v4) = canonical(ip);
        if v4 != self.v4 {
            return false;
        }
        let width = if v4 { 32 } else { 128 };
        let host = u32::from(width - self.prefix);
        let mask = u128::MAX.checked_shl(host).unwrap_or(0);
        bits & mask == self.bits & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_and_only_theirs() {
        let net = |s: &str| IpNet::parse(s).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(net("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")), "mapped v4");
        assert!(net("192.0.2.7").contains(ip("192.0.2.7")));
        assert!(!net("192.0.2.7").contains(ip("192.0.2.8")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.1")));
        assert!(
            !net("0.0.0.0/0").contains(ip("2001:db8::1")),
            "v4 nets hold no v6"
        );
        assert!(net("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        for bad in [
            "10.0.0.0/33",
            "2001:db8::/129",
            "10.0.0/8",
            "host",
            "10.0.0.0/x",
            "",
        ] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }

    fn key(s: &str) -> PeerKey {
        PeerKey::of(s.parse().unwrap())
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_v4_is_v4() {
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
    }
}
