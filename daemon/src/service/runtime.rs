//! Starting a daemon's async runtime, and the first stdout line that
//! tests and scripts read the bound address from.

use std::fmt::Display;
use std::io::Write;

use tokio::runtime::Runtime;

/// Freed heap glibc keeps before giving memory back to the kernel, and the
/// size from which an allocation gets its own mapping.
const TRIM_THRESHOLD: libc::c_int = 16 << 20;
const MMAP_THRESHOLD: libc::c_int = 4 << 20;

/// Tells glibc to keep up to 16 MiB of freed heap per arena, and to serve
/// allocations below 4 MiB from the heap. By default it gives memory back
/// as soon as 128 KiB are free at the top of a heap: a request's buffers
/// (an NDJSON batch of 1,000 points allocates about 200 KiB) were then
/// returned and faulted in again at every request, which cost 20% of the
/// NDJSON throughput (`perf`: page faults and TLB flushes). Memory freed
/// beyond these sizes still goes back.
pub fn keep_freed_heap() {
    // SAFETY: mallopt(3) takes two integers, changes only the allocator's
    // own parameters under its lock, and is valid at any time, from any
    // thread; no memory of ours is touched.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Gives the heap memory glibc holds freed (up to 16 MiB per
/// arena, kept for the speed of request buffers) back to the kernel. The
/// series table's vectors double as it grows and leave their old buffers
/// freed behind them: with a million series that is about 13 MB of RSS
/// that nothing uses. Call it after the table has changed size, not per
/// request: it walks every arena's free lists under their locks.
pub fn release_freed_heap() {
    // SAFETY: malloc_trim(3) takes an integer, works only on the
    // allocator's own free lists under its locks, and is valid at any time
    // from any thread; memory in use by us is never touched.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A multi-threaded tokio runtime with `workers` worker threads (one per
/// core when `None`), with I/O and timers.
pub fn build(workers: Option<usize>) -> std::io::Result<Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder.enable_all().build()
}

/// Prints `listening on ADDR` on stdout and flushes it: the first line
/// of stdout, which tests and scripts read the bound address from.
pub fn announce_listening(addr: impl Display) {
    announce("listening on", addr);
}

/// Prints `WHAT ADDR` as a line on stdout and flushes it.
pub fn announce(what: &str, addr: impl Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{what} {addr}");
    let _ = out.flush();
}
