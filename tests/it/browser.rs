//! The dashboard in a real headless browser (Debian's chromium, driven
//! through chromedriver): an event arrives live, its trace opens, Retry on a
//! dead delivery makes it succeed (leaving a screenshot in the test's target
//! directory, `dashboard.png`); and payloads, headers and action output full
//! of markup and `javascript:` URLs show as text, run nothing, and would be
//! stopped by the page's policy if they ever became markup.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{Daemon, Receiver, client};

const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a port it picks itself; killed on drop.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(clippy::disallowed_methods)] // the test starts chromedriver
fn start_driver() -> Driver {
    let mut child = Command::new("chromedriver")
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is needed for the dashboard test: apt-get install chromium chromium-driver (.ci/run does)");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let line = lines.next().expect("chromedriver exited").unwrap();
        if let Some(rest) = line.split("started successfully on port ").nth(1) {
            break rest.trim_end_matches('.').parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Driver(child, port)
}

/// A headless chromium session on a chromedriver of its own.
struct Browser {
    client: Client,
    _driver: Driver,
    _profile: TempDir,
}

impl Browser {
    async fn open() -> Browser {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "the dashboard test needs Debian's chromium: apt-get install chromium chromium-driver (.ci/run does)"
        );
        // Two TLS providers are in the test build (ring and aws-lc); say which one the WebDriver client uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let driver = start_driver();
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--window-size=1400,1000", format!("--user-data-dir={}", profile.path().display())]
            }),
        );
        let client = ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.1))
            .await
            .unwrap();
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    // The page re-renders as the stream reports changes, so elements are found
    // and used by selector, in the page, rather than held across awaits.

    async fn wait_for(&self, css: &str) -> Result<(), CmdError> {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await?;
        Ok(())
    }

    async fn click(&self, css: &str) -> Result<(), CmdError> {
        self.wait_for(css).await?;
        self.js(
            "document.querySelector(arguments[0]).click()",
            vec![json!(css)],
        )
        .await?;
        Ok(())
    }

    async fn text(&self, css: &str) -> Result<String, CmdError> {
        let v = self
            .js(
                "return document.querySelector(arguments[0]).textContent",
                vec![json!(css)],
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value, CmdError> {
        self.client.execute(script, args).await
    }

    /// Saves what the page shows as `name` in the test's target directory.
    async fn screenshot(&self, name: &str) -> Result<(), CmdError> {
        let png = self.client.screenshot().await?;
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_events_traces_and_retries() {
    let rx = Receiver::start().await;
    rx.script("/crm", &[(400, None)]);
    let rules = format!(
        "sources:\n  forms: {{}}\nrules:\n  - name: lead\n    source: forms\n    when: {{ path: $.email, exists: true }}\n    actions:\n      - name: crm\n        http: {{ url: \"{}\" }}\n        retry: {{ attempts: 1 }}\n",
        rx.url("/crm")
    );
    // No admin token: the dashboard answers loopback clients without one.
    let d = Daemon::start(&[("r.yaml", &rules)]);
    let b = Browser::open().await;
    let run = async {
        b.client.goto(&d.url("/")).await?;
        b.wait_for("#live.yes").await?;

        // An event sent now appears in the feed without a reload.
        let sent: Value = d
            .post_json(
                "/hooks/forms",
                json!({"email": "ada@example.com"}).to_string(),
            )
            .await;
        let id = sent["event_id"].as_str().unwrap().to_owned();
        b.click(&format!("#events tr[data-id='{id}']")).await?;

        // The trace, as a table, and the delivery that died on the 400.
        b.wait_for("#detail h3.rule").await?;
        assert!(
            b.text("#detail h3.rule")
                .await?
                .starts_with("lead — matched"),
            "{}",
            b.text("#detail h3.rule").await?
        );
        assert_eq!(b.text("#detail table.trace td.res").await?, "true");
        b.click("#detail button.retry").await?;
        b.wait_for("#detail h3.delivery .pill.succeeded").await?;
        assert_eq!(
            rx.requests("/crm").len(),
            2,
            "the retry reached the receiver"
        );
        // Two attempts, numbered once each; the second names the retry request.
        let e: Value = d.get_json(&format!("/api/events/{id}")).await;
        let by = e["deliveries"][0]["retried_by"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(by.starts_with("req_"), "{e:#}");
        let shown = b
            .js(
                "return [...document.querySelectorAll('#detail table.attempts td.attempt')].map((td) => td.textContent);",
                vec![],
            )
            .await?;
        assert_eq!(
            shown,
            json!(["#1 (1/1)", format!("#2 (1/1 after retry {by})")])
        );
        let head = b.text("#detail h3.delivery").await?;
        assert!(
            head.contains(&format!(
                "attempts 2 (1/1 since retry {by}, 1 manual retry)"
            )),
            "{head}"
        );

        b.screenshot("dashboard.png").await?;
        Ok::<_, CmdError>(())
    };
    let result = run.await;
    let _ = b.client.close().await;
    result.unwrap();
}

/// The rows under a delivery's heading, as `[label, text]` pairs.
async fn about(b: &Browser, delivery: &str) -> Result<Value, CmdError> {
    b.wait_for(&format!("#detail table.about[data-id='{delivery}']"))
        .await?;
    b.js(
        "const t = document.querySelector(`#detail table.about[data-id='${arguments[0]}']`);
         return [...t.tBodies[0].rows].map((r) => [r.cells[0].textContent, r.cells[1].textContent]);",
        vec![json!(delivery)],
    )
    .await
}

/// The `[label, text]` row of `rows` labelled `label`, as text ("" if none).
fn about_row(rows: &Value, label: &str) -> String {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r[0] == label)
        .and_then(|r| r[1].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A chain (SPEC §4.7) in the event detail: the CRM answers with JSON, the
/// step `announce` runs after it (its `when` reads the CRM's answer) and
/// shows what it ran after, its `when` as evaluated and the output it used;
/// a delayed step shows when it is due, and one behind it waits. Leaves
/// `steps.png` in the test's target directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_steps_with_needs_when_and_the_outputs_they_used() {
    let rx = Receiver::start().await;
    // The first lead is not new to the CRM.
    rx.answer_json("/crm", r#"{"id": 12, "created": false}"#);
    let rules = format!(
        r#"sources:
  forms: {{}}
rules:
  - name: lead
    source: forms
    when: {{ path: $.email, exists: true }}
    actions:
      - name: crm
        http:
          url: "{crm}"
          body: {{ email: "{{{{payload.email}}}}" }}
      - name: announce
        needs: crm
        when: {{ step: crm, path: $.json.created, equals: true }}
        http:
          url: "{chat}"
          body: {{ text: "New lead #{{{{steps.crm.json.id}}}}: {{{{payload.email}}}}" }}
      - name: follow-up
        needs: crm
        delay: 2d
        http:
          url: "{mail}"
          body: {{ lead: "{{{{steps.crm.json.id}}}}" }}
      - name: survey
        needs: follow-up
        when: {{ step: follow-up, path: $.status, equals: 200 }}
        http: {{ url: "{mail}" }}
"#,
        crm = rx.url("/crm"),
        chat = rx.url("/chat"),
        mail = rx.url("/mail"),
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    let b = Browser::open().await;
    let run = async {
        b.client.goto(&d.url("/")).await?;
        b.wait_for("#live.yes").await?;

        // Its `when` is false: the step is skipped, and says why.
        let sent: Value = d
            .post_json(
                "/hooks/forms",
                json!({"email": "dup@example.com"}).to_string(),
            )
            .await;
        let dup = sent["event_id"].as_str().unwrap().to_owned();
        b.click(&format!("#events tr[data-id='{dup}']")).await?;
        b.wait_for("#detail h3.delivery .pill.skipped").await?;
        let e: Value = d.get_json(&format!("/api/events/{dup}")).await;
        let skipped = e["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["action"] == "announce")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let rows = about(&b, &skipped).await?;
        assert_eq!(about_row(&rows, "skipped"), "its `when` is false", "{rows}");
        assert!(
            about_row(&rows, "when").contains("equals truefalsefalse"),
            "{rows}"
        );
        assert!(
            about_row(&rows, "used").contains(r#""created":false"#),
            "{rows}"
        );

        // A new lead: the announcement goes out with the CRM's id.
        rx.answer_json("/crm", r#"{"id": 4711, "created": true}"#);
        let sent: Value = d
            .post_json(
                "/hooks/forms",
                json!({"email": "ada@example.com"}).to_string(),
            )
            .await;
        let id = sent["event_id"].as_str().unwrap().to_owned();
        b.click(&format!("#events tr[data-id='{id}']")).await?;
        let chat = rx.wait_for("/chat", 1, Duration::from_secs(20)).await;
        assert_eq!(chat[0].json()["text"], "New lead #4711: ada@example.com");

        let e: Value = d.get_json(&format!("/api/events/{id}")).await;
        let of = |action: &str| {
            e["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["action"] == action)
                .and_then(|x| x["id"].as_str())
                .unwrap()
                .to_owned()
        };
        let (crm, announce, follow_up, survey) =
            (of("crm"), of("announce"), of("follow-up"), of("survey"));

        // The page follows the stream to the step's end state.
        b.wait_for(&format!(
            "#detail h3.delivery[data-id='{announce}'] .pill.succeeded"
        ))
        .await?;
        let rows = about(&b, &announce).await?;
        assert_eq!(about_row(&rows, "after"), "crm succeeded", "{rows}");
        let when = about_row(&rows, "when");
        assert!(
            when.starts_with("step crm path $.json.created equals true") && when.contains("true"),
            "{rows}"
        );
        let used = about_row(&rows, "used");
        assert!(
            used.starts_with("crm: HTTP 200 {")
                && used.contains(r#""id":4711"#)
                && used.contains(r#""created":true"#),
            "{rows}"
        );
        // The when is drawn like the rule's trace: condition, found, result.
        let cells = b
            .js(
                "return [...document.querySelectorAll(`#detail table.about[data-id='${arguments[0]}'] table.when td`)].slice(0, 3).map((td) => td.textContent);",
                vec![json!(announce)],
            )
            .await?;
        assert_eq!(
            cells,
            json!(["step crm path $.json.created equals true", "true", "true"])
        );

        // The need shows what it returned.
        let rows = about(&b, &crm).await?;
        assert!(
            about_row(&rows, "returned").starts_with("HTTP 200 {"),
            "{rows}"
        );

        // The delayed step is due in two days; the one behind it waits, and
        // says when its `when` will be evaluated.
        b.wait_for(&format!(
            "#detail h3.delivery[data-id='{follow_up}'] .pill.pending"
        ))
        .await?;
        let rows = about(&b, &follow_up).await?;
        let due = about_row(&rows, "due");
        assert!(due.ends_with(" UTC (in 2 d)"), "{rows}");
        assert_eq!(
            &due[..10],
            &e["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["action"] == "follow-up")
                .unwrap()["due_at"]
                .as_str()
                .unwrap()[..10],
        );
        b.wait_for(&format!(
            "#detail h3.delivery[data-id='{survey}'] .pill.waiting"
        ))
        .await?;
        let rows = about(&b, &survey).await?;
        assert_eq!(
            rows,
            json!([
                ["after", "follow-up pending"],
                ["when", "its `when` is evaluated when follow-up succeeded"],
                ["used", "follow-up: none"]
            ])
        );
        // The feed's row counts the waiting step too.
        b.wait_for(&format!("#events tr[data-id='{id}'] .pill.waiting"))
            .await?;

        // The deliveries at the top of the detail, for the picture.
        b.js(
            "[...document.querySelectorAll('#detail h2')].find((h) => h.textContent === 'Deliveries').scrollIntoView();
             document.getElementById('detail').scrollTop -= 12;",
            vec![],
        )
        .await?;
        b.screenshot("steps.png").await?;
        Ok::<_, CmdError>(())
    };
    let result = run.await;
    let _ = b.client.close().await;
    result.unwrap();
}

/// Strings that, if the page ever took them for markup or followed them as
/// URLs, would run `hit(n)`: mark the window, retitle the page, and call the
/// test's receiver (`/pwned`; the policy blocks that call, the marks it does not).
fn hostile(rx: &Receiver) -> Vec<String> {
    let hit = |n: u32| {
        format!(
            "top.__pwned=(top.__pwned||[]).concat({n});top.document.title='PWNED';fetch('{}')",
            rx.url(&format!("/pwned?n={n}"))
        )
    };
    vec![
        format!("<script>{}</script>", hit(1)),
        format!("<img src=x onerror=\"{}\">", hit(2)),
        format!("\"><svg onload=\"{}\">", hit(3)),
        format!("javascript:{}", hit(4)),
        format!("<a href=\"javascript:{}\">open me</a>", hit(5)),
        format!("<iframe src=\"javascript:{}\"></iframe>", hit(6)),
        format!("<iframe srcdoc=\"<script>{}</script>\"></iframe>", hit(7)),
        format!("<details open ontoggle=\"{}\">x</details>", hit(8)),
        format!(
            "<meta http-equiv=\"refresh\" content=\"0;url=javascript:{}\">",
            hit(9)
        ),
        format!("<object data=\"javascript:{}\"></object>", hit(10)),
        format!("</pre></td></tr></table><script>{}</script>", hit(11)),
        format!("<img src=\"{}\">", rx.url("/pwned?n=12")),
        format!("<style>@import '{}';</style>", rx.url("/pwned?n=13")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_and_headers_show_as_text_and_run_nothing() {
    let rx = Receiver::start().await;
    let vectors = hostile(&rx);
    let yaml = |s: &str| format!("'{}'", s.replace('\'', "''"));
    // `lead` matches and its command dies echoing the payload, so the values
    // come back in the attempt's output too; `echo` succeeds printing it, so
    // they are also the output its step `after` used, and what that step's
    // `when` found; `picky` fails, showing one in the trace (the condition's
    // own value is hostile as well).
    let rules = format!(
        r#"sources:
  forms: {{}}
rules:
  - name: lead
    source: forms
    when: {{ path: $.email, exists: true }}
    actions:
      - name: script
        command: {{ argv: ["/bin/sh", "-c", "cat; exit 3"], stdin: payload }}
        retry: {{ attempts: 1 }}
      - name: echo
        command: {{ argv: ["/bin/cat"], stdin: payload }}
      - name: after
        needs: echo
        when: {{ step: echo, path: $.json.note, equals: {note} }}
        command: {{ argv: ["/bin/true"] }}
  - name: picky
    source: forms
    when: {{ path: $.name, equals: {name} }}
"#,
        name = yaml(&vectors[1]),
        note = yaml(&vectors[0]),
    );
    let token = "xss-admin-t0ken";
    let d = Daemon::start_with(&[("r.yaml", &rules)], &[], &["--admin-token", token]);
    let b = Browser::open().await;
    let run = async {
        // The token goes in the fragment, which the browser never sends; the
        // page forgets it from the address and opens its stream with a ticket.
        b.client.goto(&d.url(&format!("/#token={token}"))).await?;
        b.wait_for("#live.yes").await?;
        let url = b.client.current_url().await?;
        assert!(!url.as_str().contains(token), "{url}");
        let title = b.client.title().await?;

        // From here on every policy violation is written down. A page that
        // draws values as text has none: no markup of theirs ever reaches it.
        b.js(
            "window.__violations = [];
             document.addEventListener('securitypolicyviolation', (e) =>
               __violations.push({ directive: e.violatedDirective, uri: e.blockedURI, target: e.target.id || e.target.nodeName }));",
            vec![],
        )
        .await?;

        let mut payload = json!({
            "email": "ada@example.com",
            "name": vectors[2],
            "note": vectors[0],
            "all": vectors,
        });
        payload[vectors[1].as_str()] = json!(vectors[3]);
        let mut req = client()
            .post(d.url("/hooks/forms"))
            .query(&[("q", &vectors[4])])
            .header("content-type", "application/json")
            .header("user-agent", &vectors[0])
            .header("referer", &vectors[3]);
        for (i, v) in vectors.iter().enumerate() {
            req = req.header(format!("x-hostile-{i}"), v);
        }
        let sent: Value = req
            .body(payload.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = sent["event_id"].as_str().unwrap().to_owned();
        let row = format!("#events tr[data-id='{id}']");

        // The list, drawn from the stream, then again from the API.
        b.wait_for(&row).await?;
        b.js(
            "document.getElementById('events').replaceChildren();
             const m = document.getElementById('matched');
             m.value = 'true';
             m.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await?;
        b.click(&row).await?;

        // The detail: trace, the dead command's output, the step with the
        // output it used and its `when`, headers, body.
        b.wait_for("#detail h3.delivery .pill.dead").await?;
        b.wait_for("#detail table.about table.when td.res.yes")
            .await?;
        let used = b.text("#detail table.about tr.used td").await?;
        assert!(used.starts_with("echo: exit 0 {"), "{used}");
        b.wait_for("#detail table.attempts pre").await?;
        let headers = b.text("#detail pre.headers").await?;
        for v in &vectors {
            assert!(
                headers.contains(v.as_str()),
                "not shown as text: {v}\n{headers}"
            );
        }
        let output = b.text("#detail table.attempts pre").await?;
        assert!(output.contains(&vectors[0]), "{output}");
        let detail = b.text("#detail").await?;
        assert!(
            detail.contains("picky — not matched") && detail.contains("svg onload"),
            "{detail}"
        );

        // The second layer, in this browser: markup put into the page with
        // an inline handler is refused by the policy, and reported.
        let probe = b
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 window.__probe = () => done('ran');
                 document.addEventListener('securitypolicyviolation', (e) => {
                   if (e.target.id === 'csp-probe') done('blocked: ' + e.violatedDirective);
                 });
                 const div = document.createElement('div');
                 div.innerHTML = '<img id=\"csp-probe\" src=\"/csp-probe.png\" onerror=\"__probe()\">';
                 document.body.append(div);",
                vec![],
            )
            .await?;
        assert!(
            probe
                .as_str()
                .is_some_and(|p| p.starts_with("blocked: script-src")),
            "an inline handler was not blocked: {probe}"
        );

        // Nothing ran, nothing tried to, and none of the values became elements.
        let seen = b
            .js(
                "return {
                   pwned: window.__pwned || null,
                   title: document.title,
                   violations: __violations.filter((v) => v.target !== 'csp-probe'),
                   elements: [...document.querySelectorAll('#feed *, #detail *')]
                     .map((e) => e.nodeName.toLowerCase())
                     .filter((n) => !['table', 'thead', 'tbody', 'tr', 'th', 'td', 'span', 'p', 'h2', 'h3', 'pre', 'button', 'div', 'select', 'option'].includes(n)),
                 };",
                vec![],
            )
            .await?;
        assert_eq!(
            seen,
            json!({ "pwned": null, "title": title, "violations": [], "elements": [] })
        );
        Ok::<_, CmdError>(())
    };
    let result = run.await;
    let _ = b.client.close().await;
    result.unwrap();
    assert_eq!(rx.requests("/pwned").len(), 0, "the page called out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_signs_in_and_reopens_its_stream_with_a_fresh_ticket() {
    let token = "reconnect-admin-t0ken";
    let mut d = Daemon::start_with(
        &[("r.yaml", "sources:\n  forms: {}\n")],
        &[],
        &["--admin-token", token],
    );
    let b = Browser::open().await;
    let run = async {
        // Without the token the API refuses the page, which asks for it.
        b.client.goto(&d.url("/")).await?;
        b.wait_for("#login:not([hidden])").await?;
        assert!(
            b.client
                .find_all(Locator::Css("#live.yes"))
                .await?
                .is_empty()
        );
        b.client
            .find(Locator::Css("#login input"))
            .await?
            .send_keys(token)
            .await?;
        b.click("#login button").await?;
        b.wait_for("#live.yes").await?;
        b.wait_for("#login[hidden]").await?;
        // EventSource reconnects to the same URL by itself, and a used ticket
        // (here, one the restarted daemon never issued) is refused: the page
        // has to buy a new one.
        d.restart();
        b.wait_for("#live.muted").await?;
        b.wait_for("#live.yes").await?;
        let sent: Value = d.post_json("/hooks/forms", "{}").await;
        let id = sent["event_id"].as_str().unwrap();
        b.wait_for(&format!("#events tr[data-id='{id}']")).await?;
        Ok::<_, CmdError>(())
    };
    let result = run.await;
    let _ = b.client.close().await;
    result.unwrap();
}

/// A busy live stream does not turn into a storm of reads: the page fetches
/// changed rows, the open event and the queue count again at most about once
/// a second (trailing edge), and still ends showing the final state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_stream_makes_the_dashboard_reload_at_most_once_a_second() {
    const EVENTS: usize = 300;
    let rx = Receiver::start().await;
    let rules = format!(
        "sources:\n  app: {{}}\nrules:\n  - name: relay\n    source: app\n    actions:\n      - name: out\n        http: {{ url: \"{}\" }}\n",
        rx.url("/out")
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    let b = Browser::open().await;
    let run = async {
        b.client.goto(&d.url("/")).await?;
        b.wait_for("#live.yes").await?;
        b.js(
            "performance.setResourceTimingBufferSize(100000); performance.clearResourceTimings();",
            vec![],
        )
        .await?;
        let started = std::time::Instant::now();
        let mut senders = Vec::new();
        for s in 0..4 {
            let url = d.url("/hooks/app");
            senders.push(tokio::spawn(async move {
                let c = client();
                let mut last = String::new();
                for n in (s..EVENTS).step_by(4) {
                    let r = c
                        .post(&url)
                        .body(format!("{{\"n\": {n}}}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                    last = r.headers()["x-request-id"].to_str().unwrap().to_owned();
                }
                last
            }));
        }
        let mut last = Vec::new();
        for s in senders {
            last.push(s.await.unwrap());
        }
        rx.wait_for("/out", EVENTS, Duration::from_secs(60)).await;
        // The rows of the last events end up showing their final state.
        for id in &last {
            b.wait_for(&format!("#events tr[data-id='{id}'] .pill.succeeded"))
                .await?;
        }
        let busy = started.elapsed().as_secs_f64();
        let fetched = b
            .js(
                "return performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname);",
                vec![],
            )
            .await?;
        let paths: Vec<&str> = fetched
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let count = |f: &dyn Fn(&str) -> bool| paths.iter().filter(|p| f(p)).count();
        let rows = count(&|p| p.starts_with("/api/events/evt_"));
        let queue = count(&|p| p == "/metrics" || p == "/api/deliveries");
        println!(
            "{EVENTS} events in {busy:.1} s: {rows} row reloads, {queue} queue reloads, {} fetches in all",
            paths.len()
        );
        // One reload per second and view, plus the trailing one; rows come
        // 25 at most per reload. Without this, each of the ~600 delivery
        // messages fetched a row and the queue (twice) again.
        let seconds = busy.ceil() + 1.0;
        assert!(
            queue as f64 <= seconds,
            "{queue} queue reloads in {busy:.1} s"
        );
        assert!(
            rows as f64 <= seconds * 25.0,
            "{rows} row reloads in {busy:.1} s"
        );
        // The table stays bounded however many events arrive.
        let shown = b
            .js(
                "return document.querySelectorAll('#events tr').length;",
                vec![],
            )
            .await?;
        assert!(shown.as_u64().unwrap() <= 200, "{shown} rows");
        Ok::<_, CmdError>(())
    };
    let result = run.await;
    let _ = b.client.close().await;
    result.unwrap();
}

/// The overview strip draws the last hour from real traffic: events per
/// minute by source, attempts by outcome (a receiver answering 500 leaves
/// its delivery retrying), the queue depth, and the slowest action (a real
/// `sleep` of 0.3 s) first. Leaves `overview.png` in the test's target
/// directory (the README's picture).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_strip_charts_the_last_hour_from_real_traffic() {
    let rx = Receiver::start().await;
    rx.script("/crm", &[(500, None); 4]);
    let rules = format!(
        r#"sources:
  github: {{}}
  forms: {{}}
rules:
  - name: push-to-chat
    source: github
    actions:
      - name: chat
        http: {{ url: "{chat}" }}
  - name: deploy
    source: github
    actions:
      - name: script
        command: {{ argv: [sleep, "0.3"] }}
  - name: lead
    source: forms
    actions:
      - name: crm
        http: {{ url: "{crm}" }}
        retry: {{ attempts: 5, initial: 1m }}
"#,
        chat = rx.url("/chat"),
        crm = rx.url("/crm"),
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
    for i in 0..3 {
        d.post_json(
            "/hooks/github",
            json!({ "ref": format!("refs/heads/b{i}") }).to_string(),
        )
        .await;
    }
    for _ in 0..2 {
        d.post_json(
            "/hooks/forms",
            json!({"email": "ada@example.com"}).to_string(),
        )
        .await;
    }
    rx.wait_for("/chat", 3, Duration::from_secs(10)).await;
    rx.wait_for("/crm", 2, Duration::from_secs(10)).await;

    let b = Browser::open().await;
    let run = async {
        b.client.goto(&d.url("/")).await?;
        // Every attempt above has finished once the three commands have:
        // wait until the charts say so (the page redraws every 5 s).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let drawn = loop {
            let v = b
                .js(
                    "const sum = (sel) => [...document.querySelectorAll(sel)]
                        .map((t) => Number(t.textContent.split(': ')[1].split(' ')[0]))
                        .reduce((a, b) => a + b, 0);
                     return {
                       events: sum('#chart-events rect.bar title'),
                       outcomes: sum('#chart-outcomes rect.bar title'),
                       sources: document.querySelector('#chart-events .legend').textContent,
                       states: document.querySelector('#chart-outcomes .legend').textContent,
                       depth: document.querySelectorAll('#chart-queue polyline.depth-line').length,
                       depth_legend: document.querySelector('#chart-queue .legend').textContent,
                       slow: [...document.querySelectorAll('#chart-slowest g.slow text.label')].map((t) => t.textContent),
                       slow_first: (document.querySelector('#chart-slowest g.slow title') || {}).textContent || '',
                     };",
                    vec![],
                )
                .await?;
            if v["outcomes"] == 8 || std::time::Instant::now() > deadline {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        // 3 pushes + 2 leads, drawn as bars whose titles add up.
        assert_eq!(drawn["events"], 5, "{drawn:#}");
        assert_eq!(drawn["sources"], "forms 2github 3", "{drawn:#}");
        // 3 chat + 3 deploys succeeded, 2 CRM attempts left their deliveries retrying.
        assert_eq!(drawn["outcomes"], 8, "{drawn:#}");
        assert_eq!(drawn["states"], "succeeded 6retrying 2", "{drawn:#}");
        assert_eq!(drawn["depth"], 1, "{drawn:#}");
        // The two CRM deliveries wait for their next attempt a minute away.
        let depth = drawn["depth_legend"].as_str().unwrap();
        assert!(depth.starts_with("now 2 waiting"), "{drawn:#}");
        // The command that sleeps 0.3 s is the slowest action, by far.
        assert_eq!(drawn["slow"][0], "deploy/script", "{drawn:#}");
        assert_eq!(drawn["slow"].as_array().unwrap().len(), 3, "{drawn:#}");
        let first = drawn["slow_first"].as_str().unwrap();
        let p95: f64 = first
            .split("p95 ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{first}"));
        assert!(
            first.contains(" ms over 3 attempts") && p95 >= 250.0,
            "{first}"
        );

        b.screenshot("overview.png").await?;
        Ok::<_, CmdError>(())
    };
    let result = run.await;
    let _ = b.client.close().await;
    result.unwrap();
}

/// The rule-set panel shows what the last reload changed on the stored
/// events: a wider glob makes the feature-branch pushes start matching.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rule_set_panel_shows_what_the_last_reload_changed() {
    let rx = Receiver::start().await;
    let rules = |glob: &str| {
        format!(
            "sources:\n  github: {{}}\nrules:\n  - name: push-to-chat\n    source: github\n    when: {{ path: $.ref, glob: \"{glob}\" }}\n    actions:\n      - http: {{ url: \"{}\" }}\n",
            rx.url("/chat")
        )
    };
    let d = Daemon::start(&[("r.yaml", &rules("refs/heads/main"))]);
    let mut feature = Vec::new();
    for i in 0..4 {
        let git_ref = if i % 2 == 0 {
            "refs/heads/main".to_owned()
        } else {
            format!("refs/heads/feature/{i}")
        };
        let sent = d
            .post_json("/hooks/github", json!({ "ref": git_ref }).to_string())
            .await;
        if i % 2 == 1 {
            feature.push(sent["event_id"].as_str().unwrap().to_owned());
        }
    }
    d.write_rule("r.yaml", &rules("refs/heads/**"));
    d.wait_rules("the wider glob", |v| v["version"] == 2).await;

    let b = Browser::open().await;
    let run = async {
        b.client.goto(&d.url("/")).await?;
        b.click("#reload-diff").await?;
        b.wait_for("#detail #verdict").await?;
        assert_eq!(
            b.text("#detail #backtest").await?,
            "What v2 changed (against v1)"
        );
        assert_eq!(
            b.text("#detail #verdict").await?,
            "1 rule would act differently on 2 of 4 events"
        );
        let row = b.text("#detail tr[data-rule='push-to-chat']").await?;
        assert!(
            row.starts_with("push-to-chatchanged2 → 4+2 started: "),
            "{row}"
        );
        for id in &feature {
            assert!(row.contains(id.as_str()), "{row} lacks {id}");
        }
        // An id opens that event's trace.
        b.click(&format!(
            "#detail tr[data-rule='push-to-chat'] a[href='#{}']",
            feature[0]
        ))
        .await?;
        b.wait_for("#detail h3.rule").await?;
        assert!(b.text("#detail h2").await?.starts_with(&feature[0]));
        Ok::<_, CmdError>(())
    };
    let result = run.await;
    let _ = b.client.close().await;
    result.unwrap();
}
