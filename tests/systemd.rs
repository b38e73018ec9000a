use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::helper::{
    MountPoint, TestDaemon, binary, point, spike_points, wait_until, write_config,
};

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

/// A datagram socket standing in for journald's: bound in a temporary
/// directory that a private mount namespace puts at /run/systemd/journal,
/// read continuously.
struct FakeJournal {
    dir: tempfile::TempDir,
    entries: Arc<Mutex<Vec<JournalEntry>>>,
}

/// The `(key, value)` fields of one journal entry, in order.
type JournalEntry = Vec<(String, String)>;

/// The fields of one datagram of journald's native protocol: each field is
/// `KEY=value\n`, or `KEY\n`, a little-endian u64 length, the value and `\n`.
fn parse_journal_entry(mut data: &[u8]) -> JournalEntry {
    let mut fields = Vec::new();
    while !data.is_empty() {
        let Some(end) = data.iter().position(|&b| b == b'=' || b == b'\n') else {
            break;
        };
        let key = String::from_utf8_lossy(&data[..end]).into_owned();
        if data[end] == b'=' {
            let rest = &data[end + 1..];
            let stop = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            fields.push((key, String::from_utf8_lossy(&rest[..stop]).into_owned()));
            data = rest.get(stop + 1..).unwrap_or_default();
        } else {
            let rest = &data[end + 1..];
            let Some(len) = rest.get(..8) else { break };
            let len = u64::from_le_bytes(len.try_into().unwrap()) as usize;
            let Some(value) = rest.get(8..8 + len) else {
                break;
            };
            fields.push((key, String::from_utf8_lossy(value).into_owned()));
            data = rest.get(8 + len + 1..).unwrap_or_default();
        }
    }
    fields
}

impl FakeJournal {
    fn bind() -> FakeJournal {
        let dir = tempfile::tempdir().unwrap();
        let socket = UnixDatagram::bind(dir.path().join("socket")).unwrap();
        let entries = Arc::new(Mutex::new(Vec::new()));
        let sink = entries.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = socket.recv(&mut buf) {
                sink.lock().unwrap().push(parse_journal_entry(&buf[..n]));
            }
        });
        FakeJournal { dir, entries }
    }

    /// `program args...` run in a private mount namespace where this
    /// journal's socket is /run/systemd/journal/socket.
    fn command(&self, program: &str, args: &[&std::ffi::OsStr]) -> Command {
        let mut command = Command::new("unshare");
        command.args(["--mount", "--propagation", "private", "sh", "-c"]);
        command.arg(r#"mount --bind "$1" /run/systemd/journal && shift && exec "$@""#);
        command.arg("sh").arg(self.dir.path()).arg(binary(program));
        command.args(args);
        command
    }

    /// Waits for an entry with every one of `fields` (key, value).
    fn wait_for(&self, fields: &[(&str, &str)]) {
        wait_until(&format!("a journal entry with {fields:?}"), || {
            self.entries
                .lock()
                .unwrap()
                .iter()
                .any(|entry| {
                    fields
                        .iter()
                        .all(|(k, v)| entry.iter().any(|(key, value)| key == k && value == v))
                })
                .then_some(())
        })
    }

    /// The `SYSLOG_IDENTIFIER` values seen so far.
    fn identifiers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .entries
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .filter(|(key, _)| key == "SYSLOG_IDENTIFIER")
            .map(|(_, value)| value.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// `journalctl -t anomaly-generator` finds the generator's diagnostics
/// and `journalctl -t anomalyd` the daemon's: each logs under its own name.
#[test]
fn each_daemon_logs_to_the_journal_under_its_own_name() {
    let _mount_point = MountPoint::create("/run/systemd/journal");
    let generator_journal = FakeJournal::bind();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("generator.toml");
    std::fs::write(&config, "seed = 7\n[log]\njournal = true\n").unwrap();
    let out = generator_journal
        .command(
            "anomaly-generator",
            &[
                "--config".as_ref(),
                config.as_os_str(),
                "--count".as_ref(),
                "3".as_ref(),
                "--stdout".as_ref(),
                "--start-time".as_ref(),
                "1700000000".as_ref(),
            ],
        )
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    generator_journal.wait_for(&[
        ("SYSLOG_IDENTIFIER", "anomaly-generator"),
        ("MESSAGE", "Generating."),
        ("SEED", "7"),
    ]);
    assert_eq!(generator_journal.identifiers(), ["anomaly-generator"]);

    let daemon_journal = FakeJournal::bind();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        0,
        "[log]\njournal = true\nanomaly_log_file = \"a.log\"\n",
    );
    let command = daemon_journal.command("anomalyd", &["--config".as_ref(), config.as_os_str()]);
    let daemon = TestDaemon::spawn_command(dir, command);
    daemon_journal.wait_for(&[("SYSLOG_IDENTIFIER", "anomalyd"), ("MESSAGE", "Listening.")]);
    daemon.stop();
    assert_eq!(daemon_journal.identifiers(), ["anomalyd"]);
}

/// The journal gets one event when an episode opens and one when it
/// closes, not one per anomalous point.
#[test]
fn an_episode_is_two_journal_events() {
    let _mount_point = MountPoint::create("/run/systemd/journal");
    let journal = FakeJournal::bind();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        0,
        "[detector]\nwindow_size = 4\nexclude_anomalies = true\n\
         [log]\njournal = true\nanomaly_log_file = \"a.log\"\n",
    );
    let command = journal.command("anomalyd", &["--config".as_ref(), config.as_os_str()]);
    let daemon = TestDaemon::spawn_command(dir, command);
    let mut points = spike_points("cpu", 1000.0, 100.0);
    // Two more anomalous points, then a calm one that closes the episode.
    for (i, value) in [120.0, 110.0, 10.0].into_iter().enumerate() {
        points.push(point("cpu", value, 1005.0 + i as f64));
    }
    for p in &points {
        assert_eq!(daemon.detect(p).status, 200);
    }
    journal.wait_for(&[
        ("SERIES", "cpu"),
        ("EPISODE_EVENT", "closed"),
        ("POINTS", "3"),
        ("PEAK_VALUE", "120.0"),
        ("END", "1007.0"),
    ]);
    journal.wait_for(&[
        ("SERIES", "cpu"),
        ("EPISODE_EVENT", "opened"),
        ("EPISODE", "1004000000"),
        ("VALUE", "100.0"),
        ("DIRECTION", "upper"),
    ]);
    daemon.stop();
    let with_series = journal
        .entries
        .lock()
        .unwrap()
        .iter()
        .filter(|entry| entry.iter().any(|(key, _)| key == "SERIES"))
        .count();
    assert_eq!(with_series, 2, "one event per opening and closing");
}
