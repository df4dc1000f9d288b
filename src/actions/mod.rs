//! Actions for one event: rendering what would be sent or run, and running it
//! once ([`Runner`]).
//!
//! Rendering happens from the *current* rule set at each attempt (so a fixed
//! rule file fixes pending retries) and for `hookwire test`, which prints the
//! result. Retries, leases and breakers are the dispatcher's job; the runner
//! only turns one rendered action into one [`AttemptResult`].

pub mod command;
pub mod email;
pub mod http;

use serde::Serialize;
use serde_json::Value;

use crate::request::Request;
use crate::rules::{Action, ActionKind, HttpBody, Stdin};
use crate::template::{Context, RenderError, Template};

/// How much of a response body, stdout or stderr an attempt keeps.
pub const MAX_CAPTURE: usize = 64 * 1024;
/// How much of a response body (or of stdout, and of stderr) the output of
/// an action some step needs keeps (SPEC §4.7: outputs up to 1 MiB).
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// What one attempt came to, as each action classifies it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Succeeded,
    /// Worth trying again (network error, timeout, 5xx, 429…); the target may name a wait.
    Retryable {
        retry_after: Option<std::time::Duration>,
    },
    /// Trying again cannot help (4xx, 3xx, invalid header, permanent SMTP error).
    Permanent,
    /// The rule or action no longer exists.
    Skipped,
}

impl Outcome {
    /// The outcome as the attempt history records it.
    pub fn recorded(self) -> crate::store::AttemptOutcome {
        use crate::store::AttemptOutcome;
        match self {
            Outcome::Succeeded => AttemptOutcome::Succeeded,
            Outcome::Retryable { .. } => AttemptOutcome::Retryable,
            Outcome::Permanent => AttemptOutcome::Failed,
            Outcome::Skipped => AttemptOutcome::Skipped,
        }
    }

    pub fn label(self) -> &'static str {
        self.recorded().as_str()
    }
}

/// What running one attempt of an action came to.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub outcome: Outcome,
    pub status_code: Option<u16>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// The first [`MAX_CAPTURE`] bytes of the response (or stdout, then stderr).
    pub response: Vec<u8>,
    /// What a step that needs this action reads (SPEC §4.7), when it was
    /// asked for: http `{status, headers, body}`, command `{exit_code,
    /// stdout, stderr}`, email `{}` (`json` is added when it is read).
    pub output: Option<Value>,
}

impl AttemptResult {
    pub fn fail(outcome: Outcome, error: impl Into<String>) -> Self {
        Self {
            outcome,
            status_code: None,
            exit_code: None,
            error: Some(error.into()),
            response: Vec::new(),
            output: None,
        }
    }
}

/// A rendered header value (or address, or subject) may not start a new header.
pub fn has_crlf(s: &str) -> bool {
    s.contains(['\r', '\n'])
}

/// An action with every template rendered.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Rendered {
    Http {
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        /// JSON for typed bodies, text otherwise; absent for `forward` (the original body is sent).
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<Value>,
        forward: bool,
    },
    Email {
        from: Option<String>,
        to: Vec<String>,
        cc: Vec<String>,
        bcc: Vec<String>,
        subject: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        html: Option<String>,
    },
    Command {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stdin: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
    },
}

/// Why the runners cannot be built (at start, before anything runs). The
/// message names the cause itself, so the cause is kept as a field and not
/// also chained as `source()` (which would print it twice under `{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(reqwest::Error),
    #[error("invalid --smtp-url: {0}")]
    SmtpUrl(lettre::transport::smtp::Error),
}

/// Runs a rendered action once: the one place that picks the runner for an
/// action's type, for the dispatcher and `hookwire test --execute` alike.
pub struct Runner {
    http: http::HttpRunner,
    mailer: email::Mailer,
}

impl Runner {
    pub fn new(smtp_url: Option<&str>, smtp_from: &str) -> Result<Self, SetupError> {
        Ok(Self {
            http: http::HttpRunner::new().map_err(SetupError::HttpClient)?,
            mailer: email::Mailer::new(smtp_url, smtp_from)?,
        })
    }

    /// `req` is the event's request: forwarded by `forward: true` and named
    /// in a command's environment. With `keep_output` (a step needs this
    /// action) the result carries the action's output.
    pub async fn run(
        &self,
        action: &Action,
        rendered: &Rendered,
        delivery_id: &str,
        rule: &str,
        req: &Request,
        keep_output: bool,
    ) -> AttemptResult {
        match &action.kind {
            ActionKind::Http(h) => {
                self.http
                    .run(h, rendered, delivery_id, req, keep_output)
                    .await
            }
            ActionKind::Email(_) => {
                let mut result = self.mailer.run(rendered).await;
                if keep_output {
                    result.output = Some(Value::Object(serde_json::Map::new()));
                }
                result
            }
            ActionKind::Command(c) => {
                let ids = command::CommandEnv {
                    event_id: &req.event_id,
                    rule,
                    source: &req.source,
                };
                command::run(c, rendered, &ids, keep_output).await
            }
        }
    }
}

fn all(ts: &[Template], ctx: &Context) -> Result<Vec<String>, RenderError> {
    ts.iter().map(|t| t.render(ctx)).collect()
}

fn pairs(ts: &[(String, Template)], ctx: &Context) -> Result<Vec<(String, String)>, RenderError> {
    ts.iter()
        .map(|(k, t)| Ok((k.clone(), t.render(ctx)?)))
        .collect()
}

pub fn render(action: &Action, ctx: &Context, req: &Request) -> Result<Rendered, RenderError> {
    Ok(match &action.kind {
        ActionKind::Http(h) => {
            let mut headers = pairs(&h.headers, ctx)?;
            let has = |headers: &[(String, String)], name: &str| {
                headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
            };
            let (body, content_type) = match &h.body {
                None => (None, None),
                Some(HttpBody::Json(t)) => (Some(t.render(ctx)?), Some("application/json")),
                Some(HttpBody::Text(t)) => (
                    Some(Value::String(t.render(ctx)?)),
                    Some("text/plain; charset=utf-8"),
                ),
                Some(HttpBody::Form(fields)) => {
                    let rendered = pairs(fields, ctx)?;
                    let text = url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(rendered)
                        .finish();
                    (
                        Some(Value::String(text)),
                        Some("application/x-www-form-urlencoded"),
                    )
                }
            };
            if let Some(ct) = content_type
                && !has(&headers, "content-type")
            {
                headers.push(("Content-Type".to_owned(), ct.to_owned()));
            }
            Rendered::Http {
                method: h.method.clone(),
                url: h.url.render(ctx)?,
                headers,
                body,
                forward: h.forward,
            }
        }
        ActionKind::Email(e) => Rendered::Email {
            from: e.from.as_ref().map(|f| f.render(ctx)).transpose()?,
            to: all(&e.to, ctx)?,
            cc: all(&e.cc, ctx)?,
            bcc: all(&e.bcc, ctx)?,
            subject: e.subject.render(ctx)?,
            text: e.text.as_ref().map(|t| t.render(ctx)).transpose()?,
            html: e.html.as_ref().map(|t| t.render(ctx)).transpose()?,
        },
        ActionKind::Command(c) => Rendered::Command {
            argv: all(&c.argv, ctx)?,
            env: pairs(&c.env, ctx)?,
            stdin: match &c.stdin {
                Stdin::None => None,
                // From the context: the dispatcher moves the payload out of `req` into it.
                Stdin::Payload => Some(ctx.data()["payload"].to_string()),
                Stdin::Raw => Some(req.body_text().into_owned()),
                Stdin::Template(t) => Some(t.render(ctx)?),
            },
            cwd: c.cwd.as_ref().map(|p| p.display().to_string()),
        },
    })
}

/// Every template of an action, for "missing field" warnings.
pub fn templates(action: &Action) -> Vec<&Template> {
    let mut out: Vec<&Template> = Vec::new();
    out.extend(action.serialize_by.iter());
    match &action.kind {
        ActionKind::Http(h) => {
            out.push(&h.url);
            out.extend(h.headers.iter().map(|(_, t)| t));
            match &h.body {
                Some(HttpBody::Json(j)) => out.extend(j.templates()),
                Some(HttpBody::Text(t)) => out.push(t),
                Some(HttpBody::Form(f)) => out.extend(f.iter().map(|(_, t)| t)),
                None => {}
            }
        }
        ActionKind::Email(e) => {
            out.extend(e.to.iter().chain(&e.cc).chain(&e.bcc));
            out.extend(e.from.iter());
            out.push(&e.subject);
            out.extend(e.text.iter().chain(e.html.iter()));
        }
        ActionKind::Command(c) => {
            out.extend(c.argv.iter());
            out.extend(c.env.iter().map(|(_, t)| t));
            if let Stdin::Template(t) = &c.stdin {
                out.push(t);
            }
        }
    }
    out
}
