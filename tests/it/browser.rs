//! The dashboard in a real headless browser (Debian's chromium, driven
//! through chromedriver): an event arrives live, its trace opens, Retry on a
//! dead delivery makes it succeed. Leaves a screenshot in the test's target
//! directory (`dashboard.png`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value, json};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_events_traces_and_retries() {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "the dashboard test needs Debian's chromium: apt-get install chromium chromium-driver (.ci/run does)"
    );
    let rx = Receiver::start().await;
    rx.script("/crm", &[(400, None)]);
    let rules = format!(
        "sources:\n  forms: {{}}\nrules:\n  - name: lead\n    source: forms\n    when: {{ path: $.email, exists: true }}\n    actions:\n      - name: crm\n        http: {{ url: \"{}\" }}\n        retry: {{ attempts: 1 }}\n",
        rx.url("/crm")
    );
    let d = Daemon::start(&[("r.yaml", &rules)]);
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
    let browser = ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .unwrap();
    // The page re-renders as the stream reports changes, so elements are found
    // and used by selector, in the page, rather than held across awaits.
    let wait_for = |css: String| {
        let browser = &browser;
        async move {
            browser
                .wait()
                .at_most(Duration::from_secs(15))
                .for_element(Locator::Css(&css))
                .await?;
            Ok::<_, fantoccini::error::CmdError>(())
        }
    };
    let click = |css: &'static str| {
        let browser = &browser;
        async move {
            browser
                .wait()
                .at_most(Duration::from_secs(15))
                .for_element(Locator::Css(css))
                .await?;
            browser
                .execute(
                    "document.querySelector(arguments[0]).click()",
                    vec![json!(css)],
                )
                .await?;
            Ok::<_, fantoccini::error::CmdError>(())
        }
    };
    let text = |css: &'static str| {
        let browser = &browser;
        async move {
            let v = browser
                .execute(
                    "return document.querySelector(arguments[0]).textContent",
                    vec![json!(css)],
                )
                .await?;
            Ok::<_, fantoccini::error::CmdError>(v.as_str().unwrap_or_default().to_owned())
        }
    };
    let run = async {
        browser.goto(&d.url("/")).await?;
        wait_for("#live.yes".to_owned()).await?;

        // An event sent now appears in the feed without a reload.
        let sent: Value = client()
            .post(d.url("/hooks/forms"))
            .header("content-type", "application/json")
            .body(json!({"email": "ada@example.com"}).to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = sent["event_id"].as_str().unwrap().to_owned();
        wait_for(format!("#events tr[data-id='{id}']")).await?;
        browser
            .execute(
                "document.querySelector(arguments[0]).click()",
                vec![json!(format!("#events tr[data-id='{id}']"))],
            )
            .await?;

        // The trace, as a table, and the delivery that died on the 400.
        wait_for("#detail h3.rule".to_owned()).await?;
        assert!(
            text("#detail h3.rule").await?.starts_with("lead — matched"),
            "{}",
            text("#detail h3.rule").await?
        );
        assert_eq!(text("#detail table.trace td.res").await?, "true");
        click("#detail button.retry").await?;
        wait_for("#detail h3.delivery .pill.succeeded".to_owned()).await?;
        assert_eq!(
            rx.requests("/crm").len(),
            2,
            "the retry reached the receiver"
        );

        let png = browser.screenshot().await?;
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        std::fs::write(&path, png).unwrap();
        println!("dashboard screenshot: {}", path.display());
        Ok::<_, fantoccini::error::CmdError>(())
    };
    let result = run.await;
    let _ = browser.close().await;
    result.unwrap();
}
