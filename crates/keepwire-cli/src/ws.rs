//! `keepwire ws URL`: a WebSocket client in the spirit of websocat, over
//! `keepwire::ws`. Lines of stdin go out as text messages, messages
//! received come out on stdout one per line; end of input closes with
//! 1000. `-v` shows the handshake and the close; `--json` describes each
//! message received.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use http::HeaderMap;
use keepwire::ws::{self, Message};
use keepwire::{Client, ClientConfig};

use crate::common::{cert_hint, parse_duration, parse_limit};

/// Options of `keepwire ws`.
#[derive(Args, Debug)]
#[command(
    after_long_help = "\
Exit status: 0 after a close handshake with code 1000 or 1001 (or none),
started by either side; 1 after any other close code, a connection that
ended without a close frame, or an error; 2 a usage error (such as an
http:// URL).

Examples:
  echo hello | keepwire ws ws://127.0.0.1:8080/ws
  keepwire ws -v -H 'Origin: http://example' wss://example.org/socket --json",
    override_usage = "keepwire ws [OPTIONS] <URL>"
)]
pub struct WsArgs {
    /// The server: `ws://host[:port]/path` or `wss://host[:port]/path`
    /// (`host:port/path` means `ws://host:port/path`).
    #[arg(value_name = "URL")]
    url: Option<String>,
    /// Print the handshake on stderr (`> ` sent, `< ` received, `* ` whether
    /// Sec-WebSocket-Accept matched), and the close code and reason at the end.
    #[arg(short, long)]
    verbose: bool,
    /// One JSON object per message received (text, binary, ping, pong,
    /// close) with `type`, `len`, `data` (binary as hex), `time` (Unix
    /// seconds) and `elapsed_ms` (since the connection opened): to FILE, or
    /// on stdout instead of the messages (no FILE, or `-`). Put it last or
    /// write --json=FILE: a word after it is taken as FILE.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
    /// An extra field for the handshake request (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE",
          value_parser = crate::common::parse_header)]
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Subprotocol to offer (`Sec-WebSocket-Protocol`; repeatable).
    #[arg(long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,
    /// wss://: trust only the certificates in this PEM file.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    cacert: Option<PathBuf>,
    /// wss://: do not verify the server's certificate (test servers only).
    #[arg(short = 'k', long)]
    insecure: bool,
    /// Ping the server after this long without a frame from it; `0` never.
    /// A server that then sends nothing for 10 s is taken as dead.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    ping_interval: Duration,
    /// Time allowed to connect and for the handshake's response.
    #[arg(long, default_value = "30s", value_parser = parse_limit, value_name = "DURATION")]
    timeout: Duration,
    /// After end of input, keep printing what arrives for this long before
    /// closing (so `echo hi | keepwire ws URL` shows the echo).
    #[arg(long, default_value = "500ms", value_parser = parse_duration, value_name = "DURATION")]
    linger: Duration,
    /// Open the WebSocket on an HTTP/2 stream with an extended CONNECT (RFC
    /// 8441), h2 negotiated by ALPN (wss://). The server must advertise
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL.
    #[arg(long)]
    http2: bool,
    /// As --http2, over cleartext HTTP/2 without negotiating (h2c, ws://).
    #[arg(long)]
    http2_prior_knowledge: bool,
}

/// `ws://` and `wss://` URLs as given; `host:port/path` means
/// `ws://host:port/path` (as `get` reads it with `http://`).
fn ws_url(url: String) -> Result<String, String> {
    match url.split_once("://") {
        None => Ok(format!("ws://{url}")),
        Some(("ws" | "wss", _)) => Ok(url),
        Some((scheme, rest)) => Err(format!(
            "{url}: a WebSocket URL starts with ws:// or wss://{}\n",
            match scheme {
                "http" => format!(" (ws://{rest})"),
                "https" => format!(" (wss://{rest})"),
                _ => String::new(),
            }
        )),
    }
}

/// Runs `keepwire ws`.
pub fn run(mut args: WsArgs) -> Result<(), String> {
    if args.url.is_none() {
        // `--json URL`: the URL was taken as the flag's FILE.
        args.url = args.json.replace("-".into()).filter(|j| j != "-");
    }
    use clap::error::ErrorKind::{MissingRequiredArgument, ValueValidation};
    let Some(url) = args.url.clone().map(ws_url) else {
        clap::Error::raw(MissingRequiredArgument, "the URL is missing\n").exit()
    };
    let url = url.unwrap_or_else(|e| clap::Error::raw(ValueValidation, e).exit());
    let mut headers = HeaderMap::new();
    for (name, value) in &args.headers {
        headers.append(name, value.clone());
    }
    let mut config = ClientConfig::default();
    config.connect_timeout = args.timeout;
    config.response_timeout = args.timeout;
    if args.http2 && url.starts_with("ws://") {
        crate::common::deprecated("--http2 on ws://", "--http2-prior-knowledge");
    }
    let http2 = args.http2 || args.http2_prior_knowledge;
    config.http2_prior_knowledge = http2;
    if args.insecure {
        config.tls = Some(keepwire::client::tls::insecure_config());
    } else if let Some(path) = &args.cacert {
        config.tls =
            Some(keepwire::client::tls::config_with_ca(path).map_err(|e| format!("--cacert {e}"))?);
    }
    let mut cfg = ws::Config::default();
    cfg.ping_interval = (!args.ping_interval.is_zero()).then_some(args.ping_interval);
    cfg.idle_timeout = None;
    cfg.protocols = args.protocols.clone();
    cfg.http2 = http2;
    let rt = crate::common::runtime(Some(1))?;
    let result = rt.block_on(session(&args, &url, Client::new(config), headers, cfg));
    // Not waiting for the blocked read of an interactive stdin.
    rt.shutdown_background();
    result
}

async fn session(
    args: &WsArgs,
    url: &str,
    client: Client,
    headers: HeaderMap,
    cfg: ws::Config,
) -> Result<(), String> {
    let mut json = match args.json.as_deref() {
        Some("-") => Some(Box::new(std::io::stdout()) as Box<dyn Write>),
        Some(f) => {
            Some(Box::new(std::fs::File::create(f).map_err(|e| format!("--json {f}: {e}"))?) as _)
        }
        None => None,
    };
    let text = args.json.as_deref() != Some("-");
    let (sock, shake) = ws::connect(&client, url, headers, cfg).await.map_err(|e| {
        if let (
            true,
            ws::Error::Handshake {
                handshake: Some(h), ..
            },
        ) = (args.verbose, &e)
        {
            eprint!("{}", h.transcript());
        }
        cert_hint(format!("ws {url}: {e}"), "--cacert FILE", "-k")
    })?;
    if args.verbose {
        eprint!("{}", shake.transcript());
    }
    let opened = Instant::now();
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let closed = ws::pipe_lines(sock, stdin, args.linger, |m| {
        print(text, &mut json, m, opened)
    })
    .await
    .map_err(|e| format!("ws: {e}"))?;
    let (code, reason) = (closed.code, &closed.reason);
    if args.verbose {
        let by = if closed.by_peer { "the server" } else { "us" };
        eprintln!("* closed (started by {by}): code {code}, reason {reason:?}");
    }
    if closed.is_normal() {
        Ok(())
    } else {
        Err(format!("ws: closed with code {code} {reason:?}"))
    }
}

/// Writes one received message: its data on stdout if `text`, its JSON
/// object to `json`.
fn print(text: bool, json: &mut Option<Box<dyn Write>>, m: &Message, opened: Instant) {
    let (kind, data): (&str, &[u8]) = match m {
        Message::Text(t) => ("text", t.as_bytes()),
        Message::Binary(b) => ("binary", b),
        Message::Ping(b) => ("ping", b),
        Message::Pong(b) => ("pong", b),
        Message::Close(_) => ("close", b""),
    };
    // A reader that went away (`| head`) is not an error here.
    if let Some(out) = json {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut v = serde_json::json!({
            "type": kind,
            "len": data.len(),
            "data": match m {
                Message::Text(t) => t.clone(),
                _ => data.iter().map(|b| format!("{b:02x}")).collect(),
            },
            "time": time.as_secs_f64(),
            "elapsed_ms": opened.elapsed().as_secs_f64() * 1000.0,
        });
        if let Message::Close(Some(c)) = m {
            v["code"] = c.code.into();
            v["reason"] = c.reason.clone().into();
        }
        let _ = writeln!(out, "{v}").and_then(|()| out.flush());
    }
    if let (true, Message::Text(_) | Message::Binary(_)) = (text, m) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(data).and_then(|()| out.write_all(b"\n"));
        let _ = out.flush();
    }
}
