//! The real-time experiment's server side: the event source's server, and
//! what may stand between it and the link (keepwire proxy, or a relay that
//! buffers responses), started for one run and stopped after it.
//!
//! The buffering relay is what a reverse proxy with response buffering on
//! (nginx's default, `proxy_buffering on`) does to a response: it forwards
//! whole buffers only, or what is left when the response ends. A complete
//! response (a poll's, a long poll's) passes at once; a stream that never
//! ends passes nothing until a buffer fills. So that the stream's events
//! arrive at all, the origin ends every event stream when the run's events
//! are done ([`Origin::finish`]), and records when.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use keepwire::proxy::{Proxy, ProxyConfig, Route, Upstream};
use keepwire::{Body, Client, ClientConfig, Server};
use tokio::sync::{oneshot, watch};

use crate::realtime::Events;
use crate::site::status;

/// What the buffering relay forwards at a time: one memory page, nginx's
/// default `proxy_buffer_size`.
pub(super) const RELAY_BUFFER: usize = 8 * 1024;

/// Between the link and the event source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    /// Nothing.
    Direct,
    /// keepwire proxy (it flushes every piece of a streamed body).
    Proxy,
    /// A relay that buffers responses ([`RELAY_BUFFER`]).
    Buffering,
}

impl Path {
    /// How the tables say it.
    pub(super) fn suffix(self) -> &'static str {
        match self {
            Path::Direct => "",
            Path::Proxy => " via keepwire proxy",
            Path::Buffering => " via buffering relay",
        }
    }
}

/// The event source's server for one run: ends its event streams on
/// [`Origin::finish`].
#[derive(Clone)]
pub(super) struct Origin {
    pub(super) source: Events,
    finish: watch::Sender<bool>,
    /// When the streams were ended.
    pub(super) finished: Arc<Mutex<Option<Instant>>>,
}

impl Origin {
    pub(super) fn new(source: Events) -> Origin {
        Origin {
            source,
            finish: watch::Sender::new(false),
            finished: Arc::default(),
        }
    }

    /// Ends every event stream (now and later).
    pub(super) fn finish(&self) {
        *self.finished.lock().expect("finished lock") = Some(Instant::now());
        self.finish.send_replace(true);
    }

    async fn handle(self, req: Request<Body>) -> Response<Body> {
        let stream = req.uri().path() == "/events";
        let resp = self.source.handle(req).await;
        if !stream {
            return resp;
        }
        let (parts, mut body) = resp.into_parts();
        let (tx, out) = Body::channel(16);
        let mut finish = self.finish.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = finished(&mut finish) => return,
                    frame = body.frame() => {
                        let Some(Ok(frame)) = frame else { return };
                        if let Ok(data) = frame.into_data()
                            && tx.send(data).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        Response::from_parts(parts, out)
    }
}

/// Returns once `finish` says true (or its sender is gone).
async fn finished(finish: &mut watch::Receiver<bool>) {
    let _ = finish.wait_for(|f| *f).await;
}

/// Starts the origin and, per `path`, what stands before it, on `ip`, for
/// clients from `client_ip`; runs on the server side. Returns the address
/// to expose and a sender that stops them all.
pub(super) async fn start(
    origin: Origin,
    path: Path,
    ip: IpAddr,
    client_ip: IpAddr,
) -> std::io::Result<(SocketAddr, oneshot::Sender<()>)> {
    let bind = |c: &mut keepwire::server::Config| {
        c.idle_timeout = std::time::Duration::from_secs(60);
    };
    let origin_server = Server::builder()
        .listen(SocketAddr::new(ip, 0))
        .configure(bind)
        .bind()?
        .spawn(move |req| origin.clone().handle(req));
    let upstream = origin_server.local_addr();
    let front = match path {
        Path::Direct => None,
        Path::Proxy => {
            let mut pc = ProxyConfig::default();
            pc.routes = vec![Route::new(
                None,
                "/",
                vec![Upstream::new(upstream.to_string())],
            )];
            // The link's client side (not loopback in the namespaces).
            pc.allow = vec![
                format!("{}/32", client_ip)
                    .parse()
                    .map_err(std::io::Error::other)?,
            ];
            Some(
                Server::builder()
                    .listen(SocketAddr::new(ip, 0))
                    .config(Proxy::server_config())
                    .bind()?
                    .spawn(Proxy::new(pc)),
            )
        }
        Path::Buffering => {
            let client = Client::new(ClientConfig::default());
            Some(
                Server::builder()
                    .listen(SocketAddr::new(ip, 0))
                    .configure(bind)
                    .bind()?
                    .spawn(move |req| buffering_relay(client.clone(), upstream, req)),
            )
        }
    };
    let addr = front.as_ref().map_or(upstream, |f| f.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::task::spawn_local(async move {
        let _ = stopped.await;
        if let Some(f) = front {
            let _ = f.shutdown().await;
        }
        let _ = origin_server.shutdown().await;
    });
    Ok((addr, stop))
}

/// The buffering relay's handler: asks `origin`, then answers with whole
/// [`RELAY_BUFFER`]s of the body, or what is left at its end.
async fn buffering_relay(client: Client, origin: SocketAddr, req: Request<Body>) -> Response<Body> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut up = Request::get(format!("http://{origin}{target}"));
    for (name, value) in req.headers() {
        if name != http::header::HOST {
            up = up.header(name, value);
        }
    }
    let Ok(up) = up.body(Body::empty()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Ok(resp) = client.request(up).await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let (mut parts, mut body) = resp.into_parts();
    for h in [
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
        http::header::CONNECTION,
    ] {
        parts.headers.remove(h);
    }
    // Nothing goes out before the first buffer is full or the body ended.
    let mut buf = BytesMut::new();
    while buf.len() < RELAY_BUFFER {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
            Some(Err(_)) => return status(StatusCode::BAD_GATEWAY),
            None => return Response::from_parts(parts, Body::from(buf.freeze())),
        }
    }
    let (tx, out) = Body::channel(1);
    tokio::spawn(async move {
        loop {
            let ended = match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        buf.extend_from_slice(&d);
                    }
                    false
                }
                Some(Err(_)) | None => true,
            };
            if (ended || buf.len() >= RELAY_BUFFER)
                && !buf.is_empty()
                && tx.send(buf.split().freeze()).await.is_err()
            {
                return;
            }
            if ended {
                return;
            }
        }
    });
    Response::from_parts(parts, out)
}

/// CPU time the calling thread has used (the server side is one thread).
pub(super) fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
