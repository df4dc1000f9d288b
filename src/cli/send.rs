//! `hookwire send URL --payload FILE [--sign SCHEME --secret S] [--event NAME] [--header 'K: V']...`:
//! send a test webhook the way that provider sends it — its signature and the
//! headers its own receiver libraries require — and print the answer.

use std::process::ExitCode;
use std::time::SystemTime;

use crate::verify::{SignScheme, Signer};

pub struct SendOptions {
    pub url: String,
    pub payload: std::path::PathBuf,
    pub sign: Option<String>,
    pub secret: Option<String>,
    /// The event name (GitHub, GitLab) or topic (Shopify) to announce.
    pub event: Option<String>,
    pub headers: Vec<String>,
}

pub fn run(o: &SendOptions) -> ExitCode {
    match send(o) {
        Ok(ok) => {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            super::err(format_args!("hookwire send: {e}"));
            ExitCode::from(2)
        }
    }
}

/// Shopify's receivers (`shopify.webhooks.validate`) require the shop and
/// API version headers; these stand in until `--header` names real ones.
const SHOPIFY_SHOP_DOMAIN: &str = "hookwire-test.myshopify.com";
const SHOPIFY_API_VERSION: &str = "2025-07";

/// The headers a provider sends with every delivery besides its signature,
/// those its own receiver libraries require: GitHub's event and delivery id
/// (octokit/webhooks refuses a request without either), GitLab's event and
/// its UUID, Shopify's topic, shop, API version and webhook id
/// (`shopify.webhooks.validate`). Stripe, Slack and Standard Webhooks need
/// nothing beyond what [`Signer::sign`] writes (`webhook-id` included).
fn provider_headers(
    scheme: SignScheme,
    event: Option<&str>,
    now: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let pairs = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let id = uuid_v4();
    Ok(match scheme {
        SignScheme::Github => pairs(&[
            ("X-GitHub-Event", event.unwrap_or("ping")),
            ("X-GitHub-Delivery", id.as_str()),
        ]),
        SignScheme::Gitlab => pairs(&[
            ("X-Gitlab-Event", event.unwrap_or("Push Hook")),
            ("X-Gitlab-Event-UUID", id.as_str()),
        ]),
        SignScheme::Shopify => pairs(&[
            ("X-Shopify-Topic", event.unwrap_or("orders/create")),
            ("X-Shopify-Shop-Domain", SHOPIFY_SHOP_DOMAIN),
            ("X-Shopify-API-Version", SHOPIFY_API_VERSION),
            ("X-Shopify-Webhook-Id", id.as_str()),
            (
                "X-Shopify-Triggered-At",
                crate::clock::rfc3339(now).as_str(),
            ),
        ]),
        SignScheme::Stripe | SignScheme::Slack | SignScheme::Standard => {
            if event.is_some() {
                return Err(format!(
                    "--event names a GitHub or GitLab event or a Shopify topic; {scheme} sends none"
                ));
            }
            Vec::new()
        }
    })
}

/// A random (version 4) UUID, the form GitHub's `X-GitHub-Delivery` takes.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn send(o: &SendOptions) -> Result<bool, String> {
    crate::redact::register(&o.secret);
    let body = std::fs::read(&o.payload)
        .map_err(|e| format!("cannot read {}: {e}", o.payload.display()))?;
    let mut given: Vec<(String, String)> = Vec::new();
    for h in &o.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header `{h}` is not 'Name: value'"))?;
        given.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut made: Vec<(String, String)> = Vec::new();
    let ct = super::guess_content_type(&o.payload)
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    made.push(("Content-Type".to_owned(), ct));
    match (&o.sign, &o.secret) {
        (Some(scheme), Some(secret)) => {
            let scheme = scheme.parse::<SignScheme>().map_err(|e| e.to_string())?;
            // The secret is checked before anything is sent: one the
            // provider's verifier could not use is an error, not a guess.
            let signer = Signer::new(scheme, secret).map_err(|e| e.to_string())?;
            let now = SystemTime::now();
            made.extend(provider_headers(scheme, o.event.as_deref(), now)?);
            let id = crate::ids::EventId::new()
                .to_string()
                .replacen("evt_", "msg_", 1);
            for (k, v) in signer.sign(&body, now, &id) {
                made.push((k.to_owned(), v));
            }
        }
        (Some(_), None) => return Err("--sign needs --secret".to_owned()),
        (None, Some(_)) => return Err("--secret needs --sign SCHEME".to_owned()),
        (None, None) if o.event.is_some() => {
            return Err("--event needs --sign github, gitlab or shopify".to_owned());
        }
        (None, None) => {}
    }
    // A header the user names replaces the one hookwire would send.
    made.retain(|(k, _)| !given.iter().any(|(g, _)| g.eq_ignore_ascii_case(k)));
    let headers: Vec<(String, String)> = made.into_iter().chain(given).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = client.post(&o.url).body(body);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", o.url))?;
        let status = resp.status();
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        super::out(&format!("HTTP {status}"));
        if let Some(id) = request_id {
            super::out(&format!("X-Request-Id: {id}"));
        }
        super::out(text.trim_end());
        Ok(status.is_success())
    })
}
