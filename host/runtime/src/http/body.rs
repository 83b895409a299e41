//! Request and response bodies counted as they stream, against the call's byte quotas: a body past its quota ends with the wasi:http size error.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::Error;

use super::record::{HttpLog, HttpOutcome};

/// Which way a body flows.
#[derive(Clone, Copy)]
pub(crate) enum Direction {
    Out,
    In,
}

/// A body whose data frames are charged to the call's total for its
/// direction; past `limit` it fails instead of yielding more.
pub(crate) struct Counted<B> {
    pub inner: B,
    pub log: Arc<Mutex<HttpLog>>,
    /// The request's record, if it was kept.
    pub index: Option<usize>,
    pub direction: Direction,
    pub limit: u64,
}

impl<B> Counted<B> {
    /// Charges `n` bytes; `false` if that passes the quota.
    fn charge(&self, n: u64) -> bool {
        let mut log = self.log.lock().unwrap();
        let total = match self.direction {
            Direction::Out => &mut log.bytes_out,
            Direction::In => &mut log.bytes_in,
        };
        if total.saturating_add(n) > self.limit {
            let limit = self.limit;
            let Some(record) = self.index.and_then(|i| log.records.get_mut(i)) else {
                return false;
            };
            record.outcome = HttpOutcome::OverQuota;
            record.detail = Some(match self.direction {
                Direction::Out => format!(
                    "request bodies passed the call's quota of {limit} bytes (budget field `http_request_bytes`)"
                ),
                Direction::In => format!(
                    "response bodies passed the call's quota of {limit} bytes (budget field `http_response_bytes`)"
                ),
            });
            return false;
        }
        *total += n;
        if let Some(record) = self.index.and_then(|i| log.records.get_mut(i)) {
            match self.direction {
                Direction::Out => record.bytes_out += n,
                Direction::In => record.bytes_in += n,
            }
        }
        true
    }

    fn size_error(&self) -> Error {
        match self.direction {
            Direction::Out => Error::HttpRequestBodySize(Some(self.limit)),
            Direction::In => Error::HttpResponseBodySize(Some(self.limit)),
        }
    }
}

impl<B, E> Body for Counted<B>
where
    B: Body<Data = Bytes, Error = E> + Unpin,
    E: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                if self.charge(n) {
                    Poll::Ready(Some(Ok(frame)))
                } else {
                    Poll::Ready(Some(Err(self.size_error())))
                }
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
