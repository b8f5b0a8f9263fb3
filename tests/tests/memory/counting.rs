//! The binary's counting allocator. A process has one global allocator, so
//! the heap tests share it: it keeps the whole process's count (for
//! `csv_memory`, whose test holds [`exclusive`] so that nothing else runs
//! meanwhile) and each thread's count (for `fuzz_corpus`, whose tests run
//! on several threads and hold [`shared`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The whole process's heap: live bytes, and their peak.
pub static LIVE: AtomicUsize = AtomicUsize::new(0);
pub static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's heap: live bytes, and their peak.
    pub static THREAD_LIVE: Cell<isize> = const { Cell::new(0) };
    pub static THREAD_PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Tests measuring the process's heap run alone: they take this
/// exclusively, the others take it shared.
static HEAP: RwLock<()> = RwLock::new(());

/// For a test that measures the whole process's heap: no other test of
/// this binary runs while the guard lives.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    HEAP.write().unwrap_or_else(PoisonError::into_inner)
}

/// For a test that measures its own thread's heap: runs alongside the
/// others of its kind, never during an [`exclusive`] one.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    HEAP.read().unwrap_or_else(PoisonError::into_inner)
}

struct Counting;

fn track(delta: isize) {
    // `try_with`: during a thread's teardown the cells may be gone.
    let _ = THREAD_LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = THREAD_PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn grow(size: usize) {
    let now = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
    track(size as isize);
}

fn shrink(size: usize) {
    LIVE.fetch_sub(size, Ordering::Relaxed);
    track(-(size as isize));
}

// SAFETY: every call forwards to the system allocator unchanged; the
// counters only observe sizes (const-initialised thread locals of `Cell`
// allocate nothing themselves).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrink(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as the moment both blocks exist, as a move would be.
            grow(new_size);
            shrink(layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;
