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
///
/// ```
/// use axum::{Extension, Router, routing::get};
/// use keepwire::{ConnInfo, Server, tower::TowerHandler};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let app = Router::new().route(
///     "/",
///     get(|Extension(c): Extension<ConnInfo>| async move {
///         format!("request {} on connection {}", c.request_index, c.id)
///     }),
/// );
/// let server = Server::builder()
///     .listen("127.0.0.1:0".parse()?)
///     .bind()?
///     .spawn(TowerHandler(app));
/// let client = keepwire::Client::default();
/// let url = format!("http://{}/", server.local_addr());
/// client.get(&url).await?.into_body().collect(1024).await?;
/// let second = client.get(&url).await?.into_body().collect(1024).await?;
/// assert_eq!(&second[..], b"request 2 on connection 1");
/// # drop(client);
/// server.shutdown().await?;
/// # Ok(())
/// # }
/// ```
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
///
/// ```
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// # let server = keepwire::Server::builder()
/// #     .listen("127.0.0.1:0".parse()?)
/// #     .bind()?
/// #     .spawn(|_req: http::Request<keepwire::Body>| async { http::Response::new(keepwire::Body::from("ok")) });
/// # let url = format!("http://{}/", server.local_addr());
/// let mut svc = ServiceBuilder::new()
///     .concurrency_limit(16)
///     .timeout(Duration::from_secs(10))
///     .service(keepwire::Client::default());
/// type Req = http::Request<keepwire::Body>;
/// let req = http::Request::get(&url).body(keepwire::Body::empty())?;
/// // The body type is generic: name it for `ready` (`oneshot` infers it).
/// let resp = ServiceExt::<Req>::ready(&mut svc).await?.call(req).await?;
/// assert_eq!(resp.status(), 200);
/// let again = svc.oneshot(http::Request::get(&url).body(keepwire::Body::empty())?).await?;
/// assert_eq!(again.status(), 200);
/// # server.shutdown().await?;
/// # Ok(())
/// # }
/// ```
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
