//! The process allocator: the system allocator, with transparent huge pages requested for
//! large blocks.
//!
//! `prep eval fid` allocates ~20 fresh 32 MB matrices (d = 2048 covariances, factors,
//! products, solver work). Fresh memory is expensive in this VM: every first touch of a
//! 4 KiB page is a fault plus zeroing, 20–30 % of the command's CPU time. Linux's THP mode
//! is usually `madvise`, so blocks of at least [`MIN_BLOCK`] are advised `MADV_HUGEPAGE`
//! over their 2 MiB-aligned interior (memory the block alone owns): one fault per 2 MiB.
//! (Measured with `prep eval fid` on two 2048-d stats files: 0.71–0.91 s with the advice,
//! 0.90–0.95 s with a freed-block cache instead, 1.2–1.4 s with neither.)
//! Smaller blocks, and other operating systems, get the plain system allocator.
//! `PREP_NO_HUGEPAGES=1` turns the advice off (for A/B measurements).
//!
//! [`tune_malloc`] (called first thing in `main`) keeps glibc from returning freed
//! multi-megabyte blocks to the kernel: by default a block over the dynamic mmap
//! threshold is its own mapping, unmapped on free, so a pipeline that frees and
//! re-allocates its per-image buffers (model inputs, ONNX Runtime's per-run tensors)
//! faults every page in again for every image. Measured with `benches/conditions.sh`'s
//! build (480 photos, depth): 44.1 → 43.2 ms of CPU per image.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

/// Blocks at least this large get the huge-page advice.
pub const MIN_BLOCK: usize = 8 << 20;

const HUGE_PAGE: usize = 2 << 20;

/// The allocator `main` installs.
pub struct HugePageAlloc;

// 0: not read yet, 1: advice on, 2: off (`PREP_NO_HUGEPAGES`).
static ADVICE: AtomicU8 = AtomicU8::new(0);

fn advice_on() -> bool {
    match ADVICE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            // getenv does not allocate (std::env::var would re-enter the allocator).
            #[cfg(unix)]
            let off = unsafe { !libc::getenv(c"PREP_NO_HUGEPAGES".as_ptr()).is_null() };
            #[cfg(not(unix))]
            let off = true;
            ADVICE.store(if off { 2 } else { 1 }, Ordering::Relaxed);
            !off
        }
    }
}

fn advise(p: *mut u8, len: usize) {
    if p.is_null() || len < MIN_BLOCK || !advice_on() {
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

unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        advise(q, new_size);
        q
    }
}

/// Blocks up to this size come from the heap (reused after a free) instead of their own
/// mapping; glibc's largest allowed value (half its 64 MiB arena heap).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Free memory at the top of the heap is returned to the kernel only past this much.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// Tune the C allocator (glibc) for a process that recycles large buffers: blocks up
/// to [`MMAP_THRESHOLD`] come from the heap and freed memory stays mapped up to
/// [`TRIM_THRESHOLD`], so a re-allocated buffer does not fault its pages in again.
/// It applies to everything that calls malloc, ONNX Runtime included. Call it before
/// any thread starts. `PREP_NO_MALLOC_TUNING=1` leaves glibc's defaults (for A/B
/// measurements). A no-op on other C libraries.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        if libc::getenv(c"PREP_NO_MALLOC_TUNING".as_ptr()).is_null() {
            // Each call returns 0 only when glibc refuses the value; nothing to undo then.
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
        }
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
}
