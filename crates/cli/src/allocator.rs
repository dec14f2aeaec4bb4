//! The global allocator: mimalloc, with the memory of a large block handed back to the system
//! as soon as the block is freed or moved.
//!
//! Parsing a large config grows a few big buffers by doubling (the text's values, the span
//! index): each move frees the old buffer, and mimalloc keeps freed memory committed for a
//! while before returning it (its purge delay), so the freed buffers of one stage still count
//! in the peak of the next. A 1 MiB JSON array peaked at 100 MiB that way, 71 MiB without the
//! delay. Forcing a collection after each large free costs microseconds, and there are only a
//! few dozen of them per command (BENCHMARKS.md, "Issue 13 regressions traced").

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;

/// A block at least this large is given back as soon as it is freed.
const LARGE: usize = 1 << 20;

pub(crate) struct Allocator;

impl Allocator {
    fn freed(size: usize) {
        if size >= LARGE {
            // SAFETY: mi_collect has no preconditions; it only returns free pages.
            unsafe { libmimalloc_sys::mi_collect(true) }
        }
    }
}

// SAFETY: every call is passed on to mimalloc unchanged; only a collection is added after it.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { MiMalloc.dealloc(ptr, layout) };
        Self::freed(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let moved = unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        Self::freed(layout.size());
        moved
    }
}
