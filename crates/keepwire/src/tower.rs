//! Serving any `tower::Service` (an axum `Router`, for one) on keepwire's
//! server, so applications keep their framework and gain keepwire's
//! connection management.

use std::fmt::Display;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower_service::Service;

use crate::body::Body;
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
