//! Egress control (DESIGN §5): actions may not reach loopback, private, link-local or
//! cloud-metadata addresses, checked on the resolved address, unless explicitly allowed.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// One entry of `WEFT_EGRESS_ALLOW`: a network or a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressRule {
    Network(IpNet),
    Host(String),
}

impl FromStr for EgressRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Self::Network(net));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Network(IpNet::from(ip)));
        }
        let is_host = !text.is_empty()
            && text.len() <= 253
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if is_host {
            Ok(Self::Host(text.to_ascii_lowercase()))
        } else {
            Err(format!(
                "`{text}` is neither a CIDR network nor a host name"
            ))
        }
    }
}

/// The addresses no action reaches unless allowed.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local() // includes 169.254.169.254, the cloud metadata service
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    rules: Vec<EgressRule>,
}

impl EgressPolicy {
    pub fn new(rules: Vec<EgressRule>) -> Self {
        Self { rules }
    }

    /// Whether `host` (as written in the URL), resolved to `ip`, may be called.
    pub fn permits(&self, host: &str, ip: IpAddr) -> bool {
        if !is_internal(ip) {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.rules.iter().any(|rule| match rule {
            EgressRule::Network(net) => net.contains(&ip),
            EgressRule::Host(allowed) => *allowed == host,
        })
    }

    /// A DNS resolver that drops forbidden addresses, so the check applies to what is
    /// actually connected to (no DNS rebinding around it).
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            policy: self.clone(),
        })
    }
}

pub struct GuardedResolver {
    policy: EgressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| policy.permits(&host, addr.ip()))
                .collect();
            if permitted.is_empty() {
                return Err(format!("egress to `{host}` is refused: it resolves only to internal addresses (allow it with WEFT_EGRESS_ALLOW)").into());
            }
            let addrs: Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        let policy = EgressPolicy::default();
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "fd12::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            assert!(
                !policy.permits("h", ip(internal)),
                "{internal} must be refused"
            );
        }
        assert!(policy.permits("example.com", ip("93.184.216.34")));
        assert!(policy.permits("h", ip("2606:4700::1111")));
    }

    #[test]
    fn allow_rules_open_networks_and_hosts() {
        let rules = ["127.0.0.0/8", "db.internal"].map(|r| r.parse::<EgressRule>().expect("rule"));
        let policy = EgressPolicy::new(rules.to_vec());
        assert!(policy.permits("localhost", ip("127.0.0.1")));
        assert!(policy.permits("DB.internal.", ip("10.0.0.7")));
        assert!(!policy.permits("other", ip("10.0.0.7")));
        assert!("not a host!".parse::<EgressRule>().is_err());
    }
}
