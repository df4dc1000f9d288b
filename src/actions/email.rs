//! The email action, over SMTP with lettre (`--smtp-url`, lettre's URL form).
//!
//! Accepted by the server succeeds; transient failures (4xx, connection) are
//! retried; permanent ones (5xx) are dead. A rendered address or subject with
//! CR or LF is refused permanently (no header injection).

use lettre::message::{Mailbox, MultiPart, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{AttemptResult, Rendered, SetupError, has_crlf};
use crate::actions::Outcome;

pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    default_from: String,
}

impl Mailer {
    /// `smtp_url` is lettre's URL form (`smtp://user:pass@host:587`, `smtps://…`).
    pub fn new(smtp_url: Option<&str>, default_from: &str) -> Result<Self, SetupError> {
        let transport = match smtp_url {
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(SetupError::SmtpUrl)?
                    .timeout(Some(std::time::Duration::from_secs(30)))
                    .build(),
            ),
            None => None,
        };
        Ok(Self {
            transport,
            default_from: default_from.to_owned(),
        })
    }

    pub async fn run(&self, rendered: &Rendered) -> AttemptResult {
        let Rendered::Email {
            from,
            to,
            cc,
            bcc,
            subject,
            text,
            html,
        } = rendered
        else {
            return AttemptResult::fail(Outcome::Permanent, "internal: not an email action");
        };
        let Some(transport) = &self.transport else {
            return AttemptResult::fail(
                Outcome::Retryable { retry_after: None },
                "no SMTP server is configured: start hookwire with --smtp-url (HOOKWIRE_SMTP_URL)",
            );
        };
        let from = from.as_deref().unwrap_or(&self.default_from);
        let all = std::iter::once(from)
            .chain(to.iter().chain(cc).chain(bcc).map(String::as_str))
            .chain(std::iter::once(subject.as_str()));
        if let Some(bad) = all.into_iter().find(|v| has_crlf(v)) {
            return AttemptResult::fail(
                Outcome::Permanent,
                format!("CR or LF in a rendered address or subject: {bad:?}"),
            );
        }
        let parse = |s: &str| {
            s.parse::<Mailbox>()
                .map_err(|e| format!("invalid address {s:?}: {e}"))
        };
        let message = (|| -> Result<Message, String> {
            let mut b = Message::builder()
                .from(parse(from)?)
                .subject(subject.as_str());
            for t in to {
                b = b.to(parse(t)?);
            }
            for c in cc {
                b = b.cc(parse(c)?);
            }
            for c in bcc {
                b = b.bcc(parse(c)?);
            }
            let built = match (text, html) {
                (Some(t), Some(h)) => {
                    b.multipart(MultiPart::alternative_plain_html(t.clone(), h.clone()))
                }
                (None, Some(h)) => b.header(ContentType::TEXT_HTML).body(h.clone()),
                (Some(t), None) => b.header(ContentType::TEXT_PLAIN).body(t.clone()),
                (None, None) => b.header(ContentType::TEXT_PLAIN).body(String::new()),
            };
            built.map_err(|e| format!("cannot build the message: {e}"))
        })();
        let message = match message {
            Ok(m) => m,
            Err(e) => return AttemptResult::fail(Outcome::Permanent, e),
        };
        match transport.send(message).await {
            Ok(resp) => AttemptResult {
                outcome: Outcome::Succeeded,
                status_code: Some(u16::from(resp.code())),
                exit_code: None,
                error: None,
                response: resp.message().collect::<Vec<_>>().join("\n").into_bytes(),
                output: None,
            },
            Err(e) => {
                let outcome = if e.is_permanent() {
                    Outcome::Permanent
                } else {
                    Outcome::Retryable { retry_after: None }
                };
                AttemptResult {
                    outcome,
                    status_code: e.status().map(u16::from),
                    exit_code: None,
                    error: Some(format!("SMTP: {e}")),
                    response: Vec::new(),
                    output: None,
                }
            }
        }
    }
}
