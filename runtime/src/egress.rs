//! Egress control (architecture §6): requests on behalf of users (connector actions, OAuth token
//! endpoints) may not reach loopback, private, link-local, cloud-metadata or any other
//! address that is not globally reachable, checked on the resolved address, unless
//! `WEFT_EGRESS_ALLOW` lists them.
//!
//! [`GuardedClient`] is the only way such requests are sent: its resolver drops forbidden
//! addresses (so DNS tricks do not get around the rule), and [`GuardedClient::execute`]
//! checks hosts written as IP literals, which never reach a resolver, and follows
//! redirects itself, checking every hop and keeping credentials on their origin.

use std::error::Error as _;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Url, redirect};
use secrecy::{ExposeSecret, SecretString};
use weft_domain::connector::Carrying;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 10;

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

/// The rule an internal address breaks, for the message of a refusal. Besides private
/// and local networks this covers every special-purpose block of the IANA registries that
/// is not globally reachable (shared, benchmarking, documentation, reserved), and the
/// IPv6 forms that carry an IPv4 address, judged by that address: a translator or relay
/// on the way would deliver them to it.
fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4_kind(v4),
        IpAddr::V6(v6) => internal_v6_kind(v6),
    }
}

fn internal_v4_kind(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = v4.octets();
    if v4.is_loopback() {
        Some("loopback")
    } else if v4.is_private() {
        Some("private")
    } else if v4.is_link_local() {
        // Includes 169.254.169.254, the cloud metadata service.
        Some("link-local or metadata")
    } else if a == 0 {
        Some("unspecified")
    } else if v4.is_broadcast() || v4.is_multicast() {
        Some("broadcast or multicast")
    } else if v4.is_documentation() {
        Some("documentation")
    } else if a == 100 && (b & 0xc0) == 64 {
        Some("carrier-grade NAT")
    } else if a == 192 && b == 0 && c == 0 {
        Some("IETF protocol assignment")
    } else if a == 198 && (b & 0xfe) == 18 {
        Some("benchmarking")
    } else if a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn internal_v6_kind(v6: Ipv6Addr) -> Option<&'static str> {
    if v6.is_loopback() {
        return Some("loopback");
    }
    if v6.is_unspecified() {
        return Some("unspecified");
    }
    if let Some(v4) = embedded_ipv4(v6) {
        return match v4 {
            Embedded::Address(v4) => internal_v4_kind(v4),
            Embedded::Unknown => Some("local-use NAT64"),
        };
    }
    let segments = v6.segments();
    let first = segments[0];
    if v6.is_multicast() {
        Some("broadcast or multicast")
    } else if (first & 0xfe00) == 0xfc00 {
        Some("private")
    } else if (first & 0xffc0) == 0xfe80 {
        Some("link-local or metadata")
    } else if (first & 0xffc0) == 0xfec0 {
        Some("site-local")
    } else if first == 0x2001 && segments[1] == 0x0db8 {
        Some("documentation")
    } else {
        None
    }
}

/// What an IPv6 address that carries an IPv4 address leads to.
enum Embedded {
    Address(Ipv4Addr),
    /// A local-use NAT64 address (64:ff9b:1::/48) whose prefix length is the operator's
    /// choice: where the IPv4 address sits in it cannot be told.
    Unknown,
}

/// The IPv4 address inside an IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96),
/// NAT64 (64:ff9b::/96, RFC 6052; 64:ff9b:1::/48, RFC 8215), 6to4 (2002::/16, RFC 3056)
/// or Teredo (2001::/32, RFC 4380) address.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Embedded> {
    let segments = v6.segments();
    let octets = v6.octets();
    let last = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    match segments {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(Embedded::Address(last)),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(Embedded::Address(last)),
        // The /96 form of the local-use prefix, the one deployments use, puts the address
        // last like the well-known prefix; any other layout is refused.
        [0x64, 0xff9b, 1, 0, 0, 0, _, _] => Some(Embedded::Address(last)),
        [0x64, 0xff9b, 1, ..] => Some(Embedded::Unknown),
        [0x2002, high, low, ..] => Some(Embedded::Address(Ipv4Addr::from(
            (u32::from(high) << 16) | u32::from(low),
        ))),
        // The Teredo client's public address is stored with every bit flipped.
        [0x2001, 0, ..] => Some(Embedded::Address(Ipv4Addr::from(!u32::from(last)))),
        _ => None,
    }
}

/// A request the egress policy refused, naming the host, the address and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRefused(String);

impl EgressRefused {
    fn new(host: &str, ip: Option<IpAddr>, rule: &str) -> Self {
        let target = match ip {
            Some(ip) if ip.to_string() != host.trim_matches(['[', ']']) => {
                format!("`{host}` ({ip})")
            }
            _ => format!("`{host}`"),
        };
        Self(format!(
            "egress to {target} is refused: {rule} addresses are not reachable unless WEFT_EGRESS_ALLOW lists them"
        ))
    }
}

impl EgressRefused {
    fn unresolved(host: &str) -> Self {
        Self(format!(
            "egress to `{host}` is refused: the name does not resolve here, and through WEFT_EGRESS_PROXY a target is checked before the proxy is asked (list the host in WEFT_EGRESS_ALLOW to let the proxy resolve it)"
        ))
    }
}

impl fmt::Display for EgressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EgressRefused {}

/// `WEFT_EGRESS_PROXY`: the http or https forward proxy every request on behalf of users
/// leaves through, with its credentials if it has any. The password never shows: not in
/// `Debug`, not in an error.
#[derive(Clone)]
pub struct EgressProxy {
    /// Scheme, host and port only.
    url: Url,
    username: String,
    password: Option<SecretString>,
}

impl fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressProxy")
            .field("url", &self.url.as_str())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl FromStr for EgressProxy {
    type Err = String;

    /// The reasons it gives never quote the text: it may hold the password.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shape = "write it as http(s)://[user:password@]host:port";
        let mut url =
            Url::parse(text.trim()).map_err(|e| format!("it is not a URL ({e}): {shape}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "scheme `{}` is not http or https: {shape}",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("it names no host: {shape}"));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(format!("it has a path, query or fragment: {shape}"));
        }
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|decoded| decoded.into_owned())
                .map_err(|_| "its user or password is not UTF-8 once percent-decoded".to_owned())
        };
        let username = decode(url.username())?;
        let password = url
            .password()
            .map(decode)
            .transpose()?
            .map(SecretString::from);
        // Neither can fail on an http(s) URL with a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(Self {
            url,
            username,
            password,
        })
    }
}

impl EgressProxy {
    fn host(&self) -> Option<&str> {
        self.url.host_str()
    }

    fn to_reqwest(&self) -> Result<reqwest::Proxy, reqwest::Error> {
        let proxy = reqwest::Proxy::all(self.url.clone())?;
        Ok(match (&self.password, self.username.is_empty()) {
            (None, true) => proxy,
            (password, _) => proxy.basic_auth(
                &self.username,
                password.as_ref().map_or("", ExposeSecret::expose_secret),
            ),
        })
    }
}

/// Parses `WEFT_EGRESS_PROXY` for clap without echoing the value in the error, as clap's
/// usual "invalid value '…'" would: the URL may hold the proxy's password.
#[derive(Debug, Clone, Copy)]
pub struct EgressProxyParser;

impl clap::builder::TypedValueParser for EgressProxyParser {
    type Value = EgressProxy;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<EgressProxy, clap::Error> {
        let invalid = |reason: String| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid WEFT_EGRESS_PROXY: {reason}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| invalid("it is not UTF-8".to_owned()))?;
        text.parse().map_err(invalid)
    }
}

#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    rules: Vec<EgressRule>,
    proxy: Option<EgressProxy>,
}

impl EgressPolicy {
    pub fn new(rules: Vec<EgressRule>) -> Self {
        Self { rules, proxy: None }
    }

    /// Sends every request through `proxy` (`WEFT_EGRESS_PROXY`), when there is one.
    pub fn through(mut self, proxy: Option<EgressProxy>) -> Self {
        self.proxy = proxy;
        self
    }

    /// Whether a host name is let through by name, whatever it resolves to.
    fn allows_host(&self, host: &str) -> bool {
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        self.rules
            .iter()
            .any(|rule| matches!(rule, EgressRule::Host(allowed) if *allowed == name))
    }

    /// Checks where a request goes before it is sent. Directly, a host name is checked
    /// by the resolver on what is connected to. Through a proxy, the proxy resolves the
    /// name and connects, so it is resolved here first and refused if *any* of its
    /// addresses is forbidden: which one the proxy picks cannot be told, and a name
    /// mixing a public address with an internal one is the rebinding trick itself. A
    /// name that does not resolve here is refused too, as it cannot be checked. (A name
    /// that resolves differently a moment later at the proxy is for the proxy's own
    /// policy to catch; connecting directly has no such gap.)
    async fn check_target(&self, url: &Url) -> Result<(), EgressRefused> {
        self.check_url(url)?;
        let (Some(_), Some(host)) = (&self.proxy, url.host_str()) else {
            return Ok(());
        };
        if literal_ip(url).is_some() || self.allows_host(host) {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let resolved = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| EgressRefused::unresolved(host))?;
        let mut any = false;
        for addr in resolved {
            self.check_ip(host, addr.ip())?;
            any = true;
        }
        if any {
            Ok(())
        } else {
            Err(EgressRefused::unresolved(host))
        }
    }

    /// Whether `host` (as written in the URL), resolved to `ip`, may be called.
    pub fn permits(&self, host: &str, ip: IpAddr) -> bool {
        self.check_ip(host, ip).is_ok()
    }

    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), EgressRefused> {
        let Some(rule) = internal_kind(ip) else {
            return Ok(());
        };
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        // An address carrying an IPv4 address is let through by the rules that let that
        // address through, as it is refused by the rules that refuse it.
        let carried = match ip {
            IpAddr::V6(v6) => match embedded_ipv4(v6) {
                Some(Embedded::Address(v4)) => Some(IpAddr::V4(v4)),
                _ => None,
            },
            IpAddr::V4(_) => None,
        };
        let allowed = self.rules.iter().any(|allow| match allow {
            EgressRule::Network(net) => {
                net.contains(&ip) || carried.is_some_and(|v4| net.contains(&v4))
            }
            EgressRule::Host(allowed) => *allowed == name,
        });
        if allowed {
            Ok(())
        } else {
            Err(EgressRefused::new(host, Some(ip), rule))
        }
    }

    /// Checks a URL whose host is an IP literal (no resolver sees those); host names are
    /// checked when they resolve.
    pub fn check_url(&self, url: &Url) -> Result<(), EgressRefused> {
        match literal_ip(url) {
            Some((host, ip)) => self.check_ip(&host, ip),
            None => Ok(()),
        }
    }

    /// A DNS resolver that drops forbidden addresses, so the check applies to what is
    /// actually connected to (no DNS rebinding around it).
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            policy: self.clone(),
        })
    }
}

fn literal_ip(url: &Url) -> Option<(String, IpAddr)> {
    let host = url.host_str()?;
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()?;
    Some((host.to_owned(), ip))
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
            // Through a proxy, the only name the client resolves is the proxy's: the
            // operator's own choice, usually on an internal network. Targets are checked
            // before the proxy is asked (`EgressPolicy::check_target`).
            let is_proxy = policy
                .proxy
                .as_ref()
                .and_then(EgressProxy::host)
                .is_some_and(|proxy| proxy.eq_ignore_ascii_case(&host));
            if is_proxy {
                let addrs: Addrs = Box::new(resolved.into_iter());
                return Ok(addrs);
            }
            let mut refusal = None;
            let mut permitted = Vec::new();
            for addr in resolved {
                match policy.check_ip(&host, addr.ip()) {
                    Ok(()) => permitted.push(addr),
                    Err(refused) => refusal = Some(refused),
                }
            }
            if permitted.is_empty()
                && let Some(refused) = refusal
            {
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

/// A redirect that is not followed: to another origin with credentials, to a scheme
/// other than http(s), or one too many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectRefused(String);

impl fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefused {}

/// A request that was not answered: refused by the policy, or failed on the way.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Refused(EgressRefused),
    #[error("{0}")]
    Redirect(RedirectRefused),
    /// Its `Display` includes the URL, whose query may carry a credential: describe it
    /// with [`SendError::describe`] instead.
    #[error("request failed")]
    Http(reqwest::Error),
}

impl SendError {
    /// A message about the failure that never includes the URL (its query may hold a
    /// credential): what went wrong and the chain of causes.
    pub fn describe(&self) -> String {
        match self {
            Self::Refused(refused) => refused.to_string(),
            Self::Redirect(refused) => refused.to_string(),
            Self::Http(error) => {
                let kind = if error.is_timeout() {
                    "the request timed out"
                } else if error.is_connect() {
                    "could not connect"
                } else if error.is_body() || error.is_decode() {
                    "the response broke off"
                } else {
                    "the request failed"
                };
                let mut causes = Vec::new();
                let mut source = error.source();
                while let Some(cause) = source {
                    causes.push(cause.to_string());
                    source = cause.source();
                }
                if causes.is_empty() {
                    kind.to_owned()
                } else {
                    format!("{kind}: {}", causes.join(": "))
                }
            }
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Http(error) if error.is_timeout())
    }

    /// Whether the egress policy refused it (possibly deep inside the client's error).
    pub fn refusal(&self) -> Option<&EgressRefused> {
        match self {
            Self::Refused(refused) => Some(refused),
            Self::Redirect(_) => None,
            Self::Http(error) => {
                let mut source = error.source();
                while let Some(cause) = source {
                    if let Some(refused) = cause.downcast_ref::<EgressRefused>() {
                        return Some(refused);
                    }
                    source = cause.source();
                }
                None
            }
        }
    }
}

impl From<reqwest::Error> for SendError {
    fn from(error: reqwest::Error) -> Self {
        Self::Http(error)
    }
}

/// Headers dropped when a redirect changes the origin, as browsers and reqwest do.
const CROSS_ORIGIN_DROPPED: [&str; 5] = [
    "authorization",
    "cookie",
    "cookie2",
    "proxy-authorization",
    "www-authenticate",
];

/// Headers that describe a body, dropped with it when a redirect turns a request into a
/// GET.
const PAYLOAD_HEADERS: [&str; 4] = [
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
];

/// The request a redirect asks for (RFC 9110 §15.4, as browsers and reqwest make it):
/// 301 and 302 turn a POST into a GET, 303 turns anything but HEAD into a GET, 307 and 308
/// repeat the request as it was. `None` when the response is no redirect to follow: not
/// one of these statuses, no usable `Location`, or a body that cannot be sent again.
fn redirected(
    response: &reqwest::Response,
    previous: Option<reqwest::Request>,
) -> Result<Option<reqwest::Request>, RedirectRefused> {
    let status = response.status().as_u16();
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return Ok(None);
    }
    let Some(mut next) = previous else {
        return Ok(None);
    };
    let Some(location) = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|location| response.url().join(location).ok())
    else {
        return Ok(None);
    };
    if !matches!(location.scheme(), "http" | "https") {
        return Err(RedirectRefused(format!(
            "redirected to a `{}` URL; only http and https redirects are followed",
            location.scheme()
        )));
    }
    let becomes_get = match status {
        301 | 302 => next.method() == reqwest::Method::POST,
        303 => next.method() != reqwest::Method::HEAD,
        _ => false,
    };
    if becomes_get {
        *next.method_mut() = reqwest::Method::GET;
        *next.body_mut() = None;
        for header in PAYLOAD_HEADERS {
            next.headers_mut().remove(header);
        }
    }
    if location.origin() != response.url().origin() {
        for header in CROSS_ORIGIN_DROPPED {
            next.headers_mut().remove(header);
        }
    }
    *next.url_mut() = location;
    Ok(Some(next))
}

/// A shared HTTP client (one per process, for connection pooling) that sends only where
/// the egress policy permits, with a connect timeout and a bounded number of redirects.
#[derive(Clone)]
pub struct GuardedClient {
    client: reqwest::Client,
    policy: EgressPolicy,
}

impl fmt::Debug for GuardedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl GuardedClient {
    /// `user_agent` names the process, e.g. `weft-worker/0.1.0`.
    pub fn new(policy: EgressPolicy, user_agent: &str) -> Result<Self, reqwest::Error> {
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(user_agent)
            .dns_resolver(policy.resolver())
            // `execute` follows redirects itself: where one may lead depends on what the
            // request carries, and through a proxy each hop's name must be resolved to be
            // checked, neither of which reqwest's redirect policy (one synchronous closure
            // for the whole client) can do.
            .redirect(redirect::Policy::none());
        // Only the configured proxy, never one from the environment (`HTTP_PROXY`): the
        // guard checks targets through it knowingly.
        let builder = match &policy.proxy {
            Some(proxy) => builder.proxy(proxy.to_reqwest()?),
            None => builder.no_proxy(),
        };
        let client = builder.build()?;
        Ok(Self { client, policy })
    }

    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// Starts a request; send it with [`GuardedClient::execute`].
    pub fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends a request if the policy permits its destination, and follows its redirects
    /// (at most [`MAX_REDIRECTS`]), each hop checked the same way. With
    /// [`Carrying::Credentials`], a redirect to another origin is refused. No `Referer`
    /// is sent: the previous URL's query may hold a key. The request's timeout bounds all
    /// of its hops together.
    pub async fn execute(
        &self,
        request: reqwest::Request,
        carrying: Carrying,
    ) -> Result<reqwest::Response, SendError> {
        let origin = request.url().origin();
        let deadline = request.timeout().map(|timeout| Instant::now() + *timeout);
        let mut request = request;
        let mut followed = 0;
        loop {
            self.policy
                .check_target(request.url())
                .await
                .map_err(SendError::Refused)?;
            let again = request.try_clone();
            let response = self.client.execute(request).await.map_err(|error| {
                let error = SendError::Http(error);
                match error.refusal() {
                    Some(refused) => SendError::Refused(refused.clone()),
                    None => error,
                }
            })?;
            let Some(mut next) = redirected(&response, again).map_err(SendError::Redirect)? else {
                return Ok(response);
            };
            if followed == MAX_REDIRECTS {
                return Err(SendError::Redirect(RedirectRefused(format!(
                    "more than {MAX_REDIRECTS} redirects"
                ))));
            }
            if carrying == Carrying::Credentials && next.url().origin() != origin {
                return Err(SendError::Redirect(RedirectRefused(format!(
                    "redirected to {}; credentials are not sent to another origin",
                    next.url().origin().ascii_serialization()
                ))));
            }
            if let Some(deadline) = deadline {
                *next.timeout_mut() = Some(deadline.saturating_duration_since(Instant::now()));
            }
            request = next;
            followed += 1;
        }
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

    /// Each special-purpose block with an address inside it and one just outside it.
    const RANGES: &[(&str, &str, Option<&str>)] = &[
        ("100.64.0.0/10", "100.64.0.0", Some("carrier-grade NAT")),
        (
            "100.64.0.0/10",
            "100.127.255.255",
            Some("carrier-grade NAT"),
        ),
        ("100.64.0.0/10", "100.63.255.255", None),
        ("100.64.0.0/10", "100.128.0.0", None),
        (
            "192.0.0.0/24",
            "192.0.0.8",
            Some("IETF protocol assignment"),
        ),
        ("192.0.0.0/24", "192.0.1.0", None),
        ("192.0.2.0/24", "192.0.2.1", Some("documentation")),
        ("192.0.2.0/24", "192.0.3.0", None),
        ("198.18.0.0/15", "198.18.0.1", Some("benchmarking")),
        ("198.18.0.0/15", "198.19.255.255", Some("benchmarking")),
        ("198.18.0.0/15", "198.17.255.255", None),
        ("198.18.0.0/15", "198.20.0.0", None),
        ("198.51.100.0/24", "198.51.100.7", Some("documentation")),
        ("198.51.100.0/24", "198.51.101.0", None),
        ("203.0.113.0/24", "203.0.113.9", Some("documentation")),
        ("203.0.113.0/24", "203.0.114.0", None),
        ("240.0.0.0/4", "240.0.0.1", Some("reserved")),
        (
            "240.0.0.0/4",
            "239.255.255.255",
            Some("broadcast or multicast"),
        ),
        ("240.0.0.0/4", "255.255.255.254", Some("reserved")),
        (
            "broadcast",
            "255.255.255.255",
            Some("broadcast or multicast"),
        ),
        ("224.0.0.0/4", "224.0.0.1", Some("broadcast or multicast")),
        ("224.0.0.0/4", "223.255.255.255", None),
        ("0.0.0.0/8", "0.1.2.3", Some("unspecified")),
        ("0.0.0.0/8", "1.0.0.0", None),
        (
            "169.254.0.0/16",
            "169.254.169.254",
            Some("link-local or metadata"),
        ),
        ("169.254.0.0/16", "169.255.0.0", None),
        // IPv4-mapped, judged by the address it carries.
        ("::ffff:0:0/96", "::ffff:127.0.0.1", Some("loopback")),
        ("::ffff:0:0/96", "::ffff:10.1.2.3", Some("private")),
        (
            "::ffff:0:0/96",
            "::ffff:100.64.0.1",
            Some("carrier-grade NAT"),
        ),
        ("::ffff:0:0/96", "::ffff:8.8.8.8", None),
        // IPv4-compatible.
        ("::/96", "::127.0.0.1", Some("loopback")),
        ("::/96", "::169.254.169.254", Some("link-local or metadata")),
        ("::/96", "::8.8.8.8", None),
        ("::/96", "::1:0:0:0", None),
        // NAT64, the well-known prefix and the local-use one.
        ("64:ff9b::/96", "64:ff9b::10.0.0.1", Some("private")),
        (
            "64:ff9b::/96",
            "64:ff9b::192.0.0.170",
            Some("IETF protocol assignment"),
        ),
        ("64:ff9b::/96", "64:ff9b::8.8.8.8", None),
        ("64:ff9b::/96", "64:ff9a:ffff:ffff:ffff:ffff:a00:1", None),
        ("64:ff9b:1::/48", "64:ff9b:1::127.0.0.1", Some("loopback")),
        ("64:ff9b:1::/48", "64:ff9b:1::8.8.8.8", None),
        (
            "64:ff9b:1::/48",
            "64:ff9b:1:a00:1::",
            Some("local-use NAT64"),
        ),
        ("64:ff9b:1::/48", "64:ff9b:2::10.0.0.1", None),
        // 6to4 carries its address in bits 16 to 48.
        ("2002::/16", "2002:a00:1::1", Some("private")),
        (
            "2002::/16",
            "2002:a9fe:a9fe::",
            Some("link-local or metadata"),
        ),
        ("2002::/16", "2002:808:808::1", None),
        ("2002::/16", "2003:a00:1::1", None),
        // Teredo carries the client's address with every bit flipped: !127.0.0.1.
        (
            "2001::/32",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            Some("loopback"),
        ),
        ("2001::/32", "2001:0:4136:e378:8000:63bf:f7f7:f7f7", None),
        ("2001::/32", "2001:1::80ff:fffe", None),
        ("2001:db8::/32", "2001:db8::1", Some("documentation")),
        ("2001:db8::/32", "2001:db9::1", None),
        ("fec0::/10", "fec0::1", Some("site-local")),
        ("fec0::/10", "feff:ffff::1", Some("site-local")),
        ("fec0::/10", "ff00::1", Some("broadcast or multicast")),
        ("fc00::/7", "fc00::1", Some("private")),
        ("fc00::/7", "fdff:ffff::1", Some("private")),
        ("fc00::/7", "fe00::1", None),
        ("fc00::/7", "fbff:ffff::1", None),
        ("fe80::/10", "febf::1", Some("link-local or metadata")),
        ("ff00::/8", "ff02::1", Some("broadcast or multicast")),
    ];

    #[test]
    fn every_special_purpose_range_is_refused_and_its_neighbours_are_not() {
        for (range, address, expected) in RANGES {
            assert_eq!(
                internal_kind(ip(address)),
                *expected,
                "{address} (the case of {range})"
            );
        }
    }

    #[test]
    fn the_allow_list_opens_the_reserved_ranges_and_what_carries_them() {
        let refused: Vec<&str> = RANGES
            .iter()
            .filter(|(_, _, expected)| expected.is_some())
            .map(|(_, address, _)| *address)
            .collect();
        let closed = EgressPolicy::default();
        let open = EgressPolicy::new(
            ["0.0.0.0/0", "::/0"]
                .map(|rule| rule.parse().expect("rule"))
                .to_vec(),
        );
        for address in refused {
            assert!(!closed.permits("h", ip(address)), "{address}");
            assert!(open.permits("h", ip(address)), "{address}");
        }
        let private = EgressPolicy::new(vec!["10.0.0.0/8".parse().expect("rule")]);
        assert!(private.permits("h", ip("::ffff:10.1.2.3")));
        assert!(private.permits("h", ip("2002:a00:1::1")));
        assert!(!private.permits("h", ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn a_proxy_url_keeps_its_password_out_of_sight() {
        let proxy: EgressProxy = "http://ops%40corp:s3cr%3At-pw@proxy.corp.internal:3128"
            .parse()
            .expect("a proxy URL");
        assert_eq!(proxy.url.as_str(), "http://proxy.corp.internal:3128/");
        assert_eq!(proxy.username, "ops@corp");
        assert_eq!(
            proxy.password.as_ref().map(ExposeSecret::expose_secret),
            Some("s3cr:t-pw")
        );
        let debug = format!("{proxy:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
        assert!("https://proxy.test".parse::<EgressProxy>().is_ok());

        for (bad, expected) in [
            (
                "proxy.test:3128",
                "scheme `proxy.test` is not http or https",
            ),
            ("not a url", "it is not a URL"),
            (
                "socks5://u:s3cr-pw@proxy.test:1080",
                "scheme `socks5` is not http or https",
            ),
            (
                "http://u:s3cr-pw@proxy.test:3128/path",
                "it has a path, query or fragment",
            ),
            (
                "http://u:s3cr-pw@proxy.test:3128/?q=1",
                "it has a path, query or fragment",
            ),
            ("http://u:s3cr-pw@:3128", "it is not a URL"),
        ] {
            let error = bad.parse::<EgressProxy>().expect_err(bad);
            assert!(error.starts_with(expected), "{bad}: {error}");
            assert!(!error.contains("s3cr"), "{bad}: {error}");
        }
    }

    #[tokio::test]
    async fn through_a_proxy_a_target_name_is_resolved_and_refused_if_any_address_is_internal() {
        let proxy = Some("http://127.0.0.1:3128".parse().expect("proxy"));
        let through = EgressPolicy::default().through(proxy.clone());
        let url = |text: &str| Url::parse(text).expect("URL");
        let refused = through
            .check_target(&url("http://localhost:8080/x"))
            .await
            .expect_err("localhost is loopback");
        assert!(
            refused.to_string().starts_with("egress to `localhost` ("),
            "{refused}"
        );
        assert!(
            through
                .check_target(&url("http://10.0.0.1/"))
                .await
                .is_err()
        );
        let unresolved = through
            .check_target(&url("http://no-such-host.invalid/"))
            .await
            .expect_err("cannot be checked");
        assert!(
            unresolved
                .to_string()
                .contains("the name does not resolve here"),
            "{unresolved}"
        );
        assert!(
            through
                .check_target(&url("http://93.184.215.14/"))
                .await
                .is_ok(),
            "a public address"
        );
        // Directly, names are left to the resolver, which checks what is connected to.
        let direct = EgressPolicy::default();
        assert!(
            direct
                .check_target(&url("http://localhost:8080/x"))
                .await
                .is_ok()
        );
        // A host allowed by name goes to the proxy unresolved.
        let named =
            EgressPolicy::new(vec!["partner.invalid".parse().expect("rule")]).through(proxy);
        assert!(
            named
                .check_target(&url("http://partner.invalid/"))
                .await
                .is_ok()
        );
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

    #[test]
    fn a_refusal_names_the_host_the_address_and_the_rule() {
        let policy = EgressPolicy::default();
        let url = Url::parse("http://169.254.169.254/latest/meta-data").expect("URL");
        let refused = policy.check_url(&url).expect_err("metadata refused");
        assert_eq!(
            refused.to_string(),
            "egress to `169.254.169.254` is refused: link-local or metadata addresses are not reachable unless WEFT_EGRESS_ALLOW lists them"
        );
        let refused = policy
            .check_ip("localhost", ip("127.0.0.1"))
            .expect_err("loopback refused");
        assert!(
            refused
                .to_string()
                .starts_with("egress to `localhost` (127.0.0.1) is refused: loopback"),
            "{refused}"
        );
        assert!(
            policy
                .check_url(&Url::parse("http://[::1]:9/").expect("URL"))
                .is_err()
        );
        assert!(
            policy
                .check_url(&Url::parse("https://api.github.com/").expect("URL"))
                .is_ok(),
            "host names are checked when they resolve"
        );
    }
}
