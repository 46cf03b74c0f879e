//! The two multiplexed protocols the HTTP/3 experiments compare, from one
//! place: HTTP/2 over TCP + TLS 1.3 (ALPN `h2`) through keepwire's client,
//! and HTTP/3 over QUIC — for now through the temporary `h3_interim`
//! client, to become keepwire's client too, so that only the transport
//! differs.

use std::net::SocketAddr;
use std::sync::Arc;

use http::Response;
use keepwire::{Body, Client};

use super::h3_interim;
use super::harness::Lab;

/// A protocol of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proto {
    /// HTTP/2 over TCP and TLS 1.3.
    H2,
    /// HTTP/3 over QUIC.
    H3,
}

impl Proto {
    /// As the tables name it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Proto::H2 => "HTTP/2 (TCP)",
            Proto::H3 => "HTTP/3 (QUIC)",
        }
    }

    /// A new client speaking only this protocol to the lab's self-signed
    /// HTTPS origin at `origin`.
    pub(super) async fn client(self, origin: SocketAddr) -> Result<Fetcher, String> {
        self.client_with(origin, keepwire::client::tls::insecure_config(), false)
            .await
    }

    /// The same with the TLS settings `tls` (and their session cache: two
    /// clients given one resume each other's sessions), and 0-RTT early
    /// data when `early_data`. HTTP/3 connects here, HTTP/2 on the first
    /// request.
    async fn client_with(
        self,
        origin: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        early_data: bool,
    ) -> Result<Fetcher, String> {
        match self {
            Proto::H2 => Client::builder()
                .tls_config(tls)
                .build()
                .map(Fetcher::Keepwire)
                .map_err(|e| e.to_string()),
            Proto::H3 => h3_interim::Client::connect(origin, &tls, early_data)
                .await
                .map(Fetcher::Interim),
        }
    }
}

/// A client of one protocol.
pub(super) enum Fetcher {
    /// keepwire's client.
    Keepwire(Client),
    /// TEMPORARY: HTTP/3 through `h3_interim`.
    Interim(h3_interim::Client),
}

impl Fetcher {
    /// Whether the server accepted 0-RTT data (`None`: none sent).
    pub(super) fn early_data(&self) -> Option<bool> {
        match self {
            Fetcher::Keepwire(_) => None,
            Fetcher::Interim(c) => c.early_data(),
        }
    }

    /// GETs `url`: the response head, its body streaming.
    pub(super) async fn get(&self, url: &str) -> Result<Response<Body>, String> {
        match self {
            Fetcher::Keepwire(c) => c.get(url).await.map_err(|e| e.to_string()),
            Fetcher::Interim(c) => c.get(url).await,
        }
    }
}

/// GETs `url` and reads its body to the end (at most 1 MiB).
pub(super) async fn get(client: &Fetcher, url: &str) -> Result<bytes::Bytes, String> {
    let resp = client.get(url).await?;
    if !resp.status().is_success() {
        return Err(format!("{url}: {}", resp.status()));
    }
    resp.into_body()
        .collect(1 << 20)
        .await
        .map_err(|e| e.to_string())
}

/// How long the first request on a new connection to the lab's HTTPS
/// origin takes, handshakes included, in ms, and whether 0-RTT data was
/// accepted (`None`: none sent): on a fresh client, or
/// (`resumed`) on a second client that shares the first one's TLS session
/// cache, after the first has made a request and closed (TLS 1.3 session
/// resumption; over QUIC with 0-RTT early data).
pub(super) fn first_request(
    lab: &Lab,
    proto: Proto,
    resumed: bool,
) -> Result<(f64, Option<bool>), String> {
    if !lab.link.exact && proto == Proto::H3 {
        return Err("the approximate link (a TCP relay) carries no UDP".into());
    }
    let origin = lab.origin_tls;
    let url = format!("https://{origin}/lab/bytes/0");
    lab.link.client.run(move || async move {
        let tls = keepwire::client::tls::insecure_config();
        if resumed {
            let first = proto.client_with(origin, tls.clone(), false).await?;
            get(&first, &url).await?;
            // The ticket arrives after the handshake: let it land.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            drop(first);
        }
        let t0 = tokio::time::Instant::now();
        let client = proto.client_with(origin, tls, resumed).await?;
        get(&client, &url).await?;
        let took = super::stats::ms(t0.elapsed());
        Ok((took, client.early_data()))
    })
}
