//! Captures an agent's log records, stdout and stderr under the call's byte cap and forwards them to `tracing`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::wit::latest::corral::agent::host::Level;

/// Where a captured record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Log,
    Stdout,
    Stderr,
}

/// One log record or line of output an agent produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub source: Source,
    pub level: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
}

/// Bytes kept from stderr regardless of the cap, to find a panic message.
const STDERR_TAIL: usize = 2048;

/// Bytes charged per record on top of its text, so that a record with an
/// empty message is never free.
pub const RECORD_OVERHEAD: u64 = 32;
/// Bytes charged per field of a log record on top of its key and value.
pub const FIELD_OVERHEAD: u64 = 16;
/// Records kept per call, whatever the byte cap.
pub const MAX_LOG_RECORDS: usize = 10_000;
/// Fields a kept record may carry; a record with more is dropped whole,
/// and the text of fields past this many is never read.
pub const MAX_LOG_FIELDS: usize = 64;

/// Everything an agent wrote during one call, capped at `cap` bytes.
///
/// Every record is charged its text plus [`RECORD_OVERHEAD`] and
/// [`FIELD_OVERHEAD`] per field, and is kept whole or dropped whole: the
/// bytes kept never exceed the cap.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    agent: String,
    cap: u64,
    pub kept: u64,
    pub dropped: u64,
    pub records_dropped: u64,
    pub records: Vec<LogRecord>,
    stdout_line: Vec<u8>,
    stderr_line: Vec<u8>,
    stderr_tail: Vec<u8>,
    /// Bytes ever written to stderr, to place the tail in the stream.
    stderr_total: u64,
}

/// The cost of a log record, known before any of its text is read.
pub(crate) fn log_record_cost(message: usize, field_count: usize, field_text: usize) -> u64 {
    RECORD_OVERHEAD
        .saturating_add(message as u64)
        .saturating_add((field_count as u64).saturating_mul(FIELD_OVERHEAD))
        .saturating_add(field_text as u64)
}

impl Capture {
    pub fn new(agent: &str, cap: u64) -> Self {
        Self {
            agent: agent.to_owned(),
            cap,
            ..Default::default()
        }
    }

    /// Charges a record of `cost` bytes if it fits under the cap and the
    /// record count; otherwise counts it as dropped. Its text is read only
    /// after this says yes.
    pub fn reserve(&mut self, cost: u64) -> bool {
        if self.records.len() >= MAX_LOG_RECORDS || self.kept.saturating_add(cost) > self.cap {
            self.drop_record(cost);
            return false;
        }
        self.kept += cost;
        true
    }

    /// Counts a record that is not kept.
    pub fn drop_record(&mut self, cost: u64) {
        self.dropped = self.dropped.saturating_add(cost);
        self.records_dropped += 1;
    }

    /// Keeps a record whose cost [`reserve`](Self::reserve) accepted.
    pub fn keep(&mut self, record: LogRecord) {
        emit(&self.agent, &record);
        self.records.push(record);
    }

    pub fn level_name(level: Level) -> &'static str {
        match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    fn write(&mut self, source: Source, bytes: &[u8]) {
        if source == Source::Stderr {
            self.stderr_total += bytes.len() as u64;
            let keep = bytes.len().min(STDERR_TAIL);
            self.stderr_tail
                .extend_from_slice(&bytes[bytes.len() - keep..]);
            let excess = self.stderr_tail.len().saturating_sub(STDERR_TAIL);
            self.stderr_tail.drain(..excess);
        }
        let mut buf = std::mem::take(match source {
            Source::Stdout => &mut self.stdout_line,
            _ => &mut self.stderr_line,
        });
        for &b in bytes {
            if b == b'\n' {
                self.line(source, &buf);
                buf.clear();
            } else if (buf.len() as u64) <= self.cap {
                buf.push(b);
            } else {
                // A line longer than the whole cap can never be kept.
                self.dropped += 1;
            }
        }
        *match source {
            Source::Stdout => &mut self.stdout_line,
            _ => &mut self.stderr_line,
        } = buf;
    }

    fn line(&mut self, source: Source, line: &[u8]) {
        if !self.reserve(RECORD_OVERHEAD + line.len() as u64) {
            return;
        }
        let level = if source == Source::Stderr {
            "warn"
        } else {
            "info"
        };
        self.keep(LogRecord {
            source,
            level: level.into(),
            message: String::from_utf8_lossy(line).into_owned(),
            fields: Vec::new(),
        });
    }

    /// Bytes written to stderr so far: a mark for [`panicked_since`](Self::panicked_since).
    pub fn stderr_mark(&self) -> u64 {
        self.stderr_total
    }

    /// Whether the guest printed a Rust panic (`panicked at `) on stderr
    /// after `mark`.
    pub fn panicked_since(&self, mark: u64) -> bool {
        const NEEDLE: &[u8] = b"panicked at ";
        let start = self.stderr_total - self.stderr_tail.len() as u64;
        self.stderr_tail
            .windows(NEEDLE.len())
            .rposition(|w| w == NEEDLE)
            .is_some_and(|at| start + at as u64 >= mark)
    }

    /// Flushes unterminated lines at the end of the call.
    pub fn finish(&mut self) {
        for source in [Source::Stdout, Source::Stderr] {
            let buf = std::mem::take(match source {
                Source::Stdout => &mut self.stdout_line,
                _ => &mut self.stderr_line,
            });
            if !buf.is_empty() {
                self.line(source, &buf);
            }
        }
    }

    /// The panic message a guest left on stderr, if any. The Rust SDK prints
    /// `panicked at <location>: <message>`; std's default hook prints the
    /// location line and the message on the next line. Other languages'
    /// last stderr lines are returned as they are.
    pub fn panic_message(&self) -> Option<String> {
        let tail = String::from_utf8_lossy(&self.stderr_tail);
        let tail = tail.trim();
        if tail.is_empty() {
            return None;
        }
        if let Some(at) = tail.rfind("panicked at ") {
            let rest = &tail[at..];
            // std's hook: "panicked at src/lib.rs:1:2:\nmessage\nnote: ..."
            let rest = rest.split("\nnote:").next().unwrap_or(rest);
            return Some(rest.replace(":\n", ": ").trim().to_owned());
        }
        let lines: Vec<&str> = tail.lines().rev().take(5).collect();
        Some(lines.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }
}

fn emit(agent: &str, r: &LogRecord) {
    let fields = if r.fields.is_empty() {
        String::new()
    } else {
        format!(" {:?}", r.fields)
    };
    match r.level.as_str() {
        "trace" => {
            tracing::trace!(target: "corral::agent", agent, source = ?r.source, "{}{fields}", r.message)
        }
        "debug" => {
            tracing::debug!(target: "corral::agent", agent, source = ?r.source, "{}{fields}", r.message)
        }
        "info" => {
            tracing::info!(target: "corral::agent", agent, source = ?r.source, "{}{fields}", r.message)
        }
        "warn" => {
            tracing::warn!(target: "corral::agent", agent, source = ?r.source, "{}{fields}", r.message)
        }
        _ => {
            tracing::error!(target: "corral::agent", agent, source = ?r.source, "{}{fields}", r.message)
        }
    }
}

/// A WASI stdout or stderr that feeds a [`Capture`]. It accepts every write
/// (so a guest's `println!` never fails) and keeps only what the cap allows.
#[derive(Clone)]
pub(crate) struct CaptureStream {
    capture: Arc<Mutex<Capture>>,
    source: Source,
}

impl CaptureStream {
    pub fn new(capture: Arc<Mutex<Capture>>, source: Source) -> Self {
        Self { capture, source }
    }

    fn take(&self, bytes: &[u8]) {
        self.capture.lock().unwrap().write(self.source, bytes);
    }
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.take(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_bytes_and_counts_the_rest() {
        let line = RECORD_OVERHEAD + 5;
        let mut c = Capture::new("t", 2 * line);
        c.write(Source::Stdout, b"12345\n67890\nabcdef\n");
        assert_eq!(c.kept, 2 * line);
        assert_eq!(c.dropped, RECORD_OVERHEAD + 6);
        assert_eq!((c.records.len(), c.records_dropped), (2, 1));
    }

    #[test]
    fn empty_records_are_charged_and_counted() {
        let mut c = Capture::new("t", 64 << 10);
        for _ in 0..1_000_000 {
            c.write(Source::Stdout, b"\n");
        }
        assert!(c.kept <= 64 << 10);
        assert_eq!(c.records.len() as u64, (64 << 10) / RECORD_OVERHEAD);
        assert_eq!(c.records.len() as u64 + c.records_dropped, 1_000_000);

        let mut c = Capture::new("t", u64::MAX);
        for _ in 0..MAX_LOG_RECORDS + 5 {
            assert_eq!(
                c.reserve(log_record_cost(0, 0, 0)),
                c.records.len() < MAX_LOG_RECORDS
            );
            if c.records.len() < MAX_LOG_RECORDS {
                c.keep(LogRecord {
                    source: Source::Log,
                    level: "info".into(),
                    message: String::new(),
                    fields: Vec::new(),
                });
            }
        }
        assert_eq!((c.records.len(), c.records_dropped), (MAX_LOG_RECORDS, 5));
    }

    #[test]
    fn a_panic_counts_only_after_the_mark() {
        let mut c = Capture::new("t", 0);
        c.write(Source::Stderr, b"panicked at src/lib.rs:1:1: early\n");
        let mark = c.stderr_mark();
        assert!(!c.panicked_since(mark));
        c.write(Source::Stderr, b"memory allocation of 4096 bytes failed\n");
        assert!(!c.panicked_since(mark));
        c.write(Source::Stderr, &[b'x'; 5000]);
        c.write(Source::Stderr, b"\npanicked at src/lib.rs:2:2: late\n");
        assert!(c.panicked_since(mark));
    }

    #[test]
    fn finds_the_panic_message() {
        let mut c = Capture::new("t", 0);
        c.write(Source::Stderr, b"noise\npanicked at src/lib.rs:3:5: boom\n");
        assert_eq!(
            c.panic_message().unwrap(),
            "panicked at src/lib.rs:3:5: boom"
        );
        let mut c = Capture::new("t", 0);
        c.write(Source::Stderr, b"thread '<unnamed>' panicked at src/lib.rs:3:5:\nboom\nnote: run with RUST_BACKTRACE\n");
        assert_eq!(
            c.panic_message().unwrap(),
            "panicked at src/lib.rs:3:5: boom"
        );
    }
}
