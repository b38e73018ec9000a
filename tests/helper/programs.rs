//! Real programs of the monitoring stack (Debian's `prometheus`, ...),
//! each started by a test on a free loopback port with its own temporary
//! directory, and killed when dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{free_port, request, wait_until};

/// A running program of the monitoring stack.
pub struct RealProgram {
    /// What it is, for messages.
    pub name: &'static str,
    /// Its HTTP address.
    pub addr: SocketAddr,
    /// Its working directory (configuration, storage, `output.log`).
    pub dir: tempfile::TempDir,
    child: Child,
}

impl RealProgram {
    /// Starts `program` with `args` (where `{port}` is replaced by a free
    /// port and `{dir}` by the temporary directory) after writing `files`
    /// (name, contents; `{port}` replaced) there; waits until `GET
    /// ready_path` answers 200. Panics with the program's output if it
    /// exits or never gets ready. `None` when the program is not installed
    /// and `require_var` is not set in the environment.
    pub fn start(
        name: &'static str,
        program: &str,
        args: &[&str],
        files: &[(&str, &str)],
        ready_path: &str,
        require_var: &str,
    ) -> Option<RealProgram> {
        let ready = |addr| {
            TcpStream::connect(addr).is_ok()
                && request(addr, "GET", ready_path, &[], b"").status == 200
        };
        Self::start_until(name, program, args, files, &ready, require_var)
    }

    /// As [`RealProgram::start`], ready when `ready(addr)` says so (for a
    /// program that speaks TLS, say).
    pub fn start_until(
        name: &'static str,
        program: &str,
        args: &[&str],
        files: &[(&str, &str)],
        ready: &dyn Fn(SocketAddr) -> bool,
        require_var: &str,
    ) -> Option<RealProgram> {
        if Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            assert!(
                std::env::var_os(require_var).is_none(),
                "{program} is required ({require_var} is set) but cannot be run"
            );
            eprintln!("SKIPPED: {program} is not installed (Debian package: {name})");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let fill = |text: &str| {
            text.replace("{port}", &port.to_string())
                .replace("{dir}", dir.path().to_str().unwrap())
        };
        for (file, text) in files {
            std::fs::write(dir.path().join(file), fill(text)).unwrap();
        }
        let log = std::fs::File::create(dir.path().join("output.log")).unwrap();
        let child = Command::new(program)
            .args(args.iter().map(|a| fill(a)))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let mut started = RealProgram {
            name,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            child,
        };
        wait_until(&format!("{name} to get ready"), || {
            if let Ok(Some(status)) = started.child.try_wait() {
                panic!("{name} exited ({status}):\n{}", started.output());
            }
            ready(started.addr).then_some(())
        });
        Some(started)
    }

    /// Everything the program printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("output.log")).unwrap_or_default()
    }

    /// A path in its directory.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        Path::new(self.dir.path()).join(name)
    }
}

impl Drop for RealProgram {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
