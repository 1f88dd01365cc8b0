//! The Origin allowlist: the defence against cross-site WebSocket hijacking.
//!
//! Browsers send cookies and ambient credentials with a WebSocket handshake from any
//! page, so the server must check which page asked. Origins compare by scheme, lowercase
//! host and port (default ports made explicit), never by substring or prefix, and the
//! opaque origin `null` never matches.

use axum::http::HeaderMap;
use axum::http::header::ORIGIN;
use std::fmt;
use url::Url;

/// Most characters of a refused `Origin` written to the log: enough to recognise a
/// misconfigured origin, too few for a client to fill the log through the header.
const LOGGED_ORIGIN_CHARS: usize = 100;

/// A normalised `scheme://host:port` triple.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses a serialised origin; anything with a path, query, credentials or an
    /// unknown scheme is not an origin and yields `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("null") {
            return None;
        }
        let url = Url::parse(text).ok()?;
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        if url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return None;
        }
        Some(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Why a handshake's `Origin` was refused (logged, never sent to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginRejection {
    Missing,
    Null,
    Malformed,
    NotAllowed,
}

impl OriginRejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "origin_missing",
            Self::Null => "origin_null",
            Self::Malformed => "origin_malformed",
            Self::NotAllowed => "origin_not_allowed",
        }
    }
}

/// Which origins may open a socket or call the API from a browser.
#[derive(Clone, Debug)]
pub struct OriginPolicy {
    allowed: Vec<Origin>,
    allow_any: bool,
    allow_missing: bool,
}

impl OriginPolicy {
    pub fn new(allowed: Vec<Origin>, allow_missing: bool) -> Self {
        Self {
            allowed,
            allow_any: false,
            allow_missing,
        }
    }

    /// Every origin: only when the operator says `*` explicitly.
    pub fn any(allow_missing: bool) -> Self {
        Self {
            allowed: Vec::new(),
            allow_any: true,
            allow_missing,
        }
    }

    pub fn with_allow_missing(mut self, allow_missing: bool) -> Self {
        self.allow_missing = allow_missing;
        self
    }

    /// Checks a request's `Origin` header value (`None` when the header is absent).
    pub fn check(&self, header: Option<&str>) -> Result<(), OriginRejection> {
        let Some(text) = header else {
            return if self.allow_missing {
                Ok(())
            } else {
                Err(OriginRejection::Missing)
            };
        };
        if text.trim().eq_ignore_ascii_case("null") {
            return Err(OriginRejection::Null);
        }
        let origin = Origin::parse(text).ok_or(OriginRejection::Malformed)?;
        if self.allow_any || self.allowed.contains(&origin) {
            Ok(())
        } else {
            Err(OriginRejection::NotAllowed)
        }
    }

    pub fn allows(&self, header: Option<&str>) -> bool {
        self.check(header).is_ok()
    }

    /// Checks a request's `Origin` headers: sent twice, or not text, it is malformed.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<(), OriginRejection> {
        let mut values = headers.get_all(ORIGIN).iter();
        match (values.next(), values.next()) {
            (None, _) => self.check(None),
            (Some(value), None) => {
                let text = value.to_str().map_err(|_| OriginRejection::Malformed)?;
                self.check(Some(text))
            }
            (Some(_), Some(_)) => Err(OriginRejection::Malformed),
        }
    }
}

/// A request's `Origin` header(s) as a log may show them: every value, cut to
/// [`LOGGED_ORIGIN_CHARS`], escaped (quotes, backslashes, control and non-printing
/// characters become `\` escapes) and in quotes, so a header cannot pass for other
/// fields of the line.
pub fn for_log(headers: &HeaderMap) -> String {
    let raw = headers
        .get_all(ORIGIN)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(", ");
    let mut shown: String = raw
        .chars()
        .take(LOGGED_ORIGIN_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if raw.chars().nth(LOGGED_ORIGIN_CHARS).is_some() {
        shown.push('…');
    }
    format!("\"{shown}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OriginPolicy {
        OriginPolicy::new(
            vec![
                Origin::parse("http://localhost:8000").unwrap(),
                Origin::parse("https://chat.example.com").unwrap(),
            ],
            true,
        )
    }

    #[test]
    fn exact_origins_match_after_normalisation() {
        let p = policy();
        assert!(p.allows(Some("http://localhost:8000")));
        assert!(p.allows(Some("HTTP://LOCALHOST:8000")));
        assert!(p.allows(Some("https://chat.example.com:443")));
        assert!(p.allows(Some("https://Chat.Example.com")));
    }

    #[test]
    fn look_alike_origins_are_refused() {
        let p = policy();
        for evil in [
            "http://localhost:8001",
            "http://localhost",
            "https://localhost:8000",
            "https://chat.example.com.evil.com",
            "https://evilchat.example.com",
            "https://chat.example.co",
            "http://chat.example.com",
            "https://chat.example.com/path",
            "https://user@chat.example.com",
            "https://chat.example.com?x=1",
            "chat.example.com",
            "",
        ] {
            assert!(!p.allows(Some(evil)), "{evil} must be refused");
        }
    }

    #[test]
    fn null_is_refused_and_missing_follows_the_setting() {
        assert_eq!(policy().check(Some("null")), Err(OriginRejection::Null));
        assert!(policy().allows(None));
        assert_eq!(
            policy().with_allow_missing(false).check(None),
            Err(OriginRejection::Missing)
        );
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(ORIGIN, axum::http::HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    #[test]
    fn a_repeated_or_binary_origin_header_is_malformed() {
        let p = policy();
        assert_eq!(p.check_headers(&headers(&[])), Ok(()));
        assert_eq!(
            p.check_headers(&headers(&[b"http://localhost:8000"])),
            Ok(())
        );
        assert_eq!(
            p.check_headers(&headers(&[
                b"http://localhost:8000",
                b"http://localhost:8000"
            ])),
            Err(OriginRejection::Malformed)
        );
        assert_eq!(
            p.check_headers(&headers(&[b"http://caf\xe9.example"])),
            Err(OriginRejection::Malformed)
        );
    }

    #[test]
    fn a_logged_origin_is_escaped_and_cut_short() {
        assert_eq!(
            for_log(&headers(&[b"http://a\"b\t.example"])),
            r#""http://a\"b\t.example""#
        );
        let long = format!("http://{}.example", "a".repeat(500));
        let shown = for_log(&headers(&[long.as_bytes()]));
        assert_eq!(shown.chars().count(), LOGGED_ORIGIN_CHARS + 3);
        assert!(shown.ends_with("…\""));
    }

    #[test]
    fn star_allows_any_well_formed_origin_but_not_null() {
        let p = OriginPolicy::any(true);
        assert!(p.allows(Some("https://anything.example")));
        assert!(!p.allows(Some("null")));
    }
}
