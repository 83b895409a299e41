//! Reading a run's event stream (Server-Sent Events): one event per blank-line-terminated block, reconnecting with `Last-Event-ID` when the connection drops so nothing is missed or repeated.

use std::io::{BufRead as _, BufReader, Read as _};
use std::time::Duration;

use serde_json::Value;

use super::{Failed, Remote};

/// The longest line read from the stream (one journal entry).
const MAX_LINE: usize = 16 << 20;
/// Reconnections in a row without a new event before giving up.
const MAX_RECONNECTS: u32 = 30;

/// How a stream of events ended.
pub enum End {
    /// The server said the run stopped, and how it stands.
    Stopped(String),
    /// `follow=false`: every event so far was read.
    CaughtUp(String),
}

/// Calls `each` with every journal event of `run` after `after`, until the
/// server ends the stream. With `follow`, a dropped connection (a server
/// restarting, a proxy timing out) is resumed from the last event seen.
pub fn read(
    remote: &Remote,
    run: &str,
    follow: bool,
    mut each: impl FnMut(&Value),
) -> Result<End, Failed> {
    let path = format!(
        "/v1/runs/{}/events?follow={follow}",
        super::commands::seg(run)
    );
    let mut last: Option<i64> = None;
    let mut retries = 0;
    loop {
        let res = match remote.stream(&path, last) {
            Ok(res) => res,
            // Unreachable while following: the server may be restarting.
            Err(Failed(super::Exit::Host)) if follow && retries < MAX_RECONNECTS => {
                retries += 1;
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            Err(f) => return Err(f),
        };
        let before = last;
        if let Some(end) = read_one(res, &mut last, &mut each) {
            return Ok(if follow {
                End::Stopped(end)
            } else {
                End::CaughtUp(end)
            });
        }
        if !follow {
            return Ok(End::CaughtUp(String::new()));
        }
        retries = if last == before { retries + 1 } else { 0 };
        if retries >= MAX_RECONNECTS {
            eprintln!("error: the event stream of run `{run}` kept dropping; giving up");
            return Err(Failed(super::Exit::Host));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Reads one connection's events; the run's status if it ended with `end`.
fn read_one(
    res: ureq::http::Response<ureq::Body>,
    last: &mut Option<i64>,
    each: &mut impl FnMut(&Value),
) -> Option<String> {
    let mut reader = BufReader::new(res.into_body().into_reader());
    let (mut kind, mut data) = (String::new(), String::new());
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE as u64).read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(n) if n == MAX_LINE && !line.ends_with('\n') => {
                eprintln!("error: an event of over {MAX_LINE} bytes; the stream is dropped");
                return None;
            }
            Ok(_) => {}
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            if !data.is_empty() {
                let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                if kind == "end" {
                    return Some(v["status"].as_str().unwrap_or("").to_owned());
                }
                if let Some(seq) = v["seq"].as_i64() {
                    *last = Some(seq);
                }
                each(&v);
            }
            kind.clear();
            data.clear();
        } else if let Some(v) = l.strip_prefix("event:") {
            kind = v.trim_start().to_owned();
        } else if let Some(v) = l.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
}
