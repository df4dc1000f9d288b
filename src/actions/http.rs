//! The http action: one request per attempt, classified per SPEC §4.5.
//!
//! Redirects are never followed (a 3xx is a failure). Every request carries
//! `Idempotency-Key: <delivery id>` and `User-Agent: hookwire/<version>`.
//! Hosts that come from a payload (`allow_payload_host: true`) are checked on
//! the address actually connected to: a resolver that only returns public
//! addresses, and a check of literal IPs before sending.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::{AttemptResult, MAX_CAPTURE, MAX_OUTPUT, Rendered, has_crlf};
use crate::actions::Outcome;
use crate::request::Request;
use crate::rules::HttpAction;

pub const USER_AGENT: &str = concat!("hookwire/", env!("CARGO_PKG_VERSION"));

/// Headers that describe one connection, not the message; never relayed by `forward`.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Whether a forwarded header belongs to the sender's Standard Webhooks or
/// Svix signature. A signing action drops them all: receivers (Svix's
/// `Webhook.verify` among them) read `svix-*` before `webhook-*`, so the
/// sender's set beside ours would make them check the wrong one.
fn is_sender_signature(name: &str) -> bool {
    let starts = |prefix: &str| {
        name.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    starts("webhook-") || starts("svix-")
}

pub struct HttpRunner {
    client: reqwest::Client,
    /// For actions whose host comes from the payload: resolves to public addresses only.
    guarded: reqwest::Client,
}

#[derive(Debug)]
struct RefusedAddress(String);

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RefusedAddress {}

/// Resolves names and keeps only addresses a payload may point at.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| is_public(a.ip()))
                .collect();
            if public.is_empty() {
                let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                return Err(Box::new(RefusedAddress(format!(
                    "refused: {host} resolves to non-public addresses ({})",
                    shown.join(", ")
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a payload-chosen host may be contacted at this address (SPEC §8).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT 100.64/10
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
                || o[0] >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 64:ff9b::/96 and /48
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0)) // IPv4-compatible
        }
    }
}

fn permanent(error: impl Into<String>) -> AttemptResult {
    AttemptResult::fail(Outcome::Permanent, error)
}

impl HttpRunner {
    pub fn new() -> Result<Self, reqwest::Error> {
        let build = |b: reqwest::ClientBuilder| {
            b.redirect(reqwest::redirect::Policy::none())
                .user_agent(USER_AGENT)
                .pool_idle_timeout(Duration::from_secs(90))
                .tcp_nodelay(true)
                .build()
        };
        Ok(Self {
            client: build(reqwest::Client::builder())?,
            guarded: build(reqwest::Client::builder().dns_resolver(Arc::new(PublicOnly)))?,
        })
    }

    pub async fn run(
        &self,
        action: &HttpAction,
        rendered: &Rendered,
        delivery_id: &str,
        event: &Request,
        keep_output: bool,
    ) -> AttemptResult {
        let Rendered::Http {
            method,
            url,
            headers,
            body,
            forward,
        } = rendered
        else {
            return permanent("internal: not an http action");
        };
        let url = match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            Ok(u) => {
                return permanent(format!(
                    "only http and https URLs are allowed, not {}",
                    u.scheme()
                ));
            }
            Err(e) => return permanent(format!("invalid URL `{url}`: {e}")),
        };
        if action.allow_payload_host {
            let literal = match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if let Some(ip) = literal.filter(|ip| !is_public(*ip)) {
                return permanent(format!(
                    "refused: {ip} is not a public address (allow_payload_host)"
                ));
            }
        }
        let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
            return permanent(format!("invalid method {method}"));
        };

        let mut map = HeaderMap::new();
        let bytes = if *forward {
            for (k, v) in &event.headers {
                if HOP_BY_HOP.contains(&k.as_str()) || k == "user-agent" {
                    continue;
                }
                if action.sign_standard.is_some() && is_sender_signature(k) {
                    continue;
                }
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    map.append(n, v);
                }
            }
            event.body.to_vec()
        } else {
            match body {
                None => Vec::new(),
                Some(Value::String(s)) => s.clone().into_bytes(),
                Some(v) => v.to_string().into_bytes(),
            }
        };
        for (k, v) in headers {
            if has_crlf(v) {
                return permanent(format!(
                    "header {k} contains CR or LF after rendering: refused"
                ));
            }
            let name = match HeaderName::from_bytes(k.as_bytes()) {
                Ok(n) => n,
                Err(_) => return permanent(format!("invalid header name {k}")),
            };
            let value = match HeaderValue::from_str(v) {
                Ok(v) => v,
                Err(_) => return permanent(format!("invalid value for header {k}")),
            };
            map.insert(name, value);
        }
        if let Ok(v) = HeaderValue::from_str(delivery_id) {
            map.insert(HeaderName::from_static("idempotency-key"), v);
        }
        map.insert(
            reqwest::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
        if let Some(signer) = &action.sign_standard {
            for (k, v) in signer.sign(&bytes, SystemTime::now(), delivery_id) {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    map.insert(HeaderName::from_static(k), v);
                }
            }
        }

        let client = if action.allow_payload_host {
            &self.guarded
        } else {
            &self.client
        };
        let sent = client
            .request(method, url)
            .headers(map)
            .body(bytes)
            .timeout(action.timeout)
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => return classify_error(&e),
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let limit = if keep_output { MAX_OUTPUT } else { MAX_CAPTURE };
        let output_headers = keep_output.then(|| {
            let mut map = serde_json::Map::new();
            for (k, v) in resp.headers() {
                if let Ok(v) = v.to_str() {
                    map.entry(k.as_str())
                        .or_insert_with(|| Value::String(v.to_owned()));
                }
            }
            Value::Object(map)
        });
        let mut excerpt = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let room = limit.saturating_sub(excerpt.len());
            excerpt.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if excerpt.len() >= limit {
                break;
            }
        }
        let output = output_headers.map(|headers| {
            serde_json::json!({
                "status": status.as_u16(),
                "headers": headers,
                "body": String::from_utf8_lossy(&excerpt),
            })
        });
        excerpt.truncate(MAX_CAPTURE);
        let code = status.as_u16();
        let (outcome, error) = match code {
            200..=299 => (Outcome::Succeeded, None),
            408 | 425 | 429 | 500..=599 => (
                Outcome::Retryable { retry_after },
                Some(format!("HTTP {status}")),
            ),
            300..=399 => (
                Outcome::Permanent,
                Some(format!("HTTP {status}: redirects are not followed")),
            ),
            _ => (Outcome::Permanent, Some(format!("HTTP {status}"))),
        };
        AttemptResult {
            outcome,
            status_code: Some(code),
            exit_code: None,
            error,
            response: excerpt,
            output,
        }
    }
}

fn classify_error(e: &reqwest::Error) -> AttemptResult {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<RefusedAddress>() {
            return permanent(refused.0.clone());
        }
        source = s.source();
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut chain = e.to_string();
    let mut s = std::error::Error::source(e);
    while let Some(inner) = s {
        chain.push_str(": ");
        chain.push_str(&inner.to_string());
        s = inner.source();
    }
    AttemptResult::fail(
        Outcome::Retryable { retry_after: None },
        format!("{what}: {chain}"),
    )
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_non_public_addresses() {
        let refused = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "ff02::1",
        ];
        for ip in refused {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must be refused");
        }
        for ip in [
            "93.184.216.34",
            "140.82.112.3",
            "2606:4700::1111",
            "::ffff:93.184.216.34",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn sender_signature_headers_are_recognised_in_any_case() {
        for name in [
            "webhook-id",
            "Webhook-Signature",
            "WEBHOOK-TIMESTAMP",
            "svix-id",
            "Svix-Signature",
            "webhook-anything",
        ] {
            assert!(is_sender_signature(name), "{name}");
        }
        for name in ["webhook", "x-webhook-id", "svix", "content-type", "é"] {
            assert!(!is_sender_signature(name), "{name}");
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(90));
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(80) && d <= Duration::from_secs(90),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
