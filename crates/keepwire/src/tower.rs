//! keepwire and the `tower` ecosystem, both ways.
//!
//! - Serving: any `tower::Service` (an axum `Router`, for one) runs on
//!   keepwire's server through [`TowerHandler`], so applications keep their
//!   framework and gain keepwire's connection management. With the `axum`
//!   feature, each request also carries axum's
//!   `ConnectInfo<SocketAddr>` (the client's address), which axum itself
//!   adds only under `into_make_service_with_connect_info`.
//! - Calling: [`Client`] is a `tower::Service<http::Request<B>>`, so tower
//!   middleware (timeouts, concurrency limits, retries of your own) wraps
//!   it as it wraps hyper's client. `poll_ready` is always ready: the
//!   per-origin connection cap is where requests wait, and the origin is
//!   known only per request.

use std::fmt::Display;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower_service::Service;

use crate::body::Body;
use crate::client::{Client, ClientError};
use crate::server::{Handler, ResponseFuture};

/// Adapts a `tower::Service` into a [`Handler`]. The service is cloned per
/// request (as hyper-util and axum do), so it must be cheap to clone.
#[derive(Debug, Clone)]
pub struct TowerHandler<S>(pub S);

impl<S, B> Handler for TowerHandler<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Display + Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn call(&self, req: Request<Body>) -> ResponseFuture {
        #[cfg(feature = "axum")]
        let req = {
            let mut req = req;
            if let Some(info) = req.extensions().get::<crate::server::ConnInfo>() {
                let peer = axum::extract::ConnectInfo(info.peer);
                req.extensions_mut().insert(peer);
            }
            req
        };
        let mut svc = self.0.clone();
        Box::pin(async move {
            let result = match std::future::poll_fn(|cx| svc.poll_ready(cx)).await {
                Ok(()) => svc.call(req).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(resp) => resp.map(Body::wrap),
                Err(e) => {
                    tracing::error!(error = %e, "service failed");
                    let mut r = Response::new(Body::from("internal server error\n"));
                    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    r
                }
            }
        })
    }
}

/// The client as a `tower::Service`: `call` is [`Client::request`], with
/// any `http_body::Body` as the request body (a [`Body`] is passed through
/// as it is, so one already in memory stays replayable whole).
impl<B> Service<Request<B>> for Client
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = ClientError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, ClientError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ClientError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let client = self.clone();
        Box::pin(async move { client.request(req.map(Body::wrap)).await })
    }
}
