//! Secret templates (`fuzzing::template`): byte 0 picks raw mode (the rest is the template) or
//! generator mode (the rest is a program that builds a hostile template: thousands of nested
//! brackets or `{% if %}` blocks, long filter chains, runs of openers and stray closers). Besides
//! the checks there, each input must finish within a CPU time budget and a heap budget, and runs
//! on a thread with a small stack, like the operator's tokio workers (2 MiB; here less), so
//! recursion on the input overflows here first.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// CPU time one input may take: two renders of a template of at most 16 KiB. Measured, that
/// costs about 10 ms here, nearly all of it in the coverage hooks on every comparison (and up to
/// 60 ms on a busy machine with 2 cores), and well under 1 ms in a release build; anything
/// superlinear in 16 KiB costs seconds. The checking thread's own CPU time, not wall time: on a
/// busy machine a preempted input would otherwise look slow.
const TIME_BUDGET: Duration = Duration::from_millis(200);
/// Most heap one input may hold at once, above what was held before it.
const HEAP_BUDGET: usize = 4 * 1024 * 1024;
/// The checking thread's stack.
const STACK: usize = 256 * 1024;

/// Counts the bytes the Rust heap holds and the peak since [`reset_peak`].
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let held = HELD.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(held, Ordering::Relaxed);
}

fn reset_peak() -> usize {
    let held = HELD.load(Ordering::Relaxed);
    PEAK.store(held, Ordering::Relaxed);
    held
}

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            HELD.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write to; the clock exists on Linux.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (cpu, heap) = std::thread::scope(|scope| {
        let checker = std::thread::Builder::new().stack_size(STACK).spawn_scoped(scope, || {
            let before = reset_peak();
            let start = thread_cpu_time();
            navigator_token_operator::fuzzing::template(data);
            (thread_cpu_time() - start, PEAK.load(Ordering::Relaxed) - before)
        });
        checker.expect("thread").join().expect("a failed check aborts before this")
    });
    assert!(heap <= HEAP_BUDGET, "held {heap} bytes of heap at once");
    assert!(cpu <= TIME_BUDGET, "took {cpu:?} of CPU time");
});
