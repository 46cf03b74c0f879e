//! A request body on its way out on an HTTP/3 stream.

use std::time::Duration;

use super::{SendHalf, h3_error};
use crate::client::ClientError;
use crate::client::replay::ReplayBody;

/// A request's sending half. Dropped before the body was all sent, it
/// resets the stream: quinn would finish it instead, and a body cut off
/// would look whole to the server (R8.2).
pub(super) struct Upload {
    pub(super) tx: SendHalf,
    pub(super) done: bool,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            self.tx.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
        }
    }
}

/// The request body on its stream, then FIN; each step bounded by
/// `timeout` (a server that grants no flow-control credit). Returns the
/// body (rewindable for a retry) and the stream half.
pub(super) async fn upload(
    mut up: Upload,
    mut body: ReplayBody,
    timeout: Duration,
) -> (Result<(), ClientError>, ReplayBody, Upload) {
    let tx = &mut up.tx;
    let r = async {
        loop {
            let next = std::future::poll_fn(|cx| body.poll_chunk(cx));
            let chunk = match tokio::time::timeout(timeout, next).await {
                Ok(Some(Ok(c))) => c,
                // The guard resets the stream: the server sees it cut off.
                Ok(Some(Err(e))) => return Err(ClientError::Body(e)),
                Ok(None) => break,
                Err(_) => return Err(ClientError::Timeout("sending the request body")),
            };
            match tokio::time::timeout(timeout, tx.send_data(chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(h3_error(e, false)),
                Err(_) => return Err(ClientError::Timeout("sending the request body")),
            }
        }
        match tokio::time::timeout(timeout, tx.finish()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(h3_error(e, false)),
            Err(_) => Err(ClientError::Timeout("sending the request body")),
        }
    }
    .await;
    up.done = r.is_ok();
    (r, body, up)
}
