//! The command action: `argv` run directly, never through a shell.
//!
//! Templated values are separate argv elements or environment values, so a
//! payload cannot add an argument or reach a shell. The child runs in its own
//! process group; on timeout the whole group is killed, children included.
//! stdout and stderr are captured up to 64 KiB each (the rest is drained).
//! This is the only place in hookwire that starts a process.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{AttemptResult, MAX_CAPTURE, MAX_OUTPUT, Rendered};
use crate::actions::Outcome;
use crate::rules::CommandAction;

/// Identifies the event to the command, besides the action's own `env`.
pub struct CommandEnv<'a> {
    pub event_id: &'a str,
    pub rule: &'a str,
    pub source: &'a str,
}

async fn capture(mut r: impl AsyncRead + Unpin, limit: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

pub async fn run(
    action: &CommandAction,
    rendered: &Rendered,
    ids: &CommandEnv<'_>,
    keep_output: bool,
) -> AttemptResult {
    let Rendered::Command {
        argv,
        env,
        stdin,
        cwd,
    } = rendered
    else {
        return AttemptResult::fail(Outcome::Permanent, "internal: not a command action");
    };
    let Some((program, args)) = argv.split_first() else {
        return AttemptResult::fail(Outcome::Permanent, "argv is empty");
    };
    #[allow(clippy::disallowed_methods)] // this module is where processes start
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("HOOKWIRE_EVENT_ID", ids.event_id)
        .env("HOOKWIRE_RULE", ids.rule)
        .env("HOOKWIRE_SOURCE", ids.source)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return AttemptResult::fail(
                Outcome::Retryable { retry_after: None },
                format!("cannot start {program}: {e}"),
            );
        }
    };
    let pid = child.id();
    if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin.clone()) {
        tokio::spawn(async move {
            // A command that does not read its stdin closes the pipe; that is not an error.
            let _ = pipe.write_all(input.as_bytes()).await;
        });
    }
    let limit = if keep_output { MAX_OUTPUT } else { MAX_CAPTURE };
    let out = child.stdout.take().map(|o| tokio::spawn(capture(o, limit)));
    let err = child.stderr.take().map(|e| tokio::spawn(capture(e, limit)));

    let waited = tokio::time::timeout(action.timeout, child.wait()).await;
    let timed_out = waited.is_err();
    if timed_out {
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            // The group id is the child's pid (process_group(0)): this reaches its children too.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = child.wait().await;
    }
    // Grandchildren that outlive the command may hold the pipes open; do not wait on them forever.
    let collect = |h: Option<tokio::task::JoinHandle<Vec<u8>>>| async move {
        match h {
            Some(h) => tokio::time::timeout(Duration::from_secs(2), h)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => Vec::new(),
        }
    };
    let (stdout, stderr) = (collect(out).await, collect(err).await);
    let exit_code = waited
        .as_ref()
        .ok()
        .and_then(|w| w.as_ref().ok())
        .and_then(|s| s.code());
    let output = keep_output.then(|| {
        serde_json::json!({
            "exit_code": exit_code,
            "stdout": String::from_utf8_lossy(&stdout),
            "stderr": String::from_utf8_lossy(&stderr),
        })
    });
    let mut response = stdout;
    response.truncate(MAX_CAPTURE);
    if !stderr.is_empty() {
        response.extend_from_slice(b"\n--- stderr ---\n");
        response.extend_from_slice(&stderr[..stderr.len().min(MAX_CAPTURE)]);
    }
    let retry = Outcome::Retryable { retry_after: None };
    match waited {
        Err(_) => AttemptResult {
            outcome: retry,
            status_code: None,
            exit_code: None,
            error: Some(format!(
                "timed out after {}: process group killed",
                humantime::format_duration(action.timeout)
            )),
            response,
            output,
        },
        Ok(Err(e)) => AttemptResult {
            outcome: retry,
            status_code: None,
            exit_code: None,
            error: Some(format!("waiting for {program}: {e}")),
            response,
            output,
        },
        Ok(Ok(status)) => match status.code() {
            Some(0) => AttemptResult {
                outcome: Outcome::Succeeded,
                status_code: None,
                exit_code: Some(0),
                error: None,
                response,
                output,
            },
            Some(code) => AttemptResult {
                outcome: retry,
                status_code: None,
                exit_code: Some(code),
                error: Some(format!("exited with {code}")),
                response,
                output,
            },
            None => AttemptResult {
                outcome: retry,
                status_code: None,
                exit_code: None,
                error: Some(format!("killed by a signal ({status})")),
                response,
                output,
            },
        },
    }
}
