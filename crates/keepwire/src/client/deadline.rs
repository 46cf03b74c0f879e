//! The total timeout's hold on a response body: the body fails once the
//! deadline passes, however steadily it was arriving (reqwest's `timeout`
//! covers the body too; the per-read timeout alone lets a slow trickle
//! run forever).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::{Body, BodyError};

/// `body`, failing at `deadline` (`total` after the request began).
pub(super) fn until(body: Body, deadline: Instant, total: Duration) -> Body {
    use http_body::Body as _;
    if body.is_end_stream() {
        return body;
    }
    Body::wrap(Deadline {
        body,
        sleep: Box::pin(tokio::time::sleep_until(deadline)),
        total,
    })
}

struct Deadline {
    body: Body,
    sleep: Pin<Box<Sleep>>,
    total: Duration,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Poll::Ready(next) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(next);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Some(Err(BodyError::Source(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the total timeout of {:?} ran out", self.total),
                ))))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
