//! The standard process metrics Prometheus client libraries export
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...),
//! read from `/proc/self` at scrape time, as their procfs collector does.

use std::fmt::Write as _;

/// Clock ticks per second of `/proc/<pid>/stat` times: 100 on Linux (the
/// kernel's USER_HZ, also hard-coded by Prometheus' procfs library).
const USER_HZ: f64 = 100.0;

/// What was read from `/proc/self`; a field is `None` when it could not be.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident memory, in bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory, in bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit of open file descriptors.
    pub max_fds: Option<u64>,
    /// Start of the process, unix seconds.
    pub start_time: Option<f64>,
}

impl ProcessStats {
    /// Reads the current process's figures.
    pub fn read() -> ProcessStats {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| parse_boot_time(&text));
        let fields = stat.as_deref().and_then(stat_fields);
        ProcessStats {
            cpu_seconds: fields
                .as_ref()
                .map(|f| (f.utime + f.stime) as f64 / USER_HZ),
            start_time: fields
                .as_ref()
                .zip(boot_time)
                .map(|(f, boot)| boot as f64 + f.start_ticks as f64 / USER_HZ),
            resident_bytes: status.as_deref().and_then(|s| status_kib(s, "VmRSS:")),
            virtual_bytes: status.as_deref().and_then(|s| status_kib(s, "VmSize:")),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|text| parse_max_open_files(&text)),
        }
    }

    /// Writes the families that could be read, in the text format 0.0.4.
    pub fn render(&self, out: &mut String) {
        let mut family = |name: &str, kind: &str, help: &str, value: Option<f64>| {
            if let Some(value) = value {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
                );
            }
        };
        family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds,
        );
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes.map(|b| b as f64),
        );
        family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            self.virtual_bytes.map(|b| b as f64),
        );
        family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            self.open_fds.map(|n| n as f64),
        );
        family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            self.max_fds.map(|n| n as f64),
        );
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time,
        );
    }
}

/// The fields of `/proc/self/stat` used here.
struct StatFields {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after the last
/// `)`: utime and stime are fields 14 and 15, starttime field 22.
fn stat_fields(text: &str) -> Option<StatFields> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_ascii_whitespace().collect();
    // `after` starts at field 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// `btime` of `/proc/stat`: boot time, unix seconds.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A `Key:   N kB` line of `/proc/<pid>/status`, in bytes.
fn status_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find_map(|line| line.strip_prefix(key))?;
    let kib: u64 = line.split_ascii_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft limit of "Max open files" in `/proc/<pid>/limits`.
fn parse_max_open_files(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    line.split_ascii_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat =
            "4242 (a (strange) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 123456 1000 200";
        let f = stat_fields(stat).unwrap();
        assert_eq!((f.utime, f.stime, f.start_ticks), (250, 50, 123456));
        assert_eq!(
            parse_boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        assert_eq!(
            status_kib("Name:\tx\nVmRSS:\t    2048 kB\n", "VmRSS:"),
            Some(2048 * 1024)
        );
        let limits = "Limit Soft Hard Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
    }

    #[test]
    fn reads_this_process() {
        let stats = ProcessStats::read();
        assert!(stats.resident_bytes.unwrap() > 0);
        assert!(stats.open_fds.unwrap() >= 3);
        assert!(stats.max_fds.unwrap() >= stats.open_fds.unwrap());
        let now = crate::clock::unix_now();
        let start = stats.start_time.unwrap();
        assert!(
            start > now - 86_400.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
        let mut text = String::new();
        stats.render(&mut text);
        assert!(text.contains("\nprocess_open_fds "), "{text}");
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
    }
}
