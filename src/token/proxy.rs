//! Egress through an HTTP proxy: which token endpoint URLs go through it, with the meaning Go's
//! `net/http` (and so most Kubernetes controllers) gives `HTTPS_PROXY` and `NO_PROXY`.
//!
//! The token endpoints are https, so a proxy only ever sees a `CONNECT host:port` and then TLS:
//! the credentials and tokens travel inside the tunnel, never to the proxy itself. Plain-http
//! endpoints (allowed only on loopback, for tests) and loopback hosts are never proxied, as in Go.

use std::fmt;
use std::net::IpAddr;

use reqwest::Url;

/// The proxy the token client sends https requests through, and the hosts that bypass it.
#[derive(Clone, PartialEq, Eq)]
pub struct EgressProxy {
    url: Url,
    no_proxy: Vec<NoProxyEntry>,
}

/// One `NO_PROXY` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NoProxyEntry {
    /// `*`: nothing is proxied.
    Everything,
    /// An address or a CIDR block, e.g. `10.0.0.0/8`, with an optional port.
    Network { addr: IpAddr, prefix: u8, port: Option<u16> },
    /// `example.com` (the name and its subdomains) or `.example.com` (subdomains only), with an
    /// optional port.
    Domain { name: String, subdomains_only: bool, port: Option<u16> },
}

impl EgressProxy {
    /// Reads the proxy settings: the flags if given, else `HTTPS_PROXY`/`https_proxy` and
    /// `NO_PROXY`/`no_proxy` through `env`. `None` when no proxy is set.
    pub fn configure(
        proxy_flag: Option<&str>,
        no_proxy_flag: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<EgressProxy>, String> {
        let first_set = |names: &[&str]| names.iter().filter_map(|n| env(n)).find(|v| !v.trim().is_empty());
        let proxy = match proxy_flag {
            Some(flag) => Some(flag.to_owned()),
            None => first_set(&["HTTPS_PROXY", "https_proxy"]),
        };
        let Some(proxy) = proxy.filter(|p| !p.trim().is_empty()) else { return Ok(None) };
        let no_proxy = match no_proxy_flag {
            Some(flag) => flag.to_owned(),
            None => first_set(&["NO_PROXY", "no_proxy"]).unwrap_or_default(),
        };
        EgressProxy::parse(&proxy, &no_proxy).map(Some)
    }

    /// Parses a proxy URL (`http://host:port`, `https://…`; a bare `host:port` means http, as in
    /// Go) and a comma-separated `NO_PROXY` list.
    pub fn parse(proxy: &str, no_proxy: &str) -> Result<EgressProxy, String> {
        let proxy = proxy.trim();
        let with_scheme = if proxy.contains("://") { proxy.to_owned() } else { format!("http://{proxy}") };
        // The message names the proxy without what precedes '@', which may be a password.
        let shown = with_scheme.rsplit_once('@').map_or(with_scheme.as_str(), |(_, host)| host).to_owned();
        let url = Url::parse(&with_scheme).map_err(|e| format!("proxy {shown:?} is not a valid URL: {e}"))?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(format!("proxy {shown:?}: scheme {other} is not supported; use an http:// or https:// proxy")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("proxy {shown:?} has no host"));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(format!("proxy {shown:?} must be only scheme, host and port"));
        }
        let no_proxy = no_proxy.split(',').map(str::trim).filter(|e| !e.is_empty()).map(NoProxyEntry::parse).collect();
        Ok(EgressProxy { url, no_proxy })
    }

    /// The proxy URL to connect through, credentials included (reqwest sends them as
    /// `Proxy-Authorization` on the CONNECT).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// What decides how a request leaves, for the operator's settings fingerprint only (a
    /// corrected proxy retries failures at once after a restart): scheme, user name, host, port
    /// and `NO_PROXY`, but never the password. The fingerprint lands in `status`, where tenants
    /// read it, and an unkeyed hash of a password can be guessed offline. So a change of only
    /// the password does not count as a change of settings.
    pub fn settings_text(&self) -> String {
        let mut url = self.url.clone();
        // Fails only for URLs that cannot have a password, which then have none.
        let _ = url.set_password(None);
        format!("{url} {:?}", self.no_proxy)
    }

    /// Whether a request to `url` goes through the proxy.
    pub fn applies_to(&self, url: &Url) -> bool {
        url.scheme() == "https" && !self.bypassed_by(url)
    }

    /// True when `url` is never proxied: its host is loopback, or `NO_PROXY` names it.
    fn bypassed_by(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else { return true };
        let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        if host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
            return true;
        }
        let port = url.port_or_known_default();
        self.no_proxy.iter().any(|entry| entry.matches(&host, ip, port))
    }
}

/// The proxy Go's `http.ProxyFromEnvironment` picks for a request to `target`, and so kubectl's
/// for its API server: `HTTPS_PROXY` for https, `HTTP_PROXY` for http, none for a loopback host
/// or one that `NO_PROXY` names (matched against the target, never the proxy). Read via `env`.
pub fn from_environment(target: &Url, env: impl Fn(&str) -> Option<String>) -> Result<Option<Url>, String> {
    let names: &[&str] = match target.scheme() {
        "https" => &["HTTPS_PROXY", "https_proxy"],
        "http" => &["HTTP_PROXY", "http_proxy"],
        _ => return Ok(None),
    };
    let first_set = |names: &[&str]| names.iter().filter_map(|n| env(n)).find(|v| !v.trim().is_empty());
    let Some(proxy) = first_set(names) else { return Ok(None) };
    let proxy = EgressProxy::parse(&proxy, &first_set(&["NO_PROXY", "no_proxy"]).unwrap_or_default())?;
    Ok((!proxy.bypassed_by(target)).then_some(proxy.url))
}

impl NoProxyEntry {
    fn parse(entry: &str) -> NoProxyEntry {
        if entry == "*" {
            return NoProxyEntry::Everything;
        }
        let entry = entry.to_ascii_lowercase();
        if let Some((addr, prefix)) = entry.split_once('/')
            && let (Ok(addr), Ok(prefix)) = (addr.parse::<IpAddr>(), prefix.parse::<u8>())
        {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            return NoProxyEntry::Network { addr, prefix: prefix.min(max), port: None };
        }
        let (host, port) = split_port(&entry);
        if let Ok(addr) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return NoProxyEntry::Network { addr, prefix: if addr.is_ipv4() { 32 } else { 128 }, port };
        }
        // Go reads `*.example.com` as `.example.com`.
        let host = host.strip_prefix('*').unwrap_or(host).trim_end_matches('.');
        let (name, subdomains_only) = match host.strip_prefix('.') {
            Some(name) => (name, true),
            None => (host, false),
        };
        NoProxyEntry::Domain { name: name.to_owned(), subdomains_only, port }
    }

    fn matches(&self, host: &str, ip: Option<IpAddr>, port: Option<u16>) -> bool {
        let port_matches = |wanted: &Option<u16>| wanted.is_none() || *wanted == port;
        match self {
            NoProxyEntry::Everything => true,
            NoProxyEntry::Network { addr, prefix, port: wanted } => {
                ip.is_some_and(|ip| in_network(ip, *addr, *prefix)) && port_matches(wanted)
            }
            NoProxyEntry::Domain { name, subdomains_only, port: wanted } => {
                let subdomain = host.strip_suffix(name.as_str()).is_some_and(|rest| rest.ends_with('.'));
                (subdomain || (!subdomains_only && host == name)) && port_matches(wanted)
            }
        }
    }
}

/// `host:port` → (`host`, port); an IPv6 address without brackets has no port.
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if entry.parse::<IpAddr>().is_ok() {
        return (entry, None);
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => (host, port.parse().ok()),
        _ => (entry, None),
    }
}

fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// The proxy for messages and logs: scheme, host and port, never its credentials.
impl fmt::Display for EgressProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => write!(f, "{}://{host}:{port}", self.url.scheme()),
            None => write!(f, "{}://{host}", self.url.scheme()),
        }
    }
}

impl fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressProxy").field("url", &self.to_string()).field("no_proxy", &self.no_proxy).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxied(no_proxy: &str, url: &str) -> bool {
        EgressProxy::parse("proxy.corp:3128", no_proxy).unwrap().applies_to(&Url::parse(url).unwrap())
    }

    #[test]
    fn the_api_servers_proxy_is_chosen_as_go_and_kubectl_choose_it() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        };
        let pick = |server: &str, vars: &'static [(&'static str, &'static str)]| {
            from_environment(&Url::parse(server).unwrap(), env(vars)).unwrap().map(|u| u.to_string())
        };
        let https = &[("HTTPS_PROXY", "http://proxy.corp:3128"), ("HTTP_PROXY", "http://plain.corp:8080")];
        assert_eq!(pick("https://api.corp:6443", https).as_deref(), Some("http://proxy.corp:3128/"));
        // Loopback never goes through a proxy, whatever NO_PROXY says.
        assert_eq!(pick("https://127.0.0.1:6443", https), None);
        assert_eq!(pick("https://[::1]:6443", https), None);
        assert_eq!(pick("https://localhost:6443", https), None);
        // `kubectl proxy` serves plain http: HTTP_PROXY applies, not HTTPS_PROXY.
        assert_eq!(pick("http://api.corp:8001", https).as_deref(), Some("http://plain.corp:8080/"));
        assert_eq!(pick("http://api.corp:8001", &[("HTTPS_PROXY", "http://proxy.corp:3128")]), None);
        // NO_PROXY is matched against the API server, not the proxy.
        let bypass = &[("HTTPS_PROXY", "http://proxy.corp:3128"), ("NO_PROXY", "api.corp,10.0.0.0/8")];
        assert_eq!(pick("https://api.corp:6443", bypass), None);
        assert_eq!(pick("https://10.1.2.3:6443", bypass), None);
        assert!(pick("https://kind.example:6443", bypass).is_some());
        let proxy_named = &[("HTTPS_PROXY", "http://proxy.corp:3128"), ("NO_PROXY", "proxy.corp")];
        assert!(pick("https://api.corp:6443", proxy_named).is_some(), "naming the proxy in NO_PROXY bypasses nothing else");
        assert_eq!(pick("https://api.corp:6443", &[]), None);
    }

    #[test]
    fn https_endpoints_go_through_the_proxy_unless_no_proxy_names_them() {
        assert!(proxied("", "https://console.cloud.vmware.com"));
        assert!(proxied("example.com", "https://console.cloud.vmware.com"));
        // A name matches itself and its subdomains, with or without the leading `*`.
        assert!(!proxied("vmware.com", "https://console.cloud.vmware.com"));
        assert!(!proxied("vmware.com", "https://vmware.com"));
        assert!(!proxied("*.vmware.com", "https://console.cloud.vmware.com"));
        assert!(proxied("ware.com", "https://console.cloud.vmware.com"));
        // A leading dot matches subdomains only.
        assert!(!proxied(".vmware.com", "https://console.cloud.vmware.com"));
        assert!(proxied(".vmware.com", "https://vmware.com"));
        // Case, spaces around entries, and a trailing dot do not matter.
        assert!(!proxied(" other.org , Console.Cloud.VMware.com ", "https://console.cloud.vmware.com./"));
        assert!(!proxied("*", "https://console.cloud.vmware.com"));
    }

    #[test]
    fn no_proxy_entries_can_name_ports_addresses_and_networks() {
        assert!(!proxied("console.cloud.vmware.com:443", "https://console.cloud.vmware.com"));
        assert!(proxied("console.cloud.vmware.com:8443", "https://console.cloud.vmware.com"));
        assert!(!proxied("10.0.0.0/8", "https://10.1.2.3:8443"));
        assert!(proxied("10.0.0.0/8", "https://11.1.2.3"));
        assert!(!proxied("192.0.2.7", "https://192.0.2.7"));
        assert!(!proxied("192.0.2.7:443", "https://192.0.2.7"));
        assert!(!proxied("2001:db8::/32", "https://[2001:db8::1]"));
        assert!(proxied("2001:db8::/32", "https://[2001:db9::1]"));
        assert!(!proxied("[2001:db8::1]:443", "https://[2001:db8::1]"));
    }

    #[test]
    fn loopback_and_plain_http_are_never_proxied() {
        assert!(!proxied("", "https://localhost:8443"));
        assert!(!proxied("", "https://127.0.0.1:8443"));
        assert!(!proxied("", "https://[::1]:8443"));
        // Plain http would show the credentials to the proxy; it is allowed only on loopback anyway.
        assert!(!proxied("", "http://console.cloud.vmware.com"));
    }

    #[test]
    fn flags_win_over_the_environment_and_https_proxy_over_its_lower_case() {
        let env = |name: &str| match name {
            "HTTPS_PROXY" => Some("http://upper:3128".to_owned()),
            "https_proxy" => Some("http://lower:3128".to_owned()),
            "NO_PROXY" => Some("vmware.com".to_owned()),
            _ => None,
        };
        let from_env = EgressProxy::configure(None, None, env).unwrap().unwrap();
        assert_eq!(from_env.to_string(), "http://upper:3128");
        assert!(!from_env.applies_to(&Url::parse("https://console.cloud.vmware.com").unwrap()));
        let from_flags = EgressProxy::configure(Some("https://flag:8443"), Some(""), env).unwrap().unwrap();
        assert_eq!(from_flags.to_string(), "https://flag:8443");
        assert!(from_flags.applies_to(&Url::parse("https://console.cloud.vmware.com").unwrap()));
        let lower_only = |name: &str| (name == "https_proxy").then(|| "lower:3128".to_owned());
        assert_eq!(EgressProxy::configure(None, None, lower_only).unwrap().unwrap().to_string(), "http://lower:3128");
        // Empty means unset, as in Go; HTTP_PROXY alone does not apply to https endpoints.
        let unset = |name: &str| match name {
            "HTTPS_PROXY" => Some(String::new()),
            "HTTP_PROXY" => Some("http://plain:3128".to_owned()),
            _ => None,
        };
        assert_eq!(EgressProxy::configure(None, None, unset).unwrap(), None);
    }

    #[test]
    fn bad_proxies_are_refused_without_showing_their_password() {
        for bad in ["socks5://user:hunter22@proxy:1080", "http://user:hunter22@proxy:3128/path", "http://user:hunter22@:3128"] {
            let error = EgressProxy::parse(bad, "").unwrap_err();
            assert!(!error.contains("hunter22"), "{error}");
            assert!(error.contains("proxy"), "{error}");
        }
        let proxy = EgressProxy::parse("http://user:hunter22@proxy.corp:3128", "").unwrap();
        assert_eq!(proxy.to_string(), "http://proxy.corp:3128");
        assert!(!format!("{proxy:?}").contains("hunter22"));
        assert_eq!(proxy.url().password(), Some("hunter22"));
    }

    #[test]
    fn the_settings_text_names_the_proxy_and_its_user_but_not_the_password() {
        let text = EgressProxy::parse("http://robot:hunter22@proxy.corp:3128", ".corp").unwrap().settings_text();
        assert!(!text.contains("hunter22"), "{text}");
        assert!(text.contains("robot@proxy.corp:3128") && text.contains("corp"), "{text}");
        let encoded = EgressProxy::parse("http://robot:p%40ss%3Aw0rd@proxy.corp:3128", "").unwrap().settings_text();
        assert!(!encoded.contains("p%40ss") && !encoded.contains("w0rd"), "{encoded}");
    }
}
