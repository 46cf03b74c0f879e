//! Decimal numbers for heads, without allocating or `fmt`: a response head
//! carries one or two (`Content-Length`, `Keep-Alive`), and both the
//! encoder and `hop`'s `Keep-Alive` writer need them, so the digits live
//! below both.

/// The decimal digits of a `u64`, on the stack.
pub(crate) struct Decimal {
    buf: [u8; 20],
    start: u8,
}

impl Decimal {
    pub(crate) fn of(mut n: u64) -> Self {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal {
            buf,
            start: i as u8,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start as usize..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_match_display() {
        for n in [0, 7, 10, 99, 100, 1000, 4_294_967_296, u64::MAX] {
            assert_eq!(Decimal::of(n).as_bytes(), n.to_string().as_bytes());
        }
    }
}
