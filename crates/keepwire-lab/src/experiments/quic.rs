//! The two multiplexed protocols the HTTP/3 experiments compare, from one
//! place: HTTP/2 over TCP + TLS 1.3 (ALPN `h2`) and HTTP/3 over QUIC
//! (`Http3Mode::Only`), both through keepwire's own client against the
//! lab's HTTPS origin, which serves HTTP/3 on the same port over UDP — so
//! that only the transport differs.

use std::sync::Arc;

use keepwire::client::Http3Mode;
use keepwire::{Client, RequestMeta};

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
    /// HTTPS origin (it connects on its first request).
    pub(super) fn client(self) -> Result<Client, String> {
        self.client_with(keepwire::client::tls::insecure_config(), false)
    }

    /// The same with the TLS settings `tls` (and their session cache: two
    /// clients given one resume each other's sessions), and 0-RTT early
    /// data when `early_data`.
    fn client_with(
        self,
        tls: Arc<rustls::ClientConfig>,
        early_data: bool,
    ) -> Result<Client, String> {
        let b = Client::builder().tls_config(tls);
        match self {
            Proto::H2 => b,
            Proto::H3 => b.http3(Http3Mode::Only).early_data(early_data),
        }
        .build()
        .map_err(|e| e.to_string())
    }
}

/// GETs `url` and reads its body to the end (at most 1 MiB); with what the
/// client says about the request.
pub(super) async fn get(
    client: &Client,
    url: &str,
) -> Result<(bytes::Bytes, Option<RequestMeta>), String> {
    let resp = client.get(url).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("{url}: {}", resp.status()));
    }
    let meta = resp.extensions().get::<RequestMeta>().copied();
    let body = resp
        .into_body()
        .collect(1 << 20)
        .await
        .map_err(|e| e.to_string())?;
    Ok((body, meta))
}

/// How long the first request on a new connection to the lab's HTTPS
/// origin takes, handshakes included, in ms, and whether the server
/// accepted 0-RTT early data (`None`: none tried): on a fresh client,
/// or (`resumed`) on a second client that shares the first one's TLS
/// session cache, after the first has made a request (TLS 1.3 session
/// resumption; over QUIC with 0-RTT early data).
pub(super) fn first_request(
    lab: &Lab,
    proto: Proto,
    resumed: bool,
) -> Result<(f64, Option<bool>), String> {
    if !lab.link.exact && proto == Proto::H3 {
        return Err("the approximate link (a TCP relay) carries no UDP".into());
    }
    let url = format!("https://{}/lab/bytes/0", lab.origin_tls);
    lab.link.client.run(move || async move {
        let tls = keepwire::client::tls::insecure_config();
        if resumed {
            let first = proto.client_with(tls.clone(), false)?;
            get(&first, &url).await?;
            // The ticket arrives after the handshake: let it land.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            drop(first);
        }
        let client = proto.client_with(tls, resumed)?;
        let t0 = tokio::time::Instant::now();
        let (_, meta) = get(&client, &url).await?;
        let took = super::stats::ms(t0.elapsed());
        let early = meta.filter(|m| m.conn.quic.is_some()).map(|m| m.early_data);
        Ok((took, early))
    })
}
