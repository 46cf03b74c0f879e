//! Numbers written into heads and chunk lines without allocating.
//!
//! A leaf module: the encoder and `Keep-Alive` parameters (hop.rs) both
//! write digits, and neither should import the other for it.

use bytes::{BufMut, BytesMut};

/// Appends the decimal digits of `n` without allocating.
pub(crate) fn put_decimal(n: u64, out: &mut BytesMut) {
    out.put_slice(itoa_buf(n).as_slice());
}

/// Decimal digits of `n` on the stack, written in place (no copy).
pub(crate) fn itoa_buf(mut n: u64) -> InlineBytes {
    let mut buf = [0u8; 24];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    InlineBytes {
        buf,
        start: i as u8,
        end: buf.len() as u8,
    }
}

/// Up to 24 bytes on the stack: a chunk-size line or a decimal number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InlineBytes {
    buf: [u8; 24],
    pub(crate) start: u8,
    end: u8,
}

impl InlineBytes {
    /// No bytes.
    pub(crate) const EMPTY: InlineBytes = InlineBytes {
        buf: [0; 24],
        start: 0,
        end: 0,
    };

    pub(crate) fn from_slice(s: &[u8]) -> Self {
        let mut buf = [0u8; 24];
        buf[..s.len()].copy_from_slice(s);
        InlineBytes {
            buf,
            start: 0,
            end: s.len() as u8,
        }
    }

    pub(crate) fn chunk_size_line(n: usize) -> Self {
        let line = format_hex_line(n);
        InlineBytes::from_slice(&line.0[..line.1])
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf[self.start as usize..self.end as usize]
    }
}

pub(crate) fn format_hex_line(mut n: usize) -> ([u8; 24], usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let mut line = [0u8; 24];
    let digits = tmp.len() - i;
    line[..digits].copy_from_slice(&tmp[i..]);
    line[digits..digits + 2].copy_from_slice(b"\r\n");
    (line, digits + 2)
}
