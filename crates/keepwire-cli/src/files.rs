//! Static files for `keepwire serve --root DIR`.
//!
//! What a user of nginx's `root` expects: `index.html` for directories, no
//! listings, nothing outside the root (neither `..` nor a symlink that
//! points out), `Content-Type` from the extension, `Last-Modified` and
//! `If-Modified-Since` → 304, HEAD, and large files streamed rather than
//! read whole.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use http::header::{ALLOW, CONTENT_LENGTH, IF_MODIFIED_SINCE, LAST_MODIFIED};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use keepwire::Body;
use tokio::io::AsyncReadExt;

use crate::site::{status, with_type};

mod url_path;

/// Files up to this size are read whole; larger ones stream in chunks.
const READ_WHOLE_MAX: u64 = 256 * 1024;
const CHUNK: usize = 64 * 1024;

/// Serves files under a root directory.
#[derive(Debug, Clone)]
pub struct Files {
    root: PathBuf,
}

impl Files {
    /// `root` must be an existing directory; it is canonicalized once.
    pub fn new(root: &Path) -> std::io::Result<Self> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Files { root })
    }

    /// Maps a URL path to a file inside the root, or the status that
    /// answers it instead.
    fn resolve(&self, url_path: &str) -> Result<PathBuf, StatusCode> {
        let path = self.root.join(url_path::relative_path(url_path)?);
        let mut real = path.canonicalize().map_err(|_| StatusCode::NOT_FOUND)?;
        if !real.starts_with(&self.root) {
            // A symlink pointing outside the root.
            return Err(StatusCode::NOT_FOUND);
        }
        if real.is_dir() {
            real.push("index.html");
            if !real.is_file() {
                // No listings.
                return Err(StatusCode::FORBIDDEN);
            }
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
            Err(code) => return status(code),
        };
        let Ok(mut file) = tokio::fs::File::open(&path).await else {
            return status(StatusCode::NOT_FOUND);
        };
        let Ok(meta) = file.metadata().await else {
            return status(StatusCode::INTERNAL_SERVER_ERROR);
        };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if not_modified_since(&req, modified) {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            set_last_modified(&mut r, modified);
            return r;
        }
        let mime = mime_guess::from_path(&path).first_or_octet_stream();
        let size = meta.len();
        let body = if req.method() == Method::HEAD {
            Body::empty()
        } else if size <= READ_WHOLE_MAX {
            let mut buf = Vec::with_capacity(size as usize);
            if file.read_to_end(&mut buf).await.is_err() {
                return status(StatusCode::INTERNAL_SERVER_ERROR);
            }
            if buf.len() as u64 != size {
                // The file changed under us; announce what we have.
                return with_type(Body::from(buf), mime.as_ref());
            }
            Body::from(buf)
        } else {
            stream_file(file, size)
        };
        let mut r = with_type(body, mime.as_ref());
        r.headers_mut().insert(CONTENT_LENGTH, size.into());
        set_last_modified(&mut r, modified);
        r
    }
}

/// Streams `size` bytes of `file`; if it ends early the body is aborted so
/// the client sees a truncated message, never a short success (R8.2).
fn stream_file(mut file: tokio::fs::File, size: u64) -> Body {
    let (tx, body) = Body::channel(2);
    tokio::spawn(async move {
        let mut left = size;
        while left > 0 {
            let mut buf = vec![0u8; CHUNK.min(left as usize)];
            match file.read(&mut buf).await {
                Ok(0) | Err(_) => return tx.abort().await,
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.send(buf).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    body
}

fn set_last_modified(r: &mut Response<Body>, modified: SystemTime) {
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
        r.headers_mut().insert(LAST_MODIFIED, v);
    }
}

/// `If-Modified-Since` at or after the file's time (second precision).
fn not_modified_since(req: &Request<Body>, modified: SystemTime) -> bool {
    let Some(since) = req
        .headers()
        .get(IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok())
    else {
        return false;
    };
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    secs(modified) <= secs(since)
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
        let files = Files::new(dir.path()).unwrap();
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
}
