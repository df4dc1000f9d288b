//! Hot reload while requests flow: add, break, fix and delete rule files;
//! no request is answered 5xx because of a reload, and a broken set never
//! replaces the last good one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Daemon, client, fixture};

const SOURCES: &str = "sources:\n  github: {}\n";
const RULE_A: &str = "rules:\n  - name: push-main\n    source: github\n    when: { path: $.ref, equals: refs/heads/master }\n";
const RULE_A_BROKEN: &str = "rules:\n  - name: push-main\n    source: github\n    when: { path: $.ref, equals: refs/heads/master, matches: '(' }\n";
const RULE_B: &str = "rules:\n  - name: any-push\n    source: github\n";

async fn matched(d: &Daemon) -> Vec<String> {
    let r = client()
        .post(d.url("/hooks/github"))
        .header("content-type", "application/json")
        .body(fixture("examples/payloads/push-branch.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    let mut m: Vec<String> = v["matched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    m.sort();
    m
}

fn version(v: &Value) -> u64 {
    v["version"].as_u64().unwrap()
}

#[tokio::test]
async fn add_break_fix_delete_while_requests_flow() {
    let d = Daemon::start(&[("sources.yaml", SOURCES)]);
    let v0 = version(
        &d.wait_rules("first load", |v| v["reload"]["loaded"] == true)
            .await,
    );

    // Background traffic for the whole test: every answer must be 202.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (stop, sent, url) = (stop.clone(), sent.clone(), d.url("/hooks/github"));
        tokio::spawn(async move {
            let body = fixture("examples/payloads/push-branch.json");
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202, "a request was refused during a reload");
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // Add.
    d.write_rule("a.yaml", RULE_A);
    let v1 = version(
        &d.wait_rules("rule a loaded", |v| {
            v["rules"].as_array().unwrap().len() == 1
        })
        .await,
    );
    assert!(v1 > v0);
    assert_eq!(matched(&d).await, ["push-main"]);

    // Break: the old set keeps serving, the error is reported with its position.
    d.write_rule("a.yaml", RULE_A_BROKEN);
    let v = d
        .wait_rules("reload error reported", |v| {
            !v["reload"]["last_error"].is_null()
        })
        .await;
    let err = &v["reload"]["last_error"][0];
    assert!(err["file"].as_str().unwrap().ends_with("a.yaml"), "{err}");
    assert_eq!(
        (err["line"].as_u64(), err["col"].as_u64()),
        (Some(4), Some(53)),
        "{err}"
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("a condition takes one operator"),
        "{err}"
    );
    assert_eq!(version(&v), v1, "the broken set was not swapped in");
    assert_eq!(matched(&d).await, ["push-main"]);

    // Fix, and add a second file in the same breath (an editor saving two files).
    d.write_rule("a.yaml", RULE_A);
    d.write_rule("nested/b.yml", RULE_B);
    let v = d
        .wait_rules("fixed", |v| v["rules"].as_array().unwrap().len() == 2)
        .await;
    assert!(v["reload"]["last_error"].is_null());
    assert_eq!(matched(&d).await, ["any-push", "push-main"]);

    // Atomic save: write a temp file and rename it over the old one.
    let tmp = d.rules_dir().join(".a.yaml.swp");
    std::fs::write(&tmp, RULE_A.replace("push-main", "push-master")).unwrap();
    std::fs::rename(&tmp, d.rules_dir().join("a.yaml")).unwrap();
    d.wait_rules("renamed rule", |v| {
        v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "push-master")
    })
    .await;

    // Delete.
    std::fs::remove_file(d.rules_dir().join("a.yaml")).unwrap();
    d.wait_rules("rule deleted", |v| {
        v["rules"].as_array().unwrap().len() == 1
    })
    .await;
    assert_eq!(matched(&d).await, ["any-push"]);

    // Keeps watching after all that.
    std::fs::remove_dir_all(d.rules_dir().join("nested")).unwrap();
    d.wait_rules("all rules gone", |v| {
        v["rules"].as_array().unwrap().is_empty()
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    assert!(
        sent.load(Ordering::Relaxed) > 10,
        "traffic flowed during the reloads"
    );
}

#[tokio::test]
async fn daemon_starts_with_broken_rules_and_loads_them_once_fixed() {
    let d = Daemon::start(&[("sources.yaml", SOURCES), ("a.yaml", RULE_A_BROKEN)]);
    let ready = client().get(d.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready without a loaded rule set");
    d.write_rule("a.yaml", RULE_A);
    d.wait_rules("fixed", |v| v["reload"]["loaded"] == true)
        .await;
    let ready = client().get(d.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(matched(&d).await, ["push-main"]);
}

#[tokio::test]
async fn rate_limit_state_survives_a_reload() {
    let sources = "sources:\n  limited:\n    rate_limit: 2/h\n";
    let d = Daemon::start(&[("sources.yaml", sources)]);
    let send = || async {
        client()
            .post(d.url("/hooks/limited"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(send().await, 202);
    assert_eq!(send().await, 202);
    assert_eq!(send().await, 429);
    // Any change to the rule files reloads the whole set; the limit's state stays.
    d.write_rule("other.yaml", RULE_B.replace("github", "limited").as_str());
    d.wait_rules("reloaded", |v| v["rules"].as_array().unwrap().len() == 1)
        .await;
    assert_eq!(send().await, 429);
}
