//! Static files for `keepwire serve --root DIR`.
//!
//! What a user of nginx's `root` expects: `index.html` for directories, no
//! listings, nothing outside the root (neither `..` nor a symlink that
//! points out), `Content-Type` from the extension, HEAD, large files
//! streamed rather than read whole, and what caches, download managers and
//! media players use: a strong `ETag` and `Last-Modified` with the
//! conditional requests on them (`conditional.rs`: 304, 412, `If-Range`),
//! byte ranges (`range.rs`: 206, `multipart/byteranges` for several
//! (`body.rs`), 416, `Accept-Ranges: bytes`), and
//! precompressed `.br`/`.zst`/`.gz` siblings chosen by `Accept-Encoding`
//! (`encoding.rs`; each with its own `ETag`, and `Vary: Accept-Encoding`
//! on every answer for a file that has one), as tower-http's `ServeDir`
//! and nginx's `gzip_static` do.
//!
//! The root check is made on the path that is finally opened, after
//! `index.html` is appended and every symlink resolved: checking only the
//! directory let a symlinked `index.html` serve any file on the host. Dot
//! files and directories (`.git`, `.env`, `.htpasswd`) are not served unless
//! asked for: a document root is often a checkout, and nginx sites commonly
//! deny `location ~ /\.` for the same reason (`.well-known` excepted).
//! Both answer 404, which says nothing about what exists.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use std::fs::Metadata;

use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, ETAG,
    LAST_MODIFIED, RANGE, VARY,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use keepwire::Body;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::site::{status, with_type};
use body::FileBody;
use conditional::Verdict;
use encoding::Coding;
use range::Ranges;

mod body;
mod conditional;
mod encoding;
mod range;
mod url_path;

/// See [`chunking`].
const READ_WHOLE_MAX: u64 = 256 * 1024;
const CHUNK: usize = 64 * 1024;
const H2_CHUNK: usize = 16 * 1024;

/// Serves files under a root directory.
#[derive(Debug, Clone)]
pub struct Files {
    root: PathBuf,
    dotfiles: bool,
}

impl Files {
    /// `root` must be an existing directory; it is canonicalized once.
    /// `dotfiles`: serve names that start with `.` (otherwise 404).
    pub fn new(root: &Path, dotfiles: bool) -> std::io::Result<Self> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Files { root, dotfiles })
    }

    /// Maps a URL path to a file inside the root, or the status that
    /// answers it instead.
    fn resolve(&self, url_path: &str) -> Result<PathBuf, StatusCode> {
        let rel = url_path::relative_path(url_path)?;
        if !self.dotfiles && url_path::is_dotted(&rel) {
            return Err(StatusCode::NOT_FOUND);
        }
        let real = self.inside(&self.root.join(rel))?;
        if !real.is_dir() {
            return Ok(real);
        }
        if !url_path.ends_with('/') {
            // `/sub` -> `/sub/`, so the page's relative links resolve.
            return Err(StatusCode::MOVED_PERMANENTLY);
        }
        let index = real.join("index.html");
        if index.symlink_metadata().is_err() {
            // No listings.
            return Err(StatusCode::FORBIDDEN);
        }
        // Checked again: `index.html` may itself be a symlink out.
        let index = self.inside(&index)?;
        if !index.is_file() {
            return Err(StatusCode::FORBIDDEN);
        }
        Ok(index)
    }

    /// `path` with every symlink resolved, if that is inside the root and
    /// (unless dot files are served) names no dot file on the way there;
    /// otherwise 404.
    fn inside(&self, path: &Path) -> Result<PathBuf, StatusCode> {
        let real = path.canonicalize().map_err(|_| StatusCode::NOT_FOUND)?;
        let rel = real
            .strip_prefix(&self.root)
            .map_err(|_| StatusCode::NOT_FOUND)?;
        if !self.dotfiles && url_path::is_dotted(rel) {
            return Err(StatusCode::NOT_FOUND);
        }
        Ok(real)
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Body>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let path = match self.resolve(req.uri().path()) {
            Ok(p) => p,
            Err(StatusCode::MOVED_PERMANENTLY) => return to_directory(req.uri()),
            Err(code) => return status(code),
        };
        let Some((file, meta)) = open(&path).await else {
            return status(StatusCode::NOT_FOUND);
        };
        let mut variants = Vec::new();
        for coding in Coding::PRECOMPRESSED {
            if let Some(v) = self.sibling(&path, coding).await {
                variants.push((coding, v));
            }
        }
        let available: Vec<Coding> = variants.iter().map(|(c, _)| *c).collect();
        let accept = req
            .headers()
            .get(ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let Some(coding) = encoding::choose(accept, &available) else {
            // `identity;q=0` and no sibling it takes (nginx would send the
            // identity anyway; RFC 9110 §12.5.3 allows either).
            let mut r = status(StatusCode::NOT_ACCEPTABLE);
            r.headers_mut()
                .insert(VARY, HeaderValue::from_static("accept-encoding"));
            return r;
        };
        let (file, meta) = match variants.into_iter().find(|(c, _)| *c == coding) {
            Some((_, chosen)) => chosen,
            None => (file, meta),
        };
        let mime = mime_guess::from_path(&path).first_or_octet_stream();
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let tag = conditional::etag(&meta, coding.token());
        let validators = |r: &mut Response<Body>| {
            let h = r.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&tag) {
                h.insert(ETAG, v);
            }
            if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
                h.insert(LAST_MODIFIED, v);
            }
            if !available.is_empty() {
                h.insert(VARY, HeaderValue::from_static("accept-encoding"));
            }
        };
        let is_get = req.method() == Method::GET;
        let size = meta.len();
        let range_ok = match conditional::evaluate(req.headers(), &tag, modified, is_get) {
            Verdict::Serve { range_ok } => range_ok,
            Verdict::Stop(code) => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = code;
                validators(&mut r);
                return r;
            }
        };
        let ranges = match req.headers().get(RANGE).and_then(|v| v.to_str().ok()) {
            Some(v) if range_ok => range::parse(v, size),
            _ => Ranges::Whole,
        };
        let (start, len) = match ranges {
            Ranges::Whole => (0, size),
            Ranges::One { start, end } => (start, end - start + 1),
            // The parts are of the encoded bytes; a multipart body with a
            // Content-Encoding would say the whole multipart is encoded.
            Ranges::Many(_) if coding != Coding::Identity => (0, size),
            Ranges::Many(spans) => {
                let (_, chunk) = chunking(req.version());
                let (body, boundary) =
                    FileBody::multipart(file.into_std().await, &spans, size, mime.as_ref(), chunk);
                let len = body.len();
                let body = Body::wrap(body);
                let mut r = with_type(body, &format!("multipart/byteranges; boundary={boundary}"));
                validators(&mut r);
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                let h = r.headers_mut();
                h.insert(CONTENT_LENGTH, len.into());
                h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                return r;
            }
            Ranges::Unsatisfiable => {
                let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
                let h = r.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    h.insert(CONTENT_RANGE, v);
                }
                h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                return r;
            }
        };
        let body = if is_get {
            match read_body(file, start, len, req.version()).await {
                Ok(b) => b,
                Err(_) => return status(StatusCode::INTERNAL_SERVER_ERROR),
            }
        } else {
            Body::empty()
        };
        let mut r = with_type(body, mime.as_ref());
        validators(&mut r);
        let h = r.headers_mut();
        h.insert(CONTENT_LENGTH, len.into());
        h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(token) = coding.token() {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static(token));
        }
        if let Ranges::One { end, .. } = ranges
            && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}"))
        {
            h.insert(CONTENT_RANGE, v);
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        r
    }

    /// `path.br`, `path.zst` or `path.gz`, opened, if it is a regular file
    /// that the same rules as `path` allow (inside the root, no dot names).
    async fn sibling(&self, path: &Path, coding: Coding) -> Option<(tokio::fs::File, Metadata)> {
        let mut name = path.as_os_str().to_owned();
        name.push(".");
        name.push(coding.extension()?);
        let name = PathBuf::from(name);
        // One lstat for the common case of no sibling, before the
        // component-by-component resolution.
        name.symlink_metadata().ok()?;
        let real = self.inside(&name).ok()?;
        let (file, meta) = open(&real).await?;
        meta.is_file().then_some((file, meta))
    }
}

/// Opens a canonical path for reading. A symlink found at its end now was
/// put there after the check, so it is not followed.
/// A directory named without its `/`: 301 to the name with it, the query
/// kept, as nginx and tower-http's `ServeDir` answer. Leading slashes are
/// merged (nginx's `merge_slashes`): `//host` would be another site.
fn to_directory(uri: &http::Uri) -> Response<Body> {
    let mut to = format!("/{}/", uri.path().trim_start_matches('/'));
    if let Some(q) = uri.query() {
        to = format!("{to}?{q}");
    }
    let mut r = status(StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(&to) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

async fn open(path: &Path) -> Option<(tokio::fs::File, Metadata)> {
    let mut open = tokio::fs::OpenOptions::new();
    open.read(true);
    #[cfg(unix)]
    open.custom_flags(libc::O_NOFOLLOW);
    let file = open.open(path).await.ok()?;
    let meta = file.metadata().await.ok()?;
    Some((file, meta))
}

/// `len` bytes of `file` from `start`: read whole when small, else
/// streamed as the connection takes them.
async fn read_body(
    mut file: tokio::fs::File,
    start: u64,
    len: u64,
    version: http::Version,
) -> std::io::Result<Body> {
    let (whole_max, chunk) = chunking(version);
    if len > whole_max {
        let file = file.into_std().await;
        return Ok(Body::wrap(FileBody::span(file, start, len, chunk)));
    }
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await?;
    }
    let mut buf = Vec::with_capacity(len as usize);
    (&mut file).take(len).read_to_end(&mut buf).await?;
    if buf.len() as u64 != len {
        // The file shrank since it was opened: fail rather than send a
        // short body under the announced length (R8.2).
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the file is shorter than when it was opened",
        ));
    }
    Ok(Body::from(buf))
}

/// Files up to the first size are read whole; larger ones stream in
/// chunks of the second. Over HTTP/2 a file is read one DATA frame's worth
/// at a time, and only as the client's window takes it: 128 streams that
/// get no window then hold 2 MiB, not 128 whole files (R10.4).
fn chunking(version: http::Version) -> (u64, usize) {
    if version == http::Version::HTTP_2 {
        (H2_CHUNK as u64, H2_CHUNK)
    } else {
        (READ_WHOLE_MAX, CHUNK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_refuses_escapes_and_listings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "a").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::create_dir(dir.path().join("site")).unwrap();
        std::fs::write(dir.path().join("site/index.html"), "i").unwrap();
        let files = Files::new(dir.path(), false).unwrap();
        assert!(files.resolve("/a.txt").unwrap().ends_with("a.txt"));
        assert!(
            files
                .resolve("/site/")
                .unwrap()
                .ends_with("site/index.html")
        );
        assert_eq!(files.resolve("/sub/"), Err(StatusCode::FORBIDDEN));
        assert_eq!(
            files.resolve("/../etc/passwd"),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            files.resolve("/%2e%2e/etc/passwd"),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            files.resolve("/sub/%2e%2e/%2e%2e/x"),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(files.resolve("/missing"), Err(StatusCode::NOT_FOUND));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc", dir.path().join("out")).unwrap();
            assert_eq!(files.resolve("/out/hostname"), Err(StatusCode::NOT_FOUND));
        }
    }

    /// A root with a secret beside it, and the ways to point at it.
    #[cfg(unix)]
    fn escape_fixture() -> (tempfile::TempDir, Files) {
        use std::os::unix::fs::symlink;
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(outer.path().join("secret.html"), "secret").unwrap();
        std::fs::create_dir(root.join("trap")).unwrap();
        symlink(
            outer.path().join("secret.html"),
            root.join("trap/index.html"),
        )
        .unwrap();
        symlink(outer.path().join("secret.html"), root.join("link.html")).unwrap();
        std::fs::create_dir(root.join("ok")).unwrap();
        std::fs::write(root.join("ok/real.html"), "real").unwrap();
        symlink(root.join("ok/real.html"), root.join("ok/index.html")).unwrap();
        std::fs::create_dir(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/config"), "[core]").unwrap();
        std::fs::write(root.join(".env"), "KEY=1").unwrap();
        symlink(root.join(".env"), root.join("env.txt")).unwrap();
        std::fs::create_dir(root.join(".well-known")).unwrap();
        std::fs::write(root.join(".well-known/security.txt"), "Contact: x").unwrap();
        std::fs::write(root.join(".well-known/.hidden"), "no").unwrap();
        let files = Files::new(&root, false).unwrap();
        (outer, files)
    }

    #[cfg(unix)]
    #[test]
    fn resolve_checks_the_final_path_after_index_html() {
        let (_outer, files) = escape_fixture();
        assert_eq!(files.resolve("/trap/"), Err(StatusCode::NOT_FOUND));
        // A directory inside the root: to `/trap/` first, as nginx does.
        assert_eq!(files.resolve("/trap"), Err(StatusCode::MOVED_PERMANENTLY));
        assert_eq!(
            files.resolve("/trap/index.html"),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(files.resolve("/link.html"), Err(StatusCode::NOT_FOUND));
        // A symlinked index.html that stays inside is fine.
        assert!(files.resolve("/ok/").unwrap().ends_with("ok/real.html"));
    }

    #[cfg(unix)]
    #[test]
    fn dot_files_are_not_found_unless_asked_for() {
        let (_outer, files) = escape_fixture();
        for p in [
            "/.env",
            "/.git/config",
            "/.git/",
            "/ok/../.env",
            "/%2eenv",
            "/env.txt",
        ] {
            assert!(files.resolve(p).is_err(), "{p}");
        }
        assert_eq!(files.resolve("/.env"), Err(StatusCode::NOT_FOUND));
        assert_eq!(files.resolve("/%2egit/config"), Err(StatusCode::NOT_FOUND));
        assert_eq!(files.resolve("/env.txt"), Err(StatusCode::NOT_FOUND));
        assert!(
            files
                .resolve("/.well-known/security.txt")
                .unwrap()
                .ends_with(".well-known/security.txt")
        );
        assert_eq!(
            files.resolve("/.well-known/.hidden"),
            Err(StatusCode::NOT_FOUND)
        );
        let open = Files {
            dotfiles: true,
            ..files
        };
        assert!(open.resolve("/.env").unwrap().ends_with(".env"));
        assert!(
            open.resolve("/.git/config")
                .unwrap()
                .ends_with(".git/config")
        );
        assert!(open.resolve("/env.txt").unwrap().ends_with(".env"));
        // Still nothing outside the root.
        assert_eq!(open.resolve("/trap/"), Err(StatusCode::NOT_FOUND));
    }
}
