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
    let (status, body) = send(api, method, path, None).await?;
    if !status.is_success() {
        let msg = body["error"].as_str().unwrap_or("no detail");
        return Err(format!("{status}: {msg}"));
    }
    Ok(body)
}

/// One admin API call, with a JSON body when given; the status and the
/// JSON answer, whatever the status. `Err` when there is no JSON answer.
pub(crate) async fn send(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(reqwest::StatusCode, Value), String> {
    let base = api.server.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(t) = &api.token {
        req = req.bearer_auth(t);
    }
    if let Some(body) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
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
    Ok((status, body))
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

/// Longest excerpt of an output on one line, in characters.
const EXCERPT: usize = 120;

/// One line, cut short: runs of whitespace become one space, and other
/// control characters are escaped, so what a remote answered or a command
/// printed cannot move the terminal's cursor or restyle it.
fn excerpt(text: &str) -> String {
    let mut out = String::new();
    let mut space = false;
    for c in text.trim().chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if out.chars().count() > EXCERPT {
        out = out.chars().take(EXCERPT - 1).collect();
        out.push('…');
    }
    out
}

/// What an action's successful attempt returned (SPEC §4.7), short: its
/// status or exit code, then its parsed JSON, else its body or stdout. An
/// email keeps nothing (`{}`): it was sent.
fn output_line(o: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(code) = o["status"].as_u64() {
        parts.push(format!("HTTP {code}"));
    } else if let Some(code) = o["exit_code"].as_i64() {
        parts.push(format!("exit {code}"));
    }
    let data = if o["json"].is_null() {
        [&o["body"], &o["stdout"]]
            .into_iter()
            .filter_map(Value::as_str)
            .find(|t| !t.is_empty())
            .map(excerpt)
    } else {
        Some(excerpt(&o["json"].to_string()))
    };
    parts.extend(data.filter(|d| !d.is_empty()));
    if parts.is_empty() {
        "sent".to_owned()
    } else {
        parts.join(" ")
    }
}

/// The delivery of a step's need: of the same rule, made by the same replay
/// when there is one (a replay's step follows the replay's own need).
fn need_of<'a>(all: &'a [Value], d: &Value, name: &str) -> Option<&'a Value> {
    let same: Vec<&Value> = all
        .iter()
        .filter(|x| x["rule"] == d["rule"] && x["action"] == name)
        .collect();
    same.iter()
        .find(|x| x["replayed_by"] == d["replayed_by"])
        .or(same.first())
        .copied()
}

/// `in 3 min`, `in 2 d`: how far ahead `ms` is from now, roughly.
fn from_now(ms: i64) -> String {
    let s = (ms - crate::clock::now_ms()) / 1000;
    match s {
        ..=0 => "now".to_owned(),
        1..90 => format!("in {s} s"),
        90..5400 => format!("in {} min", (s + 30) / 60),
        5400..129_600 => format!("in {} h", (s + 1800) / 3600),
        _ => format!("in {} d", (s + 43_200) / 86_400),
    }
}

/// The lines under a delivery about steps and outputs: what it runs after
/// (with their states), when it is due, why it was skipped, its `when` as
/// evaluated (or when it will be), the outputs of its needs it used; for a
/// delivery that is no step, what it returned when that was kept.
fn delivery_about(out: &mut String, d: &Value, all: &[Value], trace: &Value) {
    let needs: Vec<&str> = d["needs"]
        .as_array()
        .map(|n| n.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !needs.is_empty() {
        let after: Vec<String> = needs
            .iter()
            .map(|n| match need_of(all, d, n) {
                Some(x) => format!("{n} ({})", s(&x["status"])),
                None => format!("{n} (no delivery)"),
            })
            .collect();
        out.push_str(&format!("    after {}\n", after.join(", ")));
    }
    if matches!(d["status"].as_str(), Some("pending" | "retrying"))
        && let (Some(at), Some(ms)) = (d["due_at"].as_str(), d["due_at_ms"].as_i64())
    {
        out.push_str(&format!("    due {at} ({})\n", from_now(ms)));
    }
    if let Some(reason) = d["reason"].as_str() {
        out.push_str(&format!("    skipped: {reason}\n"));
    }
    match serde_json::from_value::<Vec<crate::matching::Step>>(d["when"].clone()) {
        Ok(when) if !when.is_empty() => {
            out.push_str("    when:\n");
            super::test::steps(out, &when, 3);
        }
        _ if d["status"] == "waiting" => {
            // Not evaluated yet: the trace says when it will be.
            let note = trace
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["rule"] == d["rule"])
                .flat_map(|r| r["actions"].as_array().into_iter().flatten())
                .find(|a| a["action"] == d["action"])
                .and_then(|a| a["note"].as_str());
            if let Some(note) = note {
                out.push_str(&format!("    when: {note}\n"));
            }
        }
        _ => {}
    }
    if needs.is_empty() {
        if d["output"].is_object() {
            out.push_str(&format!("    returned: {}\n", output_line(&d["output"])));
        }
        return;
    }
    for n in needs {
        let used = need_of(all, d, n)
            .filter(|x| x["output"].is_object())
            .map_or_else(|| "none".to_owned(), |x| output_line(&x["output"]));
        out.push_str(&format!("    used {n}: {used}\n"));
    }
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
            let all = v["deliveries"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            for d in all {
                out.push_str(&format!(
                    "  {}  {}/{}  {}  {}\n",
                    s(&d["id"]),
                    s(&d["rule"]),
                    s(&d["action"]),
                    s(&d["status"]),
                    delivery_attempts(d)
                ));
                delivery_about(&mut out, d, all, &v["trace"]);
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{excerpt, output_line};

    #[test]
    fn an_excerpt_is_one_short_line_with_control_characters_escaped() {
        assert_eq!(excerpt("  a\n\n b\tc  "), "a b c");
        assert_eq!(excerpt("x\u{1b}[31my"), "x\\u{1b}[31my");
        let long = excerpt(&"z".repeat(500));
        assert_eq!(long.chars().count(), super::EXCERPT);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn an_output_line_has_the_code_then_the_json_else_the_text() {
        let http = json!({"status": 201, "headers": {}, "body": "{\"id\": 7}", "json": {"id": 7}});
        assert_eq!(output_line(&http), r#"HTTP 201 {"id":7}"#);
        let text = json!({"status": 200, "headers": {}, "body": "ok\n", "json": null});
        assert_eq!(output_line(&text), "HTTP 200 ok");
        let command = json!({"exit_code": 0, "stdout": "", "stderr": "warn", "json": null});
        assert_eq!(output_line(&command), "exit 0");
        let printed = json!({"exit_code": 0, "stdout": "done\n", "stderr": "", "json": null});
        assert_eq!(output_line(&printed), "exit 0 done");
        assert_eq!(output_line(&json!({})), "sent");
    }
}
