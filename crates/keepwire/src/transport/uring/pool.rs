//! The receive pool: buffers the kernel picks from only when bytes arrive
//! (a provided-buffer ring), so that a connection waiting for input pins
//! no buffer of its own.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// Buffers in the receive pool, and their size. A receive takes one only
/// when bytes arrive and gives it back as soon as they are copied out, so
/// the pool bounds receives completed at once, not connections.
pub(super) const POOL_BUFS: u16 = 256;
pub(super) const POOL_BUF_SIZE: usize = 4096;
/// The provided-buffer group id of the pool.
pub(super) const GROUP: u16 = 0;

/// The receive pool: buffers and the ring through which the kernel is
/// given them.
pub(super) struct Pool {
    /// `POOL_BUFS` entries, page-aligned (the kernel's requirement).
    entries: *mut BufRingEntry,
    bufs: Box<[u8]>,
    tail: u16,
}

// SAFETY: the pointer is to memory the pool owns; it is only used under
// the ring's lock.
unsafe impl Send for Pool {}

impl Pool {
    fn layout() -> std::alloc::Layout {
        let size = POOL_BUFS as usize * std::mem::size_of::<BufRingEntry>();
        std::alloc::Layout::from_size_align(size, 4096).expect("a valid layout")
    }

    pub(super) fn new(uring: &IoUring) -> io::Result<Pool> {
        // SAFETY: the layout has a non-zero size.
        let entries = unsafe { std::alloc::alloc_zeroed(Self::layout()) }.cast::<BufRingEntry>();
        if entries.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let mut pool = Pool {
            entries,
            bufs: vec![0u8; POOL_BUFS as usize * POOL_BUF_SIZE].into_boxed_slice(),
            tail: 0,
        };
        // SAFETY: the entries live until the ring is gone (see `State`'s
        // drop: the memory is leaked if operations may still use it).
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(entries as u64, POOL_BUFS, GROUP, 0)?;
        }
        for bid in 0..POOL_BUFS {
            pool.give_back(bid);
        }
        Ok(pool)
    }

    pub(super) fn buf(&self, bid: u16) -> &[u8] {
        let at = bid as usize * POOL_BUF_SIZE;
        &self.bufs[at..at + POOL_BUF_SIZE]
    }

    /// Hands buffer `bid` to the kernel again.
    pub(super) fn give_back(&mut self, bid: u16) {
        let at = bid as usize * POOL_BUF_SIZE;
        let addr = self.bufs[at..].as_ptr() as u64;
        // SAFETY: the index is masked into the entries; the tail is the
        // kernel-shared u16 that publishes the entry (written last, with
        // release ordering).
        unsafe {
            let e = &mut *self.entries.add((self.tail & (POOL_BUFS - 1)) as usize);
            e.set_addr(addr);
            e.set_len(POOL_BUF_SIZE as u32);
            e.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let tail = BufRingEntry::tail(self.entries).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Leaves the buffers allocated for good: the kernel may still use them.
    pub(super) fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.bufs));
    }

    /// Frees the entries (the buffers go with the pool): nothing in flight
    /// may use them any more.
    pub(super) fn free(&mut self) {
        if !self.entries.is_null() {
            // SAFETY: allocated in `Pool::new` with this layout, once.
            unsafe { std::alloc::dealloc(self.entries.cast(), Self::layout()) };
            self.entries = std::ptr::null_mut();
        }
    }
}
