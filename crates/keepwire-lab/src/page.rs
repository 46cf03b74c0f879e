//! Which sub-resources an HTML page makes a browser fetch (what a page load
//! fetches after the page), and URL handling for the page-load engine and
//! `keepwire bench`.
//!
//! The page is tokenized with `html5gum` (a WHATWG tokenizer without
//! dependencies) so comments, `<script>` and `<style>` contents, entities and
//! quoting are handled as a browser does; a hand-written attribute scanner
//! would find `<img>` inside comments or scripts. References are resolved
//! against the page URL (or its first `<base href>`) by RFC 3986 §5, and only
//! same-origin `http://` and `https://` ones are kept: one origin is one
//! connection pool.

use html5gum::{DefaultEmitter, Token, Tokenizer};
use http::Uri;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// `rel` tokens of `<link>` that make a browser fetch `href` while loading
/// the page. Others (`canonical`, `alternate`, `next`, `preconnect`, ...)
/// are links, not sub-resources.
const LINK_FETCHED: [&str; 7] = [
    "stylesheet",
    "icon",
    "shortcut",
    "apple-touch-icon",
    "preload",
    "modulepreload",
    "manifest",
];

/// Bytes a browser percent-encodes in a path or query.
const ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'^')
    .add(b'\\');

/// What a page references.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SubResources {
    /// Same-origin URLs to fetch, once each, in document order.
    pub fetch: Vec<Uri>,
    /// References not fetched, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Parses a command-line URL: `http://` only; a URL without a scheme gets
/// `http://` (as curl does).
pub fn parse_url(input: &str) -> Result<Uri, String> {
    let text = input.trim();
    if text.is_empty() {
        return Err("invalid URL: empty".into());
    }
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|e| format!("invalid URL: {e}"))?;
    match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") | Some("https") => {}
        Some(other) => {
            return Err(format!(
                "unsupported scheme {other}:// (only http:// and https://)"
            ));
        }
        None => return Err("invalid URL: no scheme".into()),
    }
    let Some(authority) = uri.authority() else {
        return Err("invalid URL: no host".into());
    };
    if authority.host().is_empty() {
        return Err("invalid URL: no host".into());
    }
    if authority.as_str().contains('@') {
        return Err("invalid URL: user information (user@host) is not supported".into());
    }
    if uri.path_and_query().is_none() {
        // `http://host` means `http://host/`.
        return format!("{with_scheme}/")
            .parse()
            .map_err(|e| format!("invalid URL: {e}"));
    }
    Ok(uri)
}

/// Scheme, lowercase host and port (the scheme's default, 443 for
/// `https` and 80 otherwise, when none is written): what "same origin"
/// compares.
pub fn origin(uri: &Uri) -> (String, String, u16) {
    let scheme = uri.scheme_str().unwrap_or("http").to_ascii_lowercase();
    let default_port = if scheme == "https" { 443 } else { 80 };
    let host = uri.host().unwrap_or("").to_ascii_lowercase();
    (scheme, host, uri.port_u16().unwrap_or(default_port))
}

/// The sub-resources of `html` (the body of `page`): `<img src>`,
/// `<script src>` and `<link href>` with a fetching `rel`.
pub fn sub_resources(html: &[u8], page: &Uri) -> SubResources {
    let mut emitter = DefaultEmitter::default();
    // <script> and <style> contents are text, not markup.
    emitter.naively_switch_states(true);
    let mut base = page.clone();
    let mut base_seen = false;
    let mut out = SubResources::default();
    let page_origin = origin(page);
    for token in Tokenizer::new_with_emitter(html, emitter) {
        let Ok(Token::StartTag(tag)) = token else {
            continue;
        };
        let attr = |name: &str| {
            tag.attributes
                .get(name.as_bytes())
                .map(|v| String::from_utf8_lossy(&v.value).into_owned())
        };
        let reference = match tag.name.as_slice() {
            b"base" if !base_seen => {
                if let Some(href) = attr("href") {
                    base_seen = true;
                    match resolve(page, &href) {
                        Ok(b) => base = b,
                        Err(why) => out.skipped.push((href, format!("<base href>: {why}"))),
                    }
                }
                continue;
            }
            b"img" | b"script" => attr("src"),
            b"link" => {
                let rel = attr("rel").unwrap_or_default().to_ascii_lowercase();
                let tokens: Vec<&str> = rel.split_ascii_whitespace().collect();
                let fetched = tokens.iter().any(|t| LINK_FETCHED.contains(t))
                    && !tokens.contains(&"alternate");
                match attr("href") {
                    Some(href) if !fetched => {
                        out.skipped.push((
                            href,
                            format!("<link rel=\"{rel}\"> is not loaded with the page"),
                        ));
                        None
                    }
                    href => href,
                }
            }
            _ => None,
        };
        let Some(reference) = reference else {
            continue;
        };
        match resolve(&base, &reference) {
            Ok(uri) if origin(&uri) != page_origin => out
                .skipped
                .push((uri.to_string(), "other origin".to_string())),
            Ok(uri) if same_resource(&uri, page) => {
                out.skipped.push((reference, "the page itself".to_string()))
            }
            Ok(uri) => {
                if !out.fetch.iter().any(|u| same_resource(u, &uri)) {
                    out.fetch.push(uri);
                }
            }
            Err(why) => out.skipped.push((reference, why)),
        }
    }
    out
}

fn same_resource(a: &Uri, b: &Uri) -> bool {
    origin(a) == origin(b)
        && a.path_and_query().map(|p| p.as_str()) == b.path_and_query().map(|p| p.as_str())
}

/// Resolves a reference found in a page against `base` (RFC 3986 §5.2,
/// with a browser's leniency: surrounding whitespace, tabs and newlines are
/// removed, `\` is `/`, unsafe bytes are percent-encoded). Only `http://`
/// and `https://` results are returned.
pub fn resolve(base: &Uri, reference: &str) -> Result<Uri, String> {
    let cleaned: String = reference
        .trim_matches(|c: char| c.is_ascii_whitespace() || c.is_ascii_control())
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let without_fragment = cleaned.split('#').next().unwrap_or("");
    if without_fragment.is_empty() {
        return Err("empty reference".into());
    }
    let mut rest = without_fragment;
    // A relative reference keeps the page's scheme.
    let mut scheme_out = base.scheme_str().unwrap_or("http").to_ascii_lowercase();
    if let Some(colon) = rest.find(':') {
        let scheme = &rest[..colon];
        let is_scheme = !scheme.is_empty()
            && scheme.as_bytes()[0].is_ascii_alphabetic()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if is_scheme {
            let lower = scheme.to_ascii_lowercase();
            if lower != "http" && lower != "https" {
                return Err(format!("{lower}: not fetched (only http:// and https://)"));
            }
            scheme_out = lower;
            rest = &rest[colon + 1..];
        }
    }
    let rest = rest.replace('\\', "/");
    let base_authority = base.authority().map_or("", |a| a.as_str());
    let base_path = base.path();
    let (authority, path_query) = if let Some(net) = rest.strip_prefix("//") {
        let end = net.find(['/', '?']).unwrap_or(net.len());
        (net[..end].to_string(), net[end..].to_string())
    } else if rest.starts_with('/') {
        (base_authority.to_string(), rest)
    } else if rest.starts_with('?') {
        (base_authority.to_string(), format!("{base_path}{rest}"))
    } else {
        let dir = base_path.rfind('/').map_or("/", |i| &base_path[..=i]);
        (base_authority.to_string(), format!("{dir}{rest}"))
    };
    if authority.is_empty() {
        return Err("no host".into());
    }
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (path_query, None),
    };
    let mut path = remove_dot_segments(&path);
    if path.is_empty() {
        path.push('/');
    }
    let mut text = format!(
        "{scheme_out}://{}{}",
        authority.to_ascii_lowercase(),
        utf8_percent_encode(&path, ENCODE)
    );
    if let Some(q) = query {
        text.push('?');
        text.push_str(&utf8_percent_encode(&q, ENCODE).to_string());
    }
    let uri: Uri = text.parse().map_err(|e| format!("invalid URL: {e}"))?;
    if uri.host().is_none_or(str::is_empty) || authority.contains('@') {
        return Err("invalid host".into());
    }
    Ok(uri)
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." | ".." if i == last => {
                if *seg == ".." && out.len() > 1 {
                    out.pop();
                }
                out.push("");
            }
            "." => {}
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if path.starts_with('/') && !joined.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn origin_fills_in_the_default_port_of_its_scheme() {
        for (a, b, same) in [
            ("http://h/", "http://h:80/", true),
            ("https://h/", "https://h:443/", true),
            ("https://h/", "https://h:80/", false),
            ("http://h/", "https://h/", false),
            ("HTTPS://H/", "https://h:443/", true),
        ] {
            assert_eq!(origin(&u(a)) == origin(&u(b)), same, "{a} vs {b}");
        }
        assert_eq!(origin(&u("https://h/")).2, 443);
    }

    #[test]
    fn resolves_like_rfc_3986() {
        let base = u("http://a/b/c/d;p?q");
        for (r, want) in [
            ("g", "http://a/b/c/g"),
            ("./g", "http://a/b/c/g"),
            ("g/", "http://a/b/c/g/"),
            ("/g", "http://a/g"),
            ("//g", "http://g/"),
            ("?y", "http://a/b/c/d;p?y"),
            ("g?y", "http://a/b/c/g?y"),
            ("g#s", "http://a/b/c/g"),
            (";x", "http://a/b/c/;x"),
            (".", "http://a/b/c/"),
            ("./", "http://a/b/c/"),
            ("..", "http://a/b/"),
            ("../", "http://a/b/"),
            ("../g", "http://a/b/g"),
            ("../..", "http://a/"),
            ("../../g", "http://a/g"),
            ("../../../g", "http://a/g"),
            ("/./g", "http://a/g"),
            ("/../g", "http://a/g"),
            ("g.", "http://a/b/c/g."),
            ("..g", "http://a/b/c/..g"),
            ("./g/.", "http://a/b/c/g/"),
            ("g/./h", "http://a/b/c/g/h"),
            ("g/../h", "http://a/b/c/h"),
            ("http:g", "http://a/b/c/g"),
            ("HTTP://A:81/x", "http://a:81/x"),
            (" \n/sp ace.png\t", "http://a/sp%20ace.png"),
            ("\\img\\x.png", "http://a/img/x.png"),
            ("https://a/x", "https://a/x"),
        ] {
            assert_eq!(resolve(&base, r).unwrap().to_string(), want, "{r:?}");
        }
        for r in [
            "data:image/png;base64,AAAA",
            "javascript:void(0)",
            "",
            "#top",
        ] {
            assert!(resolve(&base, r).is_err(), "{r:?}");
        }
    }

    #[test]
    fn finds_what_a_browser_loads() {
        let page = u("http://example.test:8080/dir/index.html");
        let html = br#"<!doctype html><html><head>
            <link rel="stylesheet" href="a.css">
            <link rel=canonical href="/canonical">
            <LINK REL="Icon" HREF="/favicon.ico">
            <script src='/js/app.js?v=1&amp;x=2'></script>
            <script>document.write("<img src='/not-markup.png'>")</script>
            <style>/* <img src="/nor-this.png"> */</style>
            </head><body>
            <!-- <img src="/commented.png"> -->
            <img src="img/1.png"><img src="img/1.png#again">
            <img src="http://other.test/x.png"><img src="https://example.test:8080/s.png">
            <img src="//example.test:8080/same.png">
            <img src=index.html>
            <a href="/not-fetched.html">link</a>
            </body></html>"#;
        let found = sub_resources(html, &page);
        let got: Vec<String> = found.fetch.iter().map(|u| u.to_string()).collect();
        assert_eq!(
            got,
            [
                "http://example.test:8080/dir/a.css",
                "http://example.test:8080/favicon.ico",
                "http://example.test:8080/js/app.js?v=1&x=2",
                "http://example.test:8080/dir/img/1.png",
                "http://example.test:8080/same.png",
            ]
        );
        assert_eq!(found.skipped.len(), 4, "{:?}", found.skipped);
    }

    #[test]
    fn base_href_moves_relative_references() {
        let page = u("http://h/p/index.html");
        let html = b"<base href=\"/assets/\"><img src=\"x.png\"><base href=\"/ignored/\"><img src=\"y.png\">";
        let found = sub_resources(html, &page);
        let got: Vec<String> = found.fetch.iter().map(|u| u.to_string()).collect();
        assert_eq!(got, ["http://h/assets/x.png", "http://h/assets/y.png"]);
    }

    #[test]
    fn command_line_urls() {
        assert_eq!(
            parse_url("localhost:8080").unwrap().to_string(),
            "http://localhost:8080/"
        );
        assert_eq!(
            parse_url("http://h/x?y").unwrap().to_string(),
            "http://h/x?y"
        );
        assert_eq!(parse_url("https://h/").unwrap().to_string(), "https://h/");
        assert!(
            parse_url("ftp://h/")
                .unwrap_err()
                .contains("unsupported scheme")
        );
        assert!(parse_url("http://").is_err());
        assert!(parse_url("http://exa mple/").is_err());
        assert!(parse_url("").is_err());
    }
}
