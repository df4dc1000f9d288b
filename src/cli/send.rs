//! `hookwire send URL --payload FILE [--sign SCHEME --secret S] [--header 'K: V']...`:
//! send a test webhook signed the way that provider signs, and print the answer.

use std::process::ExitCode;
use std::time::SystemTime;

use crate::ingest::verify::{SignScheme, sign};

pub struct SendOptions {
    pub url: String,
    pub payload: std::path::PathBuf,
    pub sign: Option<String>,
    pub secret: Option<String>,
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

fn send(o: &SendOptions) -> Result<bool, String> {
    crate::redact::register(&o.secret);
    let body = std::fs::read(&o.payload)
        .map_err(|e| format!("cannot read {}: {e}", o.payload.display()))?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for h in &o.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header `{h}` is not 'Name: value'"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        let ct = super::guess_content_type(&o.payload)
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        headers.push(("Content-Type".to_owned(), ct));
    }
    match (&o.sign, &o.secret) {
        (Some(scheme), Some(secret)) => {
            let scheme: SignScheme = scheme.parse()?;
            let id = crate::ids::EventId::new()
                .to_string()
                .replacen("evt_", "msg_", 1);
            for (k, v) in sign(scheme, secret, &body, SystemTime::now(), &id) {
                headers.push((k.to_owned(), v));
            }
        }
        (Some(_), None) => return Err("--sign needs --secret".to_owned()),
        (None, Some(_)) => return Err("--secret needs --sign SCHEME".to_owned()),
        (None, None) => {}
    }
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
