//! The process allocator: the system allocator, plus two things for large blocks.
//!
//! `prep eval fid` allocates ~20 fresh 32 MB matrices (d = 2048 covariances, factors,
//! products, solver work). Fresh memory is expensive here: every first touch of a page is
//! a fault plus zeroing, and in this VM that was 20–30 % of the command's CPU time. So,
//! for blocks of at least [`MIN_BLOCK`]:
//!
//! 1. **Reuse**: a freed block is kept in a small cache (at most [`CACHE_BLOCKS`] blocks,
//!    [`CACHE_BYTES`] in all) and handed to the next request it fits (same alignment, size
//!    between 3/4 of the block and the block), so a sequence of same-sized temporaries
//!    touches its pages once. glibc would unmap such blocks on free (they are above its
//!    maximum mmap threshold, 32 MiB).
//! 2. **Huge pages**: fresh blocks are advised `MADV_HUGEPAGE` over their 2 MiB-aligned
//!    interior (Linux's THP mode is usually `madvise`): one fault per 2 MiB, not per 4 KiB.
//!
//! Everything smaller — and every other OS for the advice — is the plain system
//! allocator. `PREP_NO_HUGEPAGES=1` turns both off (for A/B measurements). Invariant: a
//! cached block is owned by the cache alone and is only ever returned to `System.dealloc`
//! or handed out once.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// Blocks at least this large get the huge-page advice.
pub const MIN_BLOCK: usize = 8 << 20;

const HUGE_PAGE: usize = 2 << 20;

/// At most this many freed large blocks are kept for reuse…
pub const CACHE_BLOCKS: usize = 8;
/// …holding at most this many bytes.
pub const CACHE_BYTES: usize = 512 << 20;

#[derive(Clone, Copy)]
struct Cached {
    ptr: usize,
    size: usize,
    align: usize,
}

struct Cache {
    blocks: [Option<Cached>; CACHE_BLOCKS],
    bytes: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    blocks: [None; CACHE_BLOCKS],
    bytes: 0,
});

/// A cached block that fits `layout`, removed from the cache.
fn take(layout: Layout) -> Option<*mut u8> {
    let mut c = CACHE.lock().ok()?;
    let want = layout.size();
    let mut best: Option<usize> = None;
    for (i, b) in c.blocks.iter().enumerate() {
        if let Some(b) = b {
            let fits = b.size >= want && want >= b.size - b.size / 4 && b.align >= layout.align();
            if fits && best.is_none_or(|j| c.blocks[j].is_some_and(|x| x.size > b.size)) {
                best = Some(i);
            }
        }
    }
    let b = c.blocks[best?].take()?;
    c.bytes -= b.size;
    Some(b.ptr as *mut u8)
}

/// Keep a freed block; false when the cache is full (the caller frees it).
fn keep(p: *mut u8, layout: Layout) -> bool {
    let Ok(mut c) = CACHE.lock() else {
        return false;
    };
    if c.bytes + layout.size() > CACHE_BYTES {
        return false;
    }
    let Some(slot) = c.blocks.iter().position(Option::is_none) else {
        return false;
    };
    c.blocks[slot] = Some(Cached {
        ptr: p as usize,
        size: layout.size(),
        align: layout.align(),
    });
    c.bytes += layout.size();
    true
}

/// The allocator `main` installs.
pub struct HugePageAlloc;

// 0: not read yet, 1: on, 2: off.
static ENABLED: AtomicU8 = AtomicU8::new(0);

fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            // getenv does not allocate (std::env::var would re-enter the allocator).
            #[cfg(unix)]
            let off = unsafe { !libc::getenv(c"PREP_NO_HUGEPAGES".as_ptr()).is_null() };
            #[cfg(not(unix))]
            let off = true;
            ENABLED.store(if off { 2 } else { 1 }, Ordering::Relaxed);
            !off
        }
    }
}

fn advise(p: *mut u8, len: usize) {
    if p.is_null() || len < MIN_BLOCK || !enabled() {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let start = (p as usize).div_ceil(HUGE_PAGE) * HUGE_PAGE;
        let end = (p as usize + len) / HUGE_PAGE * HUGE_PAGE;
        if end > start {
            // Advice only: a kernel without THP answers EINVAL, which changes nothing.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
}

fn large(layout: Layout) -> bool {
    layout.size() >= MIN_BLOCK && enabled()
}

// A block handed out from the cache may be larger than the layout that later frees it;
// glibc's free() and realloc() ignore the size, so that is sound with the system
// allocator, and the cache then records the smaller size (it never hands out more than
// it records).
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if large(layout) {
            if let Some(p) = take(layout) {
                return p;
            }
        }
        let p = unsafe { System.alloc(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if large(layout) {
            if let Some(p) = take(layout) {
                unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
                return p;
            }
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if large(layout) && keep(p, layout) {
            return;
        }
        unsafe { System.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        advise(q, new_size);
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_and_small_blocks_round_trip() {
        let a = HugePageAlloc;
        for &size in &[64usize, MIN_BLOCK, MIN_BLOCK + 12345, 3 * MIN_BLOCK] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null());
                assert_eq!(*p.add(size - 1), 0);
                *p.add(size - 1) = 7;
                let q = a.realloc(p, layout, size * 2);
                assert_eq!(*q.add(size - 1), 7);
                a.dealloc(q, Layout::from_size_align(size * 2, 64).unwrap());
            }
        }
    }

    #[test]
    fn a_freed_large_block_is_reused_zeroed_and_small_ones_are_not_cached() {
        let a = HugePageAlloc;
        // A size no other test or the harness uses, so the cache slot is ours.
        let size = MIN_BLOCK + 4096 * 7 + 8;
        let layout = Layout::from_size_align(size, 128).unwrap();
        unsafe {
            let p = a.alloc(layout);
            std::ptr::write_bytes(p, 0xAB, size);
            a.dealloc(p, layout);
            let q = a.alloc_zeroed(layout);
            assert_eq!(q, p, "the freed block is handed out again");
            assert!((0..size).step_by(4093).all(|i| *q.add(i) == 0));
            // A request for a stricter alignment than the block has is not served by it
            // unless the address happens to satisfy it.
            a.dealloc(q, layout);
            let big = Layout::from_size_align(size, 1 << 21).unwrap();
            let r = a.alloc(big);
            assert_eq!(r as usize % (1 << 21), 0);
            a.dealloc(r, big);
            // Too small to fit a 3/4 rule: a fresh block.
            let small = Layout::from_size_align(size / 2, 128).unwrap();
            let s = a.alloc(small);
            assert!(!s.is_null());
            a.dealloc(s, small);
        }
    }
}
