//! TEMPORARY stand-in for helper R's event source (`crate::realtime`), so
//! the experiment's client side can be built before it lands; replaced by
//! it, then deleted. `/poll?since=N`, `/long-poll?since=N&timeout_ms=T`
//! and `/events` all answer Server-Sent Events text.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use keepwire::Body;
use tokio::sync::watch;

use crate::site::{status, with_type};

#[derive(Clone)]
pub(super) struct Source {
    events: Arc<Mutex<Vec<String>>>,
    latest: watch::Sender<u64>,
}

impl Source {
    pub(super) fn new() -> Source {
        Source {
            events: Arc::default(),
            latest: watch::Sender::new(0),
        }
    }

    pub(super) fn publish(&self, data: String) -> u64 {
        let mut ev = self.events.lock().expect("events");
        ev.push(data);
        let id = ev.len() as u64;
        self.latest.send_replace(id);
        id
    }

    fn since(&self, after: u64) -> String {
        let ev = self.events.lock().expect("events");
        let mut out = String::new();
        for (i, d) in ev.iter().enumerate().skip(after as usize) {
            out.push_str(&format!("id: {}\ndata: {d}\n\n", i + 1));
        }
        out
    }

    pub(super) async fn handle(self, req: Request<Body>) -> Response<Body> {
        let q = req.uri().query().unwrap_or("").to_string();
        let param = |n: &str| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == n)
                .and_then(|(_, v)| v.parse::<u64>().ok())
        };
        let since = param("since").unwrap_or(0);
        match req.uri().path() {
            "/poll" => with_type(Body::from(self.since(since)), "text/event-stream"),
            "/long-poll" => {
                let mut rx = self.latest.subscribe();
                let hold = Duration::from_millis(param("timeout_ms").unwrap_or(30_000));
                let _ = tokio::time::timeout(hold, rx.wait_for(|l| *l > since)).await;
                with_type(Body::from(self.since(since)), "text/event-stream")
            }
            "/events" => {
                let (tx, body) = Body::channel(16);
                let mut rx = self.latest.subscribe();
                tokio::spawn(async move {
                    let mut sent = 0;
                    loop {
                        let now = *rx.borrow_and_update();
                        if now > sent {
                            if tx.send(self.since(sent)).await.is_err() {
                                return;
                            }
                            sent = now;
                        }
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                });
                with_type(body, "text/event-stream")
            }
            _ => status(http::StatusCode::NOT_FOUND),
        }
    }
}
