use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::helper::{TestDaemon, binary, wait_until, write_config};

/// A notify socket read continuously, as systemd does.
pub(crate) struct NotifySocket {
    messages: Arc<Mutex<Vec<String>>>,
    pub(crate) path: std::path::PathBuf,
}

impl NotifySocket {
    pub(crate) fn bind(dir: &std::path::Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().push(text);
            }
        });
        NotifySocket { messages, path }
    }

    pub(crate) fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits for a message containing `needle` after index `from`; returns
    /// its index.
    pub(crate) fn wait_for(&self, needle: &str, from: usize) -> usize {
        wait_until(&format!("a notify message with {needle:?}"), || {
            self.messages()
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, m)| m.contains(needle))
                .map(|(i, _)| i)
        })
    }
}

#[test]
fn notify_messages_come_in_order_with_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let socket = NotifySocket::bind(dir.path());
    let config = write_config(dir.path(), 0, "");
    let mut command = Command::new(binary("anomalyd"));
    command
        .args(["--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &socket.path)
        .env("WATCHDOG_USEC", "400000");
    let mut daemon = TestDaemon::spawn_command(dir, command);

    let ready = socket.wait_for("READY=1", 0);
    assert!(
        socket.messages()[ready].contains("STATUS="),
        "{:?}",
        socket.messages()
    );
    // Pings at half the interval; two of them prove it repeats.
    let first = socket.wait_for("WATCHDOG=1", 0);
    socket.wait_for("WATCHDOG=1", first + 1);

    daemon.signal(libc::SIGHUP);
    let reloading = socket.wait_for("RELOADING=1", ready + 1);
    let message = &socket.messages()[reloading];
    let usec: u64 = message
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {message:?}"))
        .parse()
        .unwrap();
    assert!(usec > 0);
    socket.wait_for("READY=1", reloading + 1);

    let before_stop = socket.messages().len();
    daemon.signal(libc::SIGTERM);
    socket.wait_for("STOPPING=1", before_stop);
    assert!(daemon.wait_exit().success());
    let messages = socket.messages();
    assert!(
        !messages
            .iter()
            .any(|m| m.contains("READY=1") && m.contains("STOPPING=1")),
        "{messages:?}"
    );
}

#[test]
fn without_notify_socket_nothing_is_sent_and_all_works() {
    // The fixture never sets NOTIFY_SOCKET: the daemon must not complain.
    let mut daemon = TestDaemon::start("");
    let before = daemon.reloads_ok();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_reload(before);
    assert_eq!(daemon.get("/ready").status, 200);
    assert!(
        !daemon
            .stderr()
            .iter()
            .any(|l| l.contains("Cannot notify systemd")),
        "{:?}",
        daemon.stderr()
    );
}

#[test]
fn journal_stream_is_used_only_when_it_names_our_stderr() {
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        eprintln!("SKIPPED: journald runs here; its output cannot be checked on stderr");
        return;
    }
    // An inherited JOURNAL_STREAM that names another stream: plain stderr.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 0, "");
    let mut command = Command::new(binary("anomalyd"));
    command
        .args(["--config", config.to_str().unwrap()])
        .env("JOURNAL_STREAM", "1:1");
    let mut daemon = TestDaemon::spawn_command(dir, command);
    daemon.wait_for_stderr("Listening.");
    assert!(
        !daemon.stderr().iter().any(|l| l.contains("journald")),
        "{:?}",
        daemon.stderr()
    );

    // `[log] journal = true` without a journald socket: says so, and falls
    // back to stderr.
    let mut daemon = TestDaemon::start("[log]\njournal = true\nanomaly_log_file = \"a.log\"\n");
    daemon.wait_for_stderr("Cannot connect to journald; logging to stderr instead.");
    daemon.wait_for_stderr("Listening.");
}
