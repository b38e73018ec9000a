use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::helper::{
    TestDaemon, binary, free_port, point, request, request_unix, wait_until, write_config,
};

#[test]
fn a_unix_socket_serves_with_its_mode_and_is_removed_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("anomalyd.sock");
    let mut daemon = TestDaemon::start_in(
        dir,
        0,
        &format!(
            "[server]\nlisten = \"unix:{}\"\nsocket_mode = \"0600\"\n",
            socket.display()
        ),
    );
    assert_eq!(daemon.unix.as_deref(), Some(socket.as_path()));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let json = [("Content-Type", "application/json")];
    let reply = request_unix(
        &socket,
        "POST",
        "/detect",
        &json,
        point("cpu", 1.0, 1.0).as_bytes(),
    );
    assert_eq!(
        reply.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    let series = request_unix(&socket, "GET", "/series/cpu", &[], b"");
    assert_eq!(series.json()["points"], 1);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit().success());
    assert!(!socket.exists(), "the socket file is removed on exit");
}

#[test]
fn a_unix_socket_in_use_by_another_daemon_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("anomalyd.sock");
    let config = format!("[server]\nlisten = \"unix:{}\"\n", socket.display());
    let first = TestDaemon::start_in(tempfile::tempdir().unwrap(), 0, &config);
    let second_dir = tempfile::tempdir().unwrap();
    let path = write_config(second_dir.path(), 0, &config);
    let output = Command::new(binary("anomalyd"))
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another process serves on"), "{stderr}");
    // The first one still serves, its socket untouched.
    assert_eq!(
        request_unix(&socket, "GET", "/healthz", &[], b"").status,
        200
    );
    drop(first);
}

/// Whether Debian's `systemd-socket-activate` is here (else the test is
/// skipped, saying so).
fn socket_activate_present() -> bool {
    let present = Command::new("systemd-socket-activate")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !present {
        eprintln!("SKIPPED: systemd-socket-activate is not installed (Debian's systemd)");
    }
    present
}

/// `systemd-socket-activate` listening on `listen` and starting anomalyd,
/// whose configuration in `dir` names another `[server] listen`.
fn socket_activate(listen: &str, dir: &Path) -> Command {
    socket_activate_with(&["--listen", listen], dir)
}

/// `systemd-socket-activate` with `args` (its sockets and their names),
/// starting anomalyd, whose configuration in `dir` names another
/// `[server] listen` and `admin_listen`.
fn socket_activate_with(args: &[&str], dir: &Path) -> Command {
    let config = write_config(
        dir,
        0,
        "[server]\nlisten = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:2\"\n",
    );
    let mut command = Command::new("systemd-socket-activate");
    command
        .args(args)
        .arg("--")
        .arg(binary("anomalyd"))
        .args(["--config", config.to_str().unwrap()]);
    command
}

/// Connects to `addr` once `systemd-socket-activate` listens there: the
/// connection that makes it start anomalyd (it waits in the backlog until
/// anomalyd accepts it).
fn wake(addr: std::net::SocketAddr) -> std::net::TcpStream {
    wait_until("systemd-socket-activate to listen", || {
        std::net::TcpStream::connect(addr).ok()
    })
}

#[test]
fn systemd_socket_activation_serves_on_the_passed_socket() {
    if !socket_activate_present() {
        return;
    }
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let command = socket_activate(&listen, dir.path());
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let waker = std::thread::spawn(move || wake(addr));
    let mut daemon = TestDaemon::spawn_command(dir, command);
    drop(waker.join());
    // The passed socket, not [server] listen (port 1).
    assert_eq!(daemon.addr.port(), port);
    let reply = request(
        daemon.addr,
        "POST",
        "/detect",
        &[("Content-Type", "application/json")],
        point("cpu", 1.0, 1.0).as_bytes(),
    );
    assert_eq!(reply.status, 200);
    daemon.wait_for_stderr("socket activation");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit().success());
}

#[test]
fn every_passed_socket_serves_and_the_one_named_admin_is_the_admin_address() {
    if !socket_activate_present() {
        return;
    }
    let (main_port, admin_port) = (free_port(), free_port());
    let (main, admin) = (
        format!("127.0.0.1:{main_port}"),
        format!("127.0.0.1:{admin_port}"),
    );
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("passed.sock");
    let command = socket_activate_with(
        &[
            "--listen",
            &main,
            "--listen",
            &admin,
            "--listen",
            socket.to_str().unwrap(),
            "--fdname=web:admin:local",
        ],
        dir.path(),
    );
    let addr: std::net::SocketAddr = main.parse().unwrap();
    let waker = std::thread::spawn(move || wake(addr));
    let mut daemon = TestDaemon::spawn_command(dir, command);
    drop(waker.join());
    // The first passed socket is the announced address, not [server] listen.
    assert_eq!(daemon.addr.port(), main_port);
    let json = [("Content-Type", "application/json")];
    let detect = |body: String| request(daemon.addr, "POST", "/detect", &json, body.as_bytes());
    assert_eq!(detect(point("cpu", 1.0, 1.0)).status, 200);
    // Every other unnamed-for-admin socket serves every endpoint too.
    let over_unix = request_unix(
        &socket,
        "POST",
        "/detect",
        &json,
        point("cpu", 2.0, 2.0).as_bytes(),
    );
    assert_eq!(over_unix.status, 200);
    // The socket named "admin" serves the probes and metrics only, in
    // place of [server] admin_listen (port 2).
    let admin_addr: std::net::SocketAddr = admin.parse().unwrap();
    let line = daemon.wait_for_stderr("the socket systemd passed as \"admin\"");
    assert!(line.contains(&admin), "{line}");
    assert_eq!(request(admin_addr, "GET", "/healthz", &[], b"").status, 200);
    let metrics = request(admin_addr, "GET", "/metrics", &[], b"");
    assert!(
        String::from_utf8_lossy(&metrics.body)
            .contains("anomalyd_points_received_total{format=\"detect\"} 2"),
        "both points counted: {}",
        String::from_utf8_lossy(&metrics.body)
    );
    assert_eq!(
        request(
            admin_addr,
            "POST",
            "/detect",
            &json,
            point("cpu", 3.0, 3.0).as_bytes()
        )
        .status,
        404
    );
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit().success());
}

#[test]
fn protected_mode_holds_for_a_passed_socket() {
    if !socket_activate_present() {
        return;
    }
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = socket_activate(&format!("0.0.0.0:{port}"), dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wake(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let output = wait_until("anomalyd to refuse", || child.try_wait().unwrap()).code();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(output, Some(78), "{stderr}");
    assert!(stderr.contains("protected mode"), "{stderr}");
}

/// Posts `body` to `/detect` on the unix socket at `socket` with curl run
/// as `uid`: the status and the body of the reply.
/// `body` is NDJSON, one point a line.
fn post_as_user(socket: &Path, uid: u32, body: &str) -> (u16, String) {
    use std::os::unix::process::CommandExt;
    let output = Command::new("curl")
        .uid(uid)
        .gid(uid)
        .args(["-q", "-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(socket)
        .args([
            "-H",
            "Content-Type: application/x-ndjson",
            "--data-binary",
            body,
        ])
        .arg("http://localhost/detect")
        .env("HOME", "/")
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (reply, status) = text.rsplit_once('\n').expect("curl prints the status last");
    (status.trim().parse().unwrap_or(0), reply.to_owned())
}

#[test]
fn each_local_user_on_the_unix_socket_has_its_own_rate_limit() {
    if !crate::tls::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Another user must reach the socket: open the directory to it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("anomalyd.sock");
    let daemon = TestDaemon::start_in(
        dir,
        0,
        &format!(
            "[server]\nlisten = \"unix:{}\"\nsocket_mode = \"0666\"\nrate_limit = 1\nrate_burst = 3\n",
            socket.display()
        ),
    );
    let nobody = 65534;
    let three: Vec<String> = (1..=3).map(|i| point("root", 1.0, i as f64)).collect();
    let (status, reply) = post_as_user(&socket, 0, &three.join("\n"));
    assert_eq!(status, 200, "{reply}");
    // Three more need three seconds of refill: refused whatever the load.
    let three: Vec<String> = (4..=6).map(|i| point("root", 1.0, i as f64)).collect();
    let (status, reply) = post_as_user(&socket, 0, &three.join("\n"));
    assert_eq!(status, 429, "root's bucket is empty: {reply}");
    assert!(reply.contains("uid 0 on the unix socket"), "{reply}");
    // Another local user is not held back by root's burst.
    let (status, reply) = post_as_user(&socket, nobody, &point("nobody", 1.0, 1.0));
    assert_eq!(
        status, 200,
        "uid {nobody} draws from its own bucket: {reply}"
    );
    let series = request_unix(&socket, "GET", "/series/nobody", &[], b"");
    assert_eq!(series.json()["points"], 1);
    let metrics = request_unix(&socket, "GET", "/metrics", &[], b"");
    let metrics = String::from_utf8_lossy(&metrics.body);
    assert!(
        metrics
            .lines()
            .any(|line| line == "anomalyd_points_rate_limited_total 3"),
        "root's three refused points are counted:\n{metrics}"
    );
    drop(daemon);
}
