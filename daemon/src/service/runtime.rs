//! Starting a daemon's async runtime, and the first stdout line that
//! tests and scripts read the bound address from.

use std::io::Write;
use std::net::SocketAddr;

use tokio::runtime::Runtime;

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
pub fn announce_listening(addr: SocketAddr) {
    announce("listening on", addr);
}

/// Prints `WHAT ADDR` as a line on stdout and flushes it.
pub fn announce(what: &str, addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{what} {addr}");
    let _ = out.flush();
}
