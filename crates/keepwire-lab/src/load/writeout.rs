//! curl's `-w/--write-out FORMAT` over a [`Record`]: `%{name}` variables
//! with curl's names and meanings, so a script written for curl reads the
//! same numbers from `keepwire get`.
//!
//! Times are in seconds with microsecond precision, each measured from the
//! request's start and cumulative as curl defines them: `time_namelookup`
//! ≤ `time_connect` ≤ `time_appconnect` (0 without TLS) ≤
//! `time_pretransfer` ≤ `time_starttransfer` ≤ `time_total`. After
//! redirects (`-L`), `time_total` spans them all and the others are the
//! last response's.

use super::record::Record;

/// The variables [`format()`] knows, as `--help` lists them.
pub const VARIABLES: &[&str] = &[
    "http_code",
    "response_code",
    "method",
    "time_namelookup",
    "time_connect",
    "time_appconnect",
    "time_pretransfer",
    "time_starttransfer",
    "time_total",
    "size_download",
    "size_header",
    "size_upload",
    "num_connects",
    "num_redirects",
    "num_retries",
    "url_effective",
    "remote_ip",
    "remote_port",
    "local_ip",
    "local_port",
    "http_version",
    "content_type",
    "exitcode",
    "errormsg",
];

/// Expands `format` for `r`, whose transfer ended with curl exit `exit`.
/// Unknown variables expand to nothing, as in curl; `\n`, `\r`, `\t` and
/// `\\` are escapes, `%%` a percent sign.
pub fn format(format: &str, r: &Record, exit: u8) -> String {
    let mut out = String::new();
    let mut rest = format;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("%{")
            && let Some(end) = after.find('}')
        {
            out.push_str(&variable(&after[..end], r, exit));
            rest = &after[end + 1..];
            continue;
        }
        let (text, skip) = match (c, rest[1..].chars().next()) {
            ('%', Some('%')) => ("%", 2),
            ('\\', Some('n')) => ("\n", 2),
            ('\\', Some('r')) => ("\r", 2),
            ('\\', Some('t')) => ("\t", 2),
            ('\\', Some('\\')) => ("\\", 2),
            _ => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
                continue;
            }
        };
        out.push_str(text);
        rest = &rest[skip..];
    }
    out
}

/// A response head as curl's `-i` and `-I` print it.
pub fn head(r: &Record) -> String {
    let status = r.status.unwrap_or(0);
    let mut s = match r.version.as_deref() {
        Some("HTTP/2.0") => format!("HTTP/2 {status} \r\n"),
        Some("HTTP/3.0") => format!("HTTP/3 {status} \r\n"),
        v => format!(
            "{} {status} {}\r\n",
            v.unwrap_or("HTTP/1.1"),
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("")
        ),
    };
    for (n, v) in &r.response_headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s + "\r\n"
}

/// The cumulative phase ends, in seconds: name looked up, connected (TCP),
/// TLS done (0 without TLS), ready to send, first byte, total.
fn times(r: &Record) -> [f64; 6] {
    let total = r.total_ms / 1000.0;
    let Some(p) = r.phases_ms else {
        return [0.0, 0.0, 0.0, 0.0, 0.0, total];
    };
    let lookup = p.queued + p.dns.unwrap_or(0.0);
    let tls = p.tls.unwrap_or(0.0);
    let connect = lookup + p.connect.unwrap_or(0.0) - tls;
    let app = if p.tls.is_some() { connect + tls } else { 0.0 };
    let pre = connect + tls;
    let first = r.first_byte_ms.unwrap_or(pre);
    [lookup, connect, app, pre, first, r.total_ms].map(|ms| ms / 1000.0)
}

fn split_addr(addr: &str) -> (String, String) {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => (a.ip().to_string(), a.port().to_string()),
        Err(_) => (String::new(), "0".into()),
    }
}

fn variable(name: &str, r: &Record, exit: u8) -> String {
    let [lookup, connect, app, pre, first, total] = times(r);
    let secs = |v: f64| format!("{v:.6}");
    let conn = r.connection.as_ref();
    let peer = split_addr(conn.map_or("", |c| c.peer.as_str()));
    let local = split_addr(conn.map_or("", |c| c.local.as_str()));
    match name {
        "http_code" | "response_code" => format!("{:03}", r.status.unwrap_or(0)),
        "method" => r.method.clone(),
        "time_namelookup" => secs(lookup),
        "time_connect" => secs(connect),
        "time_appconnect" => secs(app),
        "time_pretransfer" => secs(pre),
        "time_starttransfer" => secs(if r.status.is_some() { first } else { 0.0 }),
        "time_total" => secs(total),
        "size_download" => r.size.to_string(),
        "size_header" => r.header_size.to_string(),
        "size_upload" => r.request_body_size.to_string(),
        "num_connects" => r.connects.to_string(),
        "num_redirects" => r.redirects.to_string(),
        "num_retries" => r.retries.to_string(),
        "url_effective" => r.url_effective.clone(),
        "remote_ip" => peer.0,
        "remote_port" => peer.1,
        "local_ip" => local.0,
        "local_port" => local.1,
        "http_version" => match r.version.as_deref() {
            Some("HTTP/2.0") => "2".into(),
            Some("HTTP/3.0") => "3".into(),
            Some("HTTP/1.0") => "1.0".into(),
            Some("HTTP/1.1") => "1.1".into(),
            _ => "0".into(),
        },
        "content_type" => r.content_type.clone().unwrap_or_default(),
        "exitcode" => exit.to_string(),
        "errormsg" => r.error.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::{Kind, Phases};
    use super::*;

    #[test]
    fn times_are_cumulative_seconds_and_escapes_expand() {
        let mut r = Record::failed(1, "https://a/".into(), Kind::Url, 0.0, String::new());
        r.error = None;
        r.status = Some(200);
        r.version = Some("HTTP/2.0".into());
        r.phases_ms = Some(Phases {
            queued: 1.0,
            dns: Some(2.0),
            connect: Some(7.0),
            tls: Some(4.0),
            send: 1.0,
            wait: 3.0,
            download: 2.0,
        });
        r.first_byte_ms = Some(14.0);
        r.total_ms = 16.0;
        let f = "%{http_code} %{time_namelookup} %{time_connect} %{time_appconnect} \
                 %{time_pretransfer} %{time_starttransfer} %{time_total} %{http_version}\\n%%%{nope}";
        assert_eq!(
            format(f, &r, 0),
            "200 0.003000 0.006000 0.010000 0.010000 0.014000 0.016000 2\n%"
        );
        r.phases_ms.as_mut().unwrap().tls = None;
        assert!(format("%{time_appconnect}", &r, 0).starts_with("0.000000"));
        assert_eq!(format("%{exitcode} %{http_code}", &r, 7), "7 200");
    }
}
