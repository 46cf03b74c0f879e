//! The record of a page load, request by request: what `keepwire get`
//! prints as a table or JSON, what the waterfall draws and what the lab
//! measures. It lives apart from the engine that fills it and from the
//! renderers that read it, so each of them depends on it and none on the
//! others.

use serde::Serialize;

/// The chapter's ways to load a page (R4.1–R4.5).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// One request at a time, each on a new connection with `Connection: close` (R4.1).
    Serial,
    /// Up to N requests at once, each on its own new connection, none reused (R4.2).
    Parallel,
    /// Up to N requests at once on connections kept open and reused (R4.3).
    Persistent,
    /// Sub-resources split across N persistent connections, each sending up to
    /// `depth` requests without waiting for the responses (R4.4, R7).
    Pipelined,
    /// Every request at once as a stream on one HTTP/2 connection per origin
    /// (R4.5): h2c with prior knowledge for `http://`, ALPN for `https://`.
    Multiplexed,
}

impl Strategy {
    /// As on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Serial => "serial",
            Strategy::Parallel => "parallel",
            Strategy::Persistent => "persistent",
            Strategy::Pipelined => "pipelined",
            Strategy::Multiplexed => "multiplexed",
        }
    }

    /// Speaks HTTP/1.1 only: every strategy but the multiplexed one.
    pub fn http1(self) -> bool {
        self != Strategy::Multiplexed
    }
}

/// What a request was for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A URL asked for as such.
    Url,
    /// A page: its sub-resources follow.
    Page,
    /// A sub-resource of a page.
    Resource,
}

/// The connection that carried a request (R1.1), as recorded.
///
/// Not `keepwire::client::ConnInfo`, which this is made from: that one is
/// the live connection's facts, this one their printable record.
#[derive(Debug, Clone, Serialize)]
pub struct ConnRecord {
    /// Client connection id.
    pub id: u64,
    /// Our address.
    pub local: String,
    /// The server's address.
    pub peer: String,
    /// What TLS agreed on (https only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsRecord>,
}

/// A TLS connection's version, cipher suite and ALPN protocol.
#[derive(Debug, Clone, Serialize)]
pub struct TlsRecord {
    /// e.g. `TLSv1_3`.
    pub version: &'static str,
    /// e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: &'static str,
    /// `h2`, `http/1.1`, or none (no ALPN: HTTP/1.1).
    pub alpn: Option<&'static str>,
}

/// Phase durations in ms (R1.2); they follow each other from the request's start.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Phases {
    /// Waiting for a connection (slot, or turn on a pipelined connection).
    pub queued: f64,
    /// Name resolution; `None` on a reused connection.
    pub dns: Option<f64>,
    /// TCP handshake, and for `https` the TLS handshake after it; `None`
    /// on a reused connection.
    pub connect: Option<f64>,
    /// The TLS handshake alone, the part of `connect` it took (`https`
    /// only, as HAR's `ssl`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<f64>,
    /// Writing the request.
    pub send: f64,
    /// Request written to first response byte (TTFB).
    pub wait: f64,
    /// First response byte to body complete.
    pub download: f64,
}

impl Phases {
    /// Queued, DNS, connect, send, wait and download, in that order: the
    /// columns of every table; `None` where there are no phases (no
    /// response) or a phase did not happen (DNS and connect on a reused
    /// connection).
    pub fn in_order(phases: Option<Phases>) -> [Option<f64>; 6] {
        match phases {
            None => [None; 6],
            Some(p) => [
                Some(p.queued),
                p.dns,
                p.connect,
                Some(p.send),
                Some(p.wait),
                Some(p.download),
            ],
        }
    }
}

/// One request's result.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Request number, from 1, in the order requests were made known.
    pub index: usize,
    /// Absolute URL.
    pub url: String,
    /// Why it was fetched.
    pub kind: Kind,
    /// Response status, if a response head arrived.
    pub status: Option<u16>,
    /// Response version.
    pub version: Option<String>,
    /// Response `Content-Type`.
    pub content_type: Option<String>,
    /// Body bytes received.
    pub size: u64,
    /// Connection that carried it.
    pub connection: Option<ConnRecord>,
    /// The connection had carried requests before.
    pub reused: Option<bool>,
    /// Requests the connection had answered before this one.
    pub conn_request_index: Option<u64>,
    /// Retries on a fresh connection (R8.3).
    pub retries: u32,
    /// Sent with `client.pipeline`.
    pub pipelined: bool,
    /// When the request was issued, ms after the first request.
    pub start_ms: f64,
    /// Phase durations, if a response head arrived.
    pub phases_ms: Option<Phases>,
    /// Request issued to first response byte, ms.
    pub first_byte_ms: Option<f64>,
    /// Request issued to body complete (or failure), ms.
    pub total_ms: f64,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// curl's exit code for `error` (0: none; 6 resolve, 7 connect, 28
    /// timeout, 47 too many redirects, ...).
    #[serde(skip_serializing_if = "is_zero_u8")]
    pub exit_code: u8,
    /// Request method.
    pub method: String,
    /// The URL of the last response, after redirects.
    pub url_effective: String,
    /// Redirects followed before the last response.
    pub redirects: u32,
    /// Connections opened for it (redirects included).
    pub connects: u32,
    /// Response head bytes, status line and blank line included.
    pub header_size: u64,
    /// Request body bytes.
    pub request_body_size: u64,
    /// The response's `Location`.
    #[serde(skip)]
    pub location: Option<String>,
    /// Request fields as sent (HTTP/1.1 spelling).
    #[serde(skip)]
    pub request_headers: Vec<(String, String)>,
    /// Response fields.
    #[serde(skip)]
    pub response_headers: Vec<(String, String)>,
}

fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}

impl Record {
    /// A request that got no response.
    pub(crate) fn failed(
        index: usize,
        url: String,
        kind: Kind,
        start_ms: f64,
        error: String,
    ) -> Self {
        Record {
            index,
            url: url.clone(),
            kind,
            status: None,
            version: None,
            content_type: None,
            size: 0,
            connection: None,
            reused: None,
            conn_request_index: None,
            retries: 0,
            pipelined: false,
            start_ms,
            phases_ms: None,
            first_byte_ms: None,
            total_ms: 0.0,
            error: Some(error),
            exit_code: 0,
            method: "GET".into(),
            url_effective: url.clone(),
            redirects: 0,
            connects: 0,
            header_size: 0,
            request_body_size: 0,
            location: None,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        }
    }

    /// End of the request, ms after the first request.
    pub fn end_ms(&self) -> f64 {
        self.start_ms + self.total_ms
    }
}

/// The run as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Strategy used.
    pub strategy: Strategy,
    /// Connections per origin at most.
    pub max_connections: u16,
    /// Pipelining depth (pipelined only).
    pub depth: Option<u16>,
    /// The URLs were loaded as pages.
    pub page: bool,
    /// URLs as given.
    pub urls: Vec<String>,
    /// Requests made (failed ones included).
    pub requests: usize,
    /// Requests with a complete response.
    pub succeeded: usize,
    /// Requests that failed.
    pub failed: usize,
    /// Connections the client opened.
    pub connections_opened: u64,
    /// Requests carried by a reused connection.
    pub reused: usize,
    /// Retries (R8.3), pipelined resends included.
    pub retries: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// First request issued to last request ended, ms.
    pub wall_ms: f64,
}
