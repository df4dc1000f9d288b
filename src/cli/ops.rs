//! Operating a running daemon through its admin API: `events`, `event`,
//! `replay`, `deliveries`, `retry`. Readable tables by default, the API's own
//! JSON with `--format json`.

use std::process::ExitCode;

use serde_json::Value;

/// Where the daemon is and how to talk to it.
pub struct Api {
    pub server: String,
    pub token: Option<String>,
    pub json: bool,
}

pub enum Op {
    Events {
        source: Option<String>,
        matched: Option<bool>,
        limit: u32,
    },
    Event {
        id: String,
    },
    Replay {
        id: String,
    },
    Deliveries {
        status: Option<String>,
        limit: u32,
    },
    Retry {
        id: String,
    },
}

pub fn run(api: &Api, op: Op) -> ExitCode {
    crate::redact::register(&api.token);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            super::err(format_args!("hookwire: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(call(api, &op)) {
        Ok(v) => {
            if api.json {
                super::out(&serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                super::out(render(&op, &v).trim_end());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            super::err(format_args!("hookwire: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// `GET path` against the admin API.
pub(crate) async fn get(api: &Api, path: &str) -> Result<Value, String> {
    request(api, reqwest::Method::GET, path).await
}

async fn call(api: &Api, op: &Op) -> Result<Value, String> {
    let (method, path) = match op {
        Op::Events {
            source,
            matched,
            limit,
        } => {
            let mut q = vec![format!("limit={limit}")];
            if let Some(s) = source {
                q.push(format!(
                    "source={}",
                    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                ));
            }
            if let Some(m) = matched {
                q.push(format!("matched={m}"));
            }
            (reqwest::Method::GET, format!("/api/events?{}", q.join("&")))
        }
        Op::Event { id } => (reqwest::Method::GET, format!("/api/events/{}", segment(id))),
        Op::Replay { id } => (
            reqwest::Method::POST,
            format!("/api/events/{}/replay", segment(id)),
        ),
        Op::Deliveries { status, limit } => {
            let status = status
                .as_ref()
                .map(|s| format!("&status={}", segment(s)))
                .unwrap_or_default();
            (
                reqwest::Method::GET,
                format!("/api/deliveries?limit={limit}{status}"),
            )
        }
        Op::Retry { id } => (
            reqwest::Method::POST,
            format!("/api/deliveries/{}/retry", segment(id)),
        ),
    };
    request(api, method, &path).await
}

async fn request(api: &Api, method: reqwest::Method, path: &str) -> Result<Value, String> {
    let base = api.server.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(t) = &api.token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("cannot reach hookwire at {base}: {e}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("reading the answer of {base}: {e}"))?;
    let body: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{base} did not answer with JSON ({status}): {e}"))?;
    if !status.is_success() {
        let msg = body["error"].as_str().unwrap_or("no detail");
        return Err(format!("{status}: {msg}"));
    }
    Ok(body)
}

pub(crate) fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// Left-aligned columns, widths from the content.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            out.push_str(c);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// `n/budget`, or `n` when the budget is unknown (the rule or action is gone).
fn of_budget(n: &Value, budget: &Value) -> String {
    if budget.is_null() {
        s(n)
    } else {
        format!("{}/{}", s(n), s(budget))
    }
}

/// `attempts 3`, and after manual retries how far the current budget is and
/// which request started it: `attempts 3 (1/4 since retry req_…, 1 manual retry)`.
fn delivery_attempts(d: &Value) -> String {
    let mut out = format!("attempts {}", s(&d["attempts"]));
    let retries = d["manual_retries"].as_u64().unwrap_or(0);
    if retries > 0 {
        let by = d["retried_by"]
            .as_str()
            .map(|r| format!(" {r}"))
            .unwrap_or_default();
        out.push_str(&format!(
            " ({} since retry{by}, {retries} manual retr{})",
            of_budget(&d["attempts_in_budget"], &d["budget"]),
            if retries == 1 { "y" } else { "ies" }
        ));
    }
    if let Some(replay) = d["replayed_by"].as_str() {
        out.push_str(&format!(", made by replay {replay}"));
    }
    out
}

/// `#3 (1/4 after retry req_…)`: the lifetime number, unique in the
/// delivery, then the number within its budget and the request behind it.
fn attempt_label(a: &Value, budget: &Value) -> String {
    let mut why = String::new();
    if a["after_retry"] == true {
        why.push_str(" after retry");
        if let Some(r) = a["requested_by"].as_str() {
            why.push_str(&format!(" {r}"));
        }
    } else if let Some(r) = a["requested_by"].as_str() {
        why.push_str(&format!(" of replay {r}"));
    }
    format!(
        "#{} ({}{why})",
        s(&a["number"]),
        of_budget(&a["budget_number"], budget)
    )
}

fn render(op: &Op, v: &Value) -> String {
    match op {
        Op::Events { .. } => {
            let rows = v["events"]
                .as_array()
                .map(|evs| {
                    evs.iter()
                        .map(|e| {
                            let deliveries = e["deliveries"].as_array().map_or(0, Vec::len);
                            let matched: Vec<String> = e["matched"]
                                .as_array()
                                .map(|m| m.iter().map(s).collect())
                                .unwrap_or_default();
                            vec![
                                s(&e["id"]),
                                s(&e["received_at"]),
                                s(&e["source"]),
                                matched.join(","),
                                deliveries.to_string(),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            table(
                &["EVENT", "RECEIVED", "SOURCE", "MATCHED", "DELIVERIES"],
                rows,
            )
        }
        Op::Deliveries { .. } => {
            let rows = v["deliveries"]
                .as_array()
                .map(|ds| {
                    ds.iter()
                        .map(|d| {
                            let mut attempts = s(&d["attempts"]);
                            if d["manual_retries"].as_u64().unwrap_or(0) > 0 {
                                attempts.push_str(&format!(
                                    " ({} since retry)",
                                    of_budget(&d["attempts_in_budget"], &d["budget"])
                                ));
                            }
                            vec![
                                s(&d["id"]),
                                s(&d["status"]),
                                attempts,
                                format!("{}/{}", s(&d["rule"]), s(&d["action"])),
                                s(&d["event_id"]),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            table(
                &["DELIVERY", "STATUS", "ATTEMPTS", "RULE/ACTION", "EVENT"],
                rows,
            )
        }
        Op::Event { .. } => {
            let mut out = format!(
                "event {}  source {}  {} {}  received {}\nmatched: {}\n",
                s(&v["id"]),
                s(&v["source"]),
                s(&v["method"]),
                s(&v["path"]),
                s(&v["received_at"]),
                v["matched"]
                    .as_array()
                    .map(|m| m.iter().map(s).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            );
            for f in v["facts"].as_array().into_iter().flatten() {
                out.push_str(&format!("note: {}\n", s(f)));
            }
            out.push_str("\nwhy:\n");
            for rule in v["trace"].as_array().into_iter().flatten() {
                let verdict = if rule["disabled"] == true {
                    "disabled"
                } else if rule["matched"] == true {
                    "MATCHED"
                } else {
                    "not matched"
                };
                out.push_str(&format!("  {}: {verdict}\n", s(&rule["rule"])));
                if let Ok(steps) =
                    serde_json::from_value::<Vec<crate::matching::Step>>(rule["conditions"].clone())
                {
                    super::test::steps(&mut out, &steps, 2);
                }
            }
            out.push_str("\ndeliveries:\n");
            for d in v["deliveries"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "  {}  {}/{}  {}  {}\n",
                    s(&d["id"]),
                    s(&d["rule"]),
                    s(&d["action"]),
                    s(&d["status"]),
                    delivery_attempts(d)
                ));
                for a in d["attempt_log"].as_array().into_iter().flatten() {
                    let code = if a["status_code"].is_null() {
                        s(&a["exit_code"])
                    } else {
                        s(&a["status_code"])
                    };
                    let err = if a["error"].is_null() {
                        String::new()
                    } else {
                        format!("  {}", s(&a["error"]))
                    };
                    out.push_str(&format!(
                        "    {} {} {} {}ms {code}{err}\n",
                        attempt_label(a, &d["budget"]),
                        s(&a["started_at"]),
                        s(&a["outcome"]),
                        s(&a["duration_ms"])
                    ));
                }
            }
            out
        }
        Op::Replay { .. } => format!(
            "replayed {}: matched {}; new deliveries: {} (request {})\n",
            s(&v["event_id"]),
            v["matched"]
                .as_array()
                .map(|m| m.iter().map(s).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
            v["deliveries"]
                .as_array()
                .map(|m| m.iter().map(s).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
            s(&v["request_id"])
        ),
        Op::Retry { .. } => format!(
            "{} queued again ({}) by request {}\n",
            s(&v["id"]),
            s(&v["status"]),
            s(&v["request_id"])
        ),
    }
}
