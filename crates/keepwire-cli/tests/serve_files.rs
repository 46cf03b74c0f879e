//! `keepwire serve --root` beside nginx serving the same directory, both
//! asked the same questions by curl: byte ranges (206, 416), validators
//! (`ETag`, `If-None-Match`, `If-Match`, `If-Range`) and precompressed
//! siblings (`--compressed`). Where the two may differ by design, the test
//! says so and checks keepwire alone.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

/// What curl saw: status, headers (names lowercased; the last of each),
/// and the body as written (decoded if `--compressed`).
#[derive(Debug)]
struct Seen {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// `curl -s URL ARGS`, headers and body kept apart.
fn curl(addr: SocketAddr, path: &str, args: &[&str]) -> Seen {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(args)
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl is installed (bash scripts/test installs it)");
    assert!(out.status.success(), "curl {args:?} {path}: {out:?}");
    let head = std::fs::read_to_string(head).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Seen {
        status,
        headers,
        body: std::fs::read(body).unwrap_or_default(),
    }
}

/// 3,000 bytes of text, no two lines alike.
fn text() -> Vec<u8> {
    (0..200)
        .map(|i| format!("line {i:04} of text\n"))
        .collect::<String>()
        .into_bytes()
        .into_iter()
        .take(3000)
        .collect()
}

/// A brotli stream holding `data` as one uncompressed meta-block (RFC 7932
/// §9.2; no encoder on the test machine): window bits, a meta-block header
/// with MLEN-1 in four nibbles and ISUNCOMPRESSED, the bytes, then an empty
/// last meta-block.
fn brotli_stored(data: &[u8]) -> Vec<u8> {
    assert!(!data.is_empty() && data.len() <= 1 << 16);
    let bits = (((data.len() - 1) as u32) << 4) | (1 << 20);
    let mut out = bits.to_le_bytes()[..3].to_vec();
    out.extend_from_slice(data);
    out.push(0b11);
    out
}

/// A zstd frame holding `data` as one raw block (RFC 8878 §3.1.1; no
/// encoder is assumed): magic, a single-segment header with a 4-byte
/// content size, then one last raw block.
fn zstd_stored(data: &[u8]) -> Vec<u8> {
    assert!(data.len() < 128 * 1024);
    let mut out = 0xFD2F_B528u32.to_le_bytes().to_vec();
    out.push(0b1010_0000); // FCS field 4 bytes, single segment
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    let block = 1 | ((data.len() as u32) << 3); // last, raw
    out.extend_from_slice(&block.to_le_bytes()[..3]);
    out.extend_from_slice(data);
    out
}

/// `www/page.txt` with `.gz` and `.br` siblings, `www/both.txt` with `.gz`
/// and `.zst`, and `www/plain.txt` with none.
fn write_site(www: &Path) -> Vec<u8> {
    let body = text();
    std::fs::write(www.join("page.txt"), &body).unwrap();
    std::fs::write(www.join("plain.txt"), &body).unwrap();
    let gz = Command::new("gzip")
        .args(["-n", "-c"])
        .arg(www.join("page.txt"))
        .output()
        .expect("gzip runs");
    assert!(gz.status.success());
    std::fs::write(www.join("page.txt.gz"), gz.stdout).unwrap();
    std::fs::write(www.join("page.txt.br"), brotli_stored(&body)).unwrap();
    std::fs::write(www.join("both.txt"), &body).unwrap();
    std::fs::copy(www.join("page.txt.gz"), www.join("both.txt.gz")).unwrap();
    std::fs::write(www.join("both.txt.zst"), zstd_stored(&body)).unwrap();
    body
}

/// nginx (`gzip_static on`) and `keepwire serve` on the same directory.
fn both() -> Option<(common::Nginx, common::Running, Vec<u8>)> {
    let nginx = common::nginx("listen LISTEN; root DIR/www; gzip_static on; gzip_vary on;")?;
    let www = nginx.dir.join("www");
    let body = write_site(&www);
    let serve = common::serve(&["--root", www.to_str().unwrap()]);
    Some((nginx, serve, body))
}

#[test]
fn ranges_agree_with_nginx() {
    let Some((nginx, serve, body)) = both() else {
        return;
    };
    let len = body.len();
    // (range, status, Content-Range, the bytes served)
    type Case<'a> = (&'a str, u16, Option<String>, Option<(usize, usize)>);
    let cases: &[Case] = &[
        ("0-9", 206, Some(format!("bytes 0-9/{len}")), Some((0, 10))),
        (
            "100-",
            206,
            Some(format!("bytes 100-{}/{len}", len - 1)),
            Some((100, len)),
        ),
        (
            "-5",
            206,
            Some(format!("bytes {}-{}/{len}", len - 5, len - 1)),
            Some((len - 5, len)),
        ),
        (
            "0-99999",
            206,
            Some(format!("bytes 0-{}/{len}", len - 1)),
            Some((0, len)),
        ),
        (
            &*format!("{len}-"),
            416,
            Some(format!("bytes */{len}")),
            None,
        ),
        ("5-1", 416, Some(format!("bytes */{len}")), None),
        ("x-1", 416, Some(format!("bytes */{len}")), None),
    ];
    for (range, status, content_range, slice) in cases {
        for (who, addr) in [("nginx", nginx.addr), ("keepwire", serve.addr)] {
            let r = curl(addr, "/plain.txt", &["-r", range]);
            assert_eq!(r.status, *status, "{who} -r {range}: {r:?}");
            assert_eq!(
                r.header("content-range"),
                content_range.as_deref(),
                "{who} -r {range}"
            );
            if let Some((a, b)) = slice {
                assert_eq!(r.body, body[*a..*b], "{who} -r {range}");
                assert_eq!(r.header("content-length"), Some(&*(b - a).to_string()));
            }
        }
    }
    let r = curl(serve.addr, "/plain.txt", &[]);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    // Ranges apart: multipart/byteranges from both, the same parts.
    let spec = format!("0-1,10-11,{}-", len - 3);
    let want = vec![
        (format!("bytes 0-1/{len}"), body[0..2].to_vec()),
        (format!("bytes 10-11/{len}"), body[10..12].to_vec()),
        (
            format!("bytes {}-{}/{len}", len - 3, len - 1),
            body[len - 3..].to_vec(),
        ),
    ];
    for (who, addr) in [("nginx", nginx.addr), ("keepwire", serve.addr)] {
        let r = curl(addr, "/plain.txt", &["-r", &spec]);
        assert_eq!(r.status, 206, "{who}");
        assert_eq!(r.header("content-length"), Some(&*r.body.len().to_string()));
        assert_eq!(byteranges(&r), want, "{who}");
    }
    // Overlapping ones merge (nginx sends them as they come, overlaps too).
    let r = curl(serve.addr, "/plain.txt", &["-r", "0-9,5-19"]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, body[..20]);
    // Abuse (CVE-2011-3192's shape): the same bytes asked for many times
    // are sent once; more than 64 ranges are ignored.
    let r = curl(serve.addr, "/plain.txt", &["-r", &vec!["0-"; 60].join(",")]);
    assert_eq!((r.status, r.body.len()), (206, len));
    let many: Vec<String> = (0..65)
        .map(|i| format!("{}-{}", i * 4, i * 4 + 1))
        .collect();
    let r = curl(serve.addr, "/plain.txt", &["-r", &many.join(",")]);
    assert_eq!((r.status, r.body.len()), (200, len));
    let r = curl(serve.addr, "/plain.txt", &["-r", &many[..64].join(",")]);
    assert_eq!(byteranges(&r).len(), 64);
    // An empty file: the whole of it, from both.
    std::fs::write(nginx.dir.join("www/empty.txt"), "").unwrap();
    for addr in [nginx.addr, serve.addr] {
        assert_eq!(curl(addr, "/empty.txt", &["-r", "0-"]).status, 200);
    }
    // HEAD ignores Range (§14.2: range handling is defined for GET only;
    // nginx answers HEAD with 206 headers).
    let r = curl(serve.addr, "/plain.txt", &["-I", "-r", "0-9"]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(&*len.to_string()));
}

/// The parts of a `multipart/byteranges` answer: (Content-Range, bytes).
fn byteranges(r: &Seen) -> Vec<(String, Vec<u8>)> {
    let ct = r.header("content-type").expect("a content type");
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("not multipart: {ct}"));
    let delimiter = format!("\r\n--{boundary}");
    let body = &r.body[..];
    let find = |from: usize| {
        body[from..]
            .windows(delimiter.len())
            .position(|w| w == delimiter.as_bytes())
            .map(|i| i + from)
    };
    let mut parts = Vec::new();
    let mut at = find(0).expect("a first delimiter") + delimiter.len();
    while !body[at..].starts_with(b"--") {
        let head_end = at
            + body[at..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap();
        let head = String::from_utf8_lossy(&body[at..head_end]).to_ascii_lowercase();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("content-range: "))
            .expect("a Content-Range per part")
            .to_string();
        let next = find(head_end + 4).expect("a closing delimiter");
        parts.push((range, body[head_end + 4..next].to_vec()));
        at = next + delimiter.len();
    }
    parts
}

#[test]
fn validators_agree_with_nginx() {
    let Some((nginx, serve, body)) = both() else {
        return;
    };
    for (who, addr) in [("nginx", nginx.addr), ("keepwire", serve.addr)] {
        let first = curl(addr, "/plain.txt", &[]);
        assert_eq!(first.body, body, "{who}");
        let tag = first.header("etag").expect("an ETag").to_string();
        assert!(tag.starts_with('"'), "{who}: a strong tag, {tag}");
        let lm = first.header("last-modified").expect("Last-Modified");
        let inm = format!("If-None-Match: {tag}");
        let r = curl(addr, "/plain.txt", &["-H", &inm]);
        assert_eq!((r.status, r.body.len()), (304, 0), "{who}");
        assert_eq!(r.header("etag"), Some(&*tag), "{who}");
        let r = curl(addr, "/plain.txt", &["-H", "If-None-Match: \"nope\""]);
        assert_eq!(r.status, 200, "{who}");
        let r = curl(
            addr,
            "/plain.txt",
            &["-H", &format!("If-Modified-Since: {lm}")],
        );
        assert_eq!(r.status, 304, "{who}");
        let r = curl(addr, "/plain.txt", &["-H", "If-Match: \"nope\""]);
        assert_eq!(r.status, 412, "{who}");
        let r = curl(addr, "/plain.txt", &["-H", &format!("If-Match: {tag}")]);
        assert_eq!(r.status, 200, "{who}");
        // If-Range: the current tag gives the range, an old one the file.
        let r = curl(
            addr,
            "/plain.txt",
            &["-r", "0-9", "-H", &format!("If-Range: {tag}")],
        );
        assert_eq!((r.status, r.body.len()), (206, 10), "{who}");
        let r = curl(
            addr,
            "/plain.txt",
            &["-r", "0-9", "-H", "If-Range: \"old\""],
        );
        assert_eq!((r.status, r.body.len()), (200, body.len()), "{who}");
        let r = curl(
            addr,
            "/plain.txt",
            &["-r", "0-9", "-H", &format!("If-Range: {lm}")],
        );
        assert_eq!(r.status, 206, "{who}");
    }
}

#[test]
fn strong_etag_changes_with_a_same_length_rewrite_in_the_same_second() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.txt");
    std::fs::write(&file, "aaaa").unwrap();
    let serve = common::serve(&["--root", dir.path().to_str().unwrap()]);
    let first = curl(serve.addr, "/f.txt", &[]);
    let tag = first.header("etag").unwrap().to_string();
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::fs::write(&file, "bbbb").unwrap();
    // Even with the old mtime put back (`cp -p`, `touch -d`).
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let r = curl(
        serve.addr,
        "/f.txt",
        &["-H", &format!("If-None-Match: {tag}")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"bbbb");
    assert_ne!(r.header("etag"), Some(&*tag));
    let r = curl(
        serve.addr,
        "/f.txt",
        &["-r", "0-1", "-H", &format!("If-Range: {tag}")],
    );
    assert_eq!(
        (r.status, &r.body[..]),
        (200, &b"bbbb"[..]),
        "a stale If-Range gets it all"
    );
}

#[test]
fn precompressed_siblings_by_accept_encoding() {
    let Some((nginx, serve, body)) = both() else {
        return;
    };
    // curl --compressed offers gzip and br: nginx has only gzip_static,
    // keepwire prefers the smaller-by-convention br. Both decode to the file.
    for (who, addr, coding) in [
        ("nginx", nginx.addr, "gzip"),
        ("keepwire", serve.addr, "br"),
    ] {
        let r = curl(addr, "/page.txt", &["--compressed"]);
        assert_eq!(r.status, 200, "{who}");
        assert_eq!(r.header("content-encoding"), Some(coding), "{who}");
        assert!(
            r.header("vary")
                .is_some_and(|v| v.eq_ignore_ascii_case("accept-encoding")),
            "{who}: {r:?}"
        );
        assert_eq!(r.body, body, "{who}: decoded");
        let r = curl(addr, "/page.txt", &["-H", "Accept-Encoding: gzip"]);
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{who}");
        let r = curl(addr, "/page.txt", &[]);
        assert_eq!(
            (r.header("content-encoding"), &r.body),
            (None, &body),
            "{who}"
        );
    }
    let tag = |ae: &str| {
        let r = curl(
            serve.addr,
            "/page.txt",
            &["-H", &format!("Accept-Encoding: {ae}")],
        );
        r.header("etag").unwrap().to_string()
    };
    let (br, gz, id) = (tag("br"), tag("gzip"), tag("identity"));
    assert!(br != gz && gz != id && br != id, "{br} {gz} {id}");
    // q-values: gzip preferred; identity refused with nothing else → 406.
    let r = curl(
        serve.addr,
        "/page.txt",
        &["-H", "Accept-Encoding: br;q=0.5, gzip;q=0.9"],
    );
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let r = curl(
        serve.addr,
        "/page.txt",
        &["-H", "Accept-Encoding: br;q=0, gzip;q=0"],
    );
    assert_eq!(r.header("content-encoding"), None);
    let r = curl(
        serve.addr,
        "/plain.txt",
        &["-H", "Accept-Encoding: identity;q=0"],
    );
    assert_eq!(r.status, 406);
    // A conditional on the gzip tag is answered for gzip only.
    let r = curl(
        serve.addr,
        "/page.txt",
        &[
            "-H",
            "Accept-Encoding: gzip",
            "-H",
            &format!("If-None-Match: {gz}"),
        ],
    );
    assert_eq!(r.status, 304);
    let r = curl(
        serve.addr,
        "/page.txt",
        &[
            "-H",
            "Accept-Encoding: br",
            "-H",
            &format!("If-None-Match: {gz}"),
        ],
    );
    assert_eq!(r.status, 200);
    // Several ranges of an encoded file: the whole of it (a multipart
    // body with a Content-Encoding would say the multipart is encoded).
    let r = curl(
        serve.addr,
        "/page.txt",
        &["-H", "Accept-Encoding: gzip", "-r", "0-1,9-10"],
    );
    assert_eq!(
        (r.status, r.header("content-encoding")),
        (200, Some("gzip"))
    );
    let r = curl(
        serve.addr,
        "/page.txt",
        &["-H", "Accept-Encoding: gzip", "-r", "0-1"],
    );
    assert_eq!(
        (r.status, r.body.len()),
        (206, 2),
        "one range of the gzip bytes"
    );
    // zstd where there is no br: curl decodes it.
    let r = curl(serve.addr, "/both.txt", &["--compressed"]);
    assert_eq!(r.header("content-encoding"), Some("zstd"), "{r:?}");
    assert_eq!(r.body, body);
    let r = curl(
        serve.addr,
        "/both.txt",
        &["-H", "Accept-Encoding: gzip, zstd;q=0.5"],
    );
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    // No sibling, no Vary.
    assert_eq!(curl(serve.addr, "/plain.txt", &[]).header("vary"), None);
}

#[test]
fn siblings_follow_the_root_rules() {
    use std::os::unix::fs::symlink;
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("a.txt"), "plain").unwrap();
    std::fs::write(outer.path().join("secret.gz"), "secret").unwrap();
    symlink(outer.path().join("secret.gz"), root.join("a.txt.gz")).unwrap();
    let serve = common::serve(&["--root", root.to_str().unwrap()]);
    let r = curl(serve.addr, "/a.txt", &["-H", "Accept-Encoding: gzip"]);
    assert_eq!((r.status, r.header("content-encoding")), (200, None));
    assert_eq!(r.body, b"plain", "a sibling that points out is not used");
}

#[test]
fn a_range_of_a_large_file_streams_from_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    let serve = common::serve(&["--root", dir.path().to_str().unwrap()]);
    let r = curl(serve.addr, "/big.bin", &["-r", "100000-650000"]);
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some("bytes 100000-650000/700000")
    );
    assert_eq!(r.body, big[100_000..=650_000]);
    let r = curl(
        serve.addr,
        "/big.bin",
        &["--http2-prior-knowledge", "-r", "-300000"],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, big[400_000..]);
    // Several large ranges over HTTP/2, streamed part by part.
    let r = curl(
        serve.addr,
        "/big.bin",
        &["--http2-prior-knowledge", "-r", "0-299999,500000-"],
    );
    assert_eq!(r.status, 206);
    let parts = byteranges(&r);
    assert_eq!(parts.len(), 2);
    assert_eq!(
        parts[0],
        ("bytes 0-299999/700000".into(), big[..300_000].to_vec())
    );
    assert_eq!(
        parts[1],
        ("bytes 500000-699999/700000".into(), big[500_000..].to_vec())
    );
}

/// `/sub` names a directory: 301 to `/sub/` with the query kept, as nginx
/// answers, so the index page's relative links resolve under `/sub/`.
/// nginx's `Location` is absolute (`absolute_redirect on`), keepwire's a
/// path (as tower-http's `ServeDir`): both end the same.
#[test]
fn a_directory_without_its_slash_redirects_as_nginx_does() {
    let Some((nginx, serve, _)) = both() else {
        return;
    };
    let www = nginx.dir.join("www");
    std::fs::create_dir(www.join("sub")).unwrap();
    std::fs::write(www.join("sub/index.html"), "<a href=x.html>x</a>").unwrap();
    for (who, addr) in [("nginx", nginx.addr), ("keepwire", serve.addr)] {
        let r = curl(addr, "/sub?a=1", &[]);
        assert_eq!(r.status, 301, "{who}: {r:?}");
        let to = r.header("location").unwrap_or_default();
        assert!(to.ends_with("/sub/?a=1"), "{who}: {to}");
        let r = curl(addr, "/sub/", &[]);
        assert_eq!((r.status, r.body.len()), (200, 20), "{who}");
    }
    // Never to another site: `//host` is merged to `/host/`.
    std::fs::create_dir(www.join("evil.example")).unwrap();
    let r = curl(serve.addr, "//evil.example", &[]);
    assert_eq!(r.header("location"), Some("/evil.example/"));
}
