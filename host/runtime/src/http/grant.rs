//! An outbound HTTP grant, `[METHODS ]scheme://host[:port][/path-prefix]`: parsed strictly, matched against requests, and compared with other grants.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Where an agent may send requests. Written as
/// `https://api.example.com/v1`, `http://127.0.0.1:8080` or
/// `GET,POST https://*.example.com`; the port defaults to the scheme's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpGrant {
    /// Upper-case methods; empty allows any.
    pub methods: Vec<String>,
    pub https: bool,
    /// Lower-case host name, `*.` + a suffix, or an IP address.
    pub host: String,
    pub port: u16,
    /// `""` or a path starting with `/`, without a trailing `/`.
    pub path: String,
}

/// The parts of a request the grants are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub method: String,
    pub https: bool,
    /// Lower case; an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
    /// The path without the query.
    pub path: String,
}

impl Target {
    /// `scheme://host:port`, with brackets around an IPv6 address.
    pub fn origin(&self) -> String {
        origin(self.https, &self.host, self.port)
    }

    /// The grant that would allow this request: its origin, as narrow as
    /// an operator would likely write it.
    pub fn grant_line(&self) -> String {
        self.origin()
    }

    /// The `Host` header: the host, and the port when it is not the
    /// scheme's.
    pub fn host_header(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        match self.port {
            p if p == default => bracketed(&self.host).into_owned(),
            p => format!("{}:{p}", bracketed(&self.host)),
        }
    }
}

fn origin(https: bool, host: &str, port: u16) -> String {
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{}:{port}", bracketed(host))
}

/// An IPv6 address in brackets, as URLs write it; anything else as is.
fn bracketed(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') {
        format!("[{host}]").into()
    } else {
        host.into()
    }
}

/// A host in the one spelling grants and requests are compared in: an
/// address as Rust prints it (`::1`, never `0::1`), a name in lower case.
pub(crate) fn canonical_host(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

impl HttpGrant {
    /// Parses the grant form; the error says what is wrong and how a valid
    /// one looks.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        let (methods, url) = match spec.split_once(' ') {
            Some((m, rest)) => (parse_methods(m)?, rest.trim()),
            None => (Vec::new(), spec),
        };
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "`{url}` does not start with http:// or https:// (a grant looks like `https://api.example.com/v1`)"
            ));
        };
        if rest.contains(['?', '#', '@', '\\']) || rest.chars().any(char::is_whitespace) {
            return Err(format!(
                "`{url}` has a query, fragment, user or space; a grant is scheme://host[:port][/path-prefix]"
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if has_dot_segment(path) {
            return Err(format!("`{url}` has a `.` or `..` path segment"));
        }
        let (host, port) = split_authority(authority, https)
            .ok_or_else(|| format!("`{url}` has no valid host[:port]"))?;
        check_host(&host).map_err(|why| format!("`{url}`: {why}"))?;
        Ok(Self {
            methods,
            https,
            host,
            port,
            path: path.to_owned(),
        })
    }

    /// Whether a request to `t` is allowed by this grant.
    pub fn allows(&self, t: &Target) -> bool {
        self.https == t.https
            && self.port == t.port
            && host_matches(&self.host, &t.host)
            && (self.methods.is_empty() || self.methods.contains(&t.method))
            && path_within(&self.path, &t.path)
    }

    /// Whether everything `other` allows, this allows too (a tenant's
    /// ceiling over a workflow's grant, a grant over a declared need).
    pub fn covers(&self, other: &HttpGrant) -> bool {
        let hosts = if let Some(suffix) = other.host.strip_prefix("*.") {
            self.host
                .strip_prefix("*.")
                .is_some_and(|mine| suffix == mine || suffix.ends_with(&format!(".{mine}")))
        } else {
            host_matches(&self.host, &other.host)
        };
        let methods = self.methods.is_empty()
            || (!other.methods.is_empty()
                && other.methods.iter().all(|m| self.methods.contains(m)));
        self.https == other.https
            && self.port == other.port
            && hosts
            && methods
            && path_within(&self.path, &other.path)
    }

    /// Whether the grant names an IP address itself: only such a grant
    /// reaches a loopback, private or link-local address.
    pub fn names_address(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.methods.is_empty() {
            write!(f, "{} ", self.methods.join(","))?;
        }
        write!(
            f,
            "{}{}",
            origin(self.https, &self.host, self.port),
            self.path
        )
    }
}

impl TryFrom<String> for HttpGrant {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<HttpGrant> for String {
    fn from(g: HttpGrant) -> String {
        g.to_string()
    }
}

fn parse_methods(list: &str) -> Result<Vec<String>, String> {
    list.split(',')
        .map(|m| {
            let ok = !m.is_empty() && m.len() <= 16 && m.bytes().all(|b| b.is_ascii_uppercase());
            ok.then(|| m.to_owned()).ok_or_else(|| {
                format!("`{list}` is not a list of methods such as `GET,POST` before the URL")
            })
        })
        .collect()
}

/// Host (lower case, brackets removed) and port (the scheme's by default).
fn split_authority(authority: &str, https: bool) -> Option<(String, u16)> {
    let default = if https { 443 } else { 80 };
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        h.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
        None => default,
    };
    // An IPv6 address needs its brackets: `::1:80` could be read two ways.
    if host.is_empty() || (host.contains(':') && !authority.starts_with('[')) {
        return None;
    }
    Some((canonical_host(host), port))
}

fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "`{host}` is not a host name (letters, digits, `-` and dots; `*.` only as a prefix)"
        ));
    }
    Ok(())
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        // A wildcard names hosts, never an address.
        Some(suffix) => {
            host.parse::<IpAddr>().is_err()
                && host.len() > suffix.len() + 1
                && host.ends_with(&format!(".{suffix}"))
        }
        None => pattern == host,
    }
}

/// Whether `path` lies under `prefix` at a segment boundary, and cannot
/// climb out of it: dot segments and encoded slashes or dots are refused
/// under a prefix, since a server may decode them.
fn path_within(prefix: &str, path: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    let under = path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'));
    let lower = path.to_ascii_lowercase();
    let encoded = ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e));
    // `;` starts matrix parameters, which some servers strip before
    // resolving `..;`; non-ASCII may be normalized into dots.
    let odd = path.contains(['\\', ';']) || !path.is_ascii();
    under && !encoded && !odd && !has_dot_segment(path)
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: &str, url: &str) -> Target {
        let g = HttpGrant::parse(url).unwrap();
        Target {
            method: method.into(),
            https: g.https,
            host: g.host,
            port: g.port,
            path: if g.path.is_empty() {
                "/".into()
            } else {
                g.path
            },
        }
    }

    #[test]
    fn parses_and_prints_the_grant_form() {
        let g = HttpGrant::parse("GET,POST https://API.example.com/v1/").unwrap();
        assert_eq!(g.to_string(), "GET,POST https://api.example.com:443/v1");
        let g = HttpGrant::parse("http://[::1]:8080").unwrap();
        assert_eq!((g.host.as_str(), g.port), ("::1", 8080));
        let g = HttpGrant::parse("http://[0:0::1]:8080").unwrap();
        assert_eq!(g.host, "::1");
        assert_eq!(g.to_string(), "http://[::1]:8080");
        for bad in [
            "ftp://x",
            "https://",
            "https://a b",
            "https://x:0",
            "https://x:99999",
            "https://user@x",
            "https://x/a?b",
            "https://x/../y",
            "https://-x",
            "https://x.*.com",
            "get https://x",
            "http://::1:80",
        ] {
            assert!(HttpGrant::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn matches_scheme_host_port_method_and_path_prefix() {
        let g = HttpGrant::parse("GET https://api.example.com/v1").unwrap();
        assert!(g.allows(&target("GET", "https://api.example.com/v1")));
        assert!(g.allows(&target("GET", "https://api.example.com/v1/chat")));
        assert!(!g.allows(&target("GET", "https://api.example.com/v10")));
        assert!(!g.allows(&target("POST", "https://api.example.com/v1")));
        assert!(!g.allows(&target("GET", "http://api.example.com/v1")));
        assert!(!g.allows(&target("GET", "https://api.example.com:8443/v1")));
        assert!(!g.allows(&target("GET", "https://evil.com/v1")));
        let mut escape = target("GET", "https://api.example.com/v1");
        escape.path = "/v1/%2E%2E/admin".into();
        assert!(!g.allows(&escape));
        escape.path = "/v1/../admin".into();
        assert!(!g.allows(&escape));
        escape.path = "/v1/..;/admin".into();
        assert!(!g.allows(&escape));
        escape.path = "/v1/\u{ff0e}\u{ff0e}/admin".into();
        assert!(!g.allows(&escape));
        let w = HttpGrant::parse("https://*.example.com").unwrap();
        assert!(w.allows(&target("PUT", "https://a.b.example.com/x")));
        assert!(!w.allows(&target("PUT", "https://example.com/x")));
        assert!(!w.allows(&target("PUT", "https://badexample.com/x")));
    }

    #[test]
    fn a_grant_covers_narrower_ones_only() {
        let p = |s| HttpGrant::parse(s).unwrap();
        assert!(p("https://*.example.com").covers(&p("https://a.example.com/v1")));
        assert!(p("https://*.example.com").covers(&p("https://*.a.example.com")));
        assert!(!p("https://*.a.example.com").covers(&p("https://*.example.com")));
        assert!(p("https://x.com/v1").covers(&p("GET https://x.com/v1/a")));
        assert!(!p("https://x.com/v1").covers(&p("https://x.com")));
        assert!(!p("GET https://x.com").covers(&p("https://x.com")));
        assert!(p("GET,POST https://x.com").covers(&p("POST https://x.com")));
    }
}
