//! Spare I/O buffers, kept per thread between one connection's busy
//! moments and the next's.
//!
//! Why: an idle keep-alive connection frees its buffers at once, so that it
//! costs next to nothing (R5.6). On a busy server "idle" happens between
//! every two requests of a connection, and each request then paid for a
//! fresh read buffer and a fresh output buffer (malloc, free and the
//! first-touch of the memory: about a tenth of the user-space instructions
//! of a keep-alive request). Here the freed buffers wait, cleared, for the
//! next connection on the same thread that needs one. The stash is small
//! and bounded in bytes, so idle memory stays what R5.6 wants: many idle
//! connections share at most [`STASH_BYTES`] per thread, rather than each
//! keeping its own buffers.

use std::cell::RefCell;

use bytes::BytesMut;

/// At most this many bytes of spare buffers per thread.
pub(crate) const STASH_BYTES: usize = 512 * 1024;
/// Larger buffers (a big body's output) go back to the allocator.
const LARGEST: usize = 32 * 1024;

thread_local! {
    static STASH: RefCell<Stash> = const { RefCell::new(Stash { bufs: Vec::new(), bytes: 0 }) };
}

struct Stash {
    bufs: Vec<BytesMut>,
    bytes: usize,
}

/// A buffer with room for at least `min` bytes: a spare one if the thread
/// has one, else a new one.
pub(crate) fn take(min: usize) -> BytesMut {
    let spare = STASH.with(|s| {
        let mut s = s.borrow_mut();
        let buf = s.bufs.pop()?;
        s.bytes -= buf.capacity();
        Some(buf)
    });
    match spare {
        Some(mut buf) => {
            buf.reserve(min);
            buf
        }
        None => BytesMut::with_capacity(min),
    }
}

/// Gives a buffer back for another connection; its contents are
/// discarded. Buffers too large or beyond the stash's bound are freed. (A
/// buffer may still share its allocation with bytes handed out earlier, a
/// request body a handler keeps: its free part never overlaps them, so
/// reusing it is safe, and the bound limits what the stash keeps alive.)
pub(crate) fn give(mut buf: BytesMut) {
    buf.clear();
    let cap = buf.capacity();
    if cap == 0 || cap > LARGEST {
        return;
    }
    STASH.with(|s| {
        let mut s = s.borrow_mut();
        if s.bytes + cap <= STASH_BYTES {
            s.bytes += cap;
            s.bufs.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_empty() {
        let mut buf = BytesMut::with_capacity(4096);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let ptr = buf.as_ptr();
        give(buf);
        let again = take(1024);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr, "the same allocation comes back");
        assert!(again.capacity() >= 4096);
    }

    #[test]
    fn large_and_excess_buffers_are_freed_shared_ones_reused_safely() {
        std::thread::spawn(|| {
            // Shared with bytes handed out: reused without touching them.
            let mut shared = BytesMut::with_capacity(4096);
            shared.extend_from_slice(b"body");
            let held = shared.split().freeze();
            give(shared);
            let mut again = take(16);
            again.extend_from_slice(b"next request");
            assert_eq!(&held[..], b"body");
            drop((held, again));
            // Too large: freed.
            give(BytesMut::with_capacity(LARGEST + 1));
            assert_eq!(STASH.with(|s| s.borrow().bufs.len()), 0);
            // Bounded in bytes.
            for _ in 0..(STASH_BYTES / 4096 + 10) {
                give(BytesMut::with_capacity(4096));
            }
            let (n, bytes) = STASH.with(|s| (s.borrow().bufs.len(), s.borrow().bytes));
            assert!(bytes <= STASH_BYTES, "{bytes} bytes stashed");
            assert_eq!(n, STASH_BYTES / 4096);
            // Taking them all leaves the stash empty and its count right.
            for _ in 0..n {
                take(1);
            }
            assert_eq!(STASH.with(|s| s.borrow().bytes), 0);
        })
        .join()
        .unwrap();
    }
}
