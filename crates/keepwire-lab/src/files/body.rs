//! Response bodies made of a file's bytes: the whole file, one range, or
//! several ranges as `multipart/byteranges` (RFC 9110 §14.6), all as a list
//! of segments (fixed text, or a span of the file) that is read a chunk at
//! a time when the connection asks for the next: nothing is read ahead of
//! the socket or the peer's window.
//!
//! The read is a plain positional `pread(2)` on the connection's thread, as
//! nginx reads without aio: a chunk from the page cache takes microseconds,
//! and tokio's `File` would add a blocking-pool hop and a second buffer per
//! stream. A file that ends early fails the body, so the client sees a
//! truncated message, never a short success (R8.2).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// A part of a body.
#[derive(Debug)]
enum Segment {
    Text(Bytes),
    File { at: u64, left: u64 },
}

/// A body of segments over one open file.
pub struct FileBody {
    file: std::fs::File,
    segments: VecDeque<Segment>,
    left: u64,
    chunk: usize,
}

impl FileBody {
    /// `len` bytes of `file` from `start`.
    pub fn span(file: std::fs::File, start: u64, len: u64, chunk: usize) -> Self {
        FileBody {
            file,
            segments: VecDeque::from([Segment::File {
                at: start,
                left: len,
            }]),
            left: len,
            chunk,
        }
    }

    /// The inclusive `ranges` of a file of `size` bytes as a
    /// `multipart/byteranges` body whose parts say `content_type`; with the
    /// boundary to announce in the response's `Content-Type`.
    pub fn multipart(
        file: std::fs::File,
        ranges: &[(u64, u64)],
        size: u64,
        content_type: &str,
        chunk: usize,
    ) -> (Self, String) {
        let boundary = boundary();
        let mut segments = VecDeque::new();
        for &(start, end) in ranges {
            // Each part starts on a new line, the first one too (a CRLF
            // before the first delimiter is preamble): nginx's layout.
            let head = format!(
                "\r\n--{boundary}\r\ncontent-type: {content_type}\r\n\
                 content-range: bytes {start}-{end}/{size}\r\n\r\n"
            );
            segments.push_back(Segment::Text(Bytes::from(head)));
            segments.push_back(Segment::File {
                at: start,
                left: end - start + 1,
            });
        }
        let tail = format!("\r\n--{boundary}--\r\n");
        segments.push_back(Segment::Text(Bytes::from(tail)));
        let left = segments
            .iter()
            .map(|s| match s {
                Segment::Text(t) => t.len() as u64,
                Segment::File { left, .. } => *left,
            })
            .sum();
        let body = FileBody {
            file,
            segments,
            left,
            chunk,
        };
        (body, boundary)
    }

    /// Bytes the body will yield.
    pub fn len(&self) -> u64 {
        self.left
    }
}

/// A boundary that will not occur in the file by accident: 64 random bits
/// (the standard library's per-process hash keys) in hex.
fn boundary() -> String {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    format!("keepwire-{:016x}", h.finish())
}

#[cfg(unix)]
fn read_at(file: &std::fs::File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, at)
}

#[cfg(not(unix))]
fn read_at(mut file: &std::fs::File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    use std::io::{Read, Seek};
    file.seek(std::io::SeekFrom::Start(at))?;
    file.read(buf)
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        let (at, left) = loop {
            match this.segments.pop_front() {
                None => return Poll::Ready(None),
                Some(Segment::Text(t)) => {
                    this.left -= t.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(t))));
                }
                Some(Segment::File { left: 0, .. }) => {}
                Some(Segment::File { at, left }) => break (at, left),
            }
        };
        let mut buf = vec![0u8; (this.chunk as u64).min(left) as usize];
        let n = loop {
            match read_at(&this.file, &mut buf, at) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        };
        if n == 0 {
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file is shorter than when it was opened",
            ))));
        }
        buf.truncate(n);
        this.left -= n as u64;
        if left > n as u64 {
            this.segments.push_front(Segment::File {
                at: at + n as u64,
                left: left - n as u64,
            });
        }
        Poll::Ready(Some(Ok(Frame::data(buf.into()))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(body: FileBody) -> Vec<u8> {
        use http_body_util::BodyExt;
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn spans_and_multipart_read_the_right_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789abcdefghij").unwrap();
        let open = || std::fs::File::open(&p).unwrap();
        assert_eq!(collect(FileBody::span(open(), 3, 5, 2)).await, b"34567");
        let (body, b) = FileBody::multipart(open(), &[(0, 1), (10, 12)], 20, "text/plain", 2);
        let len = body.len();
        let out = collect(body).await;
        assert_eq!(out.len() as u64, len);
        let expect = format!(
            "\r\n--{b}\r\ncontent-type: text/plain\r\ncontent-range: bytes 0-1/20\r\n\r\n01\
             \r\n--{b}\r\ncontent-type: text/plain\r\ncontent-range: bytes 10-12/20\r\n\r\nabc\
             \r\n--{b}--\r\n"
        );
        assert_eq!(String::from_utf8(out).unwrap(), expect);
    }

    #[tokio::test]
    async fn a_file_that_shrank_fails_the_body() {
        use http_body_util::BodyExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123").unwrap();
        let body = FileBody::span(std::fs::File::open(&p).unwrap(), 0, 10, 4);
        assert!(body.collect().await.is_err());
    }
}
