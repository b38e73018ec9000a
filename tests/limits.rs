use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::helper::{TIMEOUT, TestDaemon, point, read_reply, wait_until};

/// True once the server has closed `stream` (EOF or reset).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        ),
    }
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let daemon = TestDaemon::start(
        "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"1s\"\nidle_timeout = \"60s\"\n",
    );
    let mut stream = TcpStream::connect(daemon.addr).unwrap();
    stream
        .write_all(b"POST /detect HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(
        closed_by_server(&mut stream),
        "the slow client was not cut off"
    );
    assert_eq!(
        daemon.detect(&point("a", 1.0, 1.0)).status,
        200,
        "others are still served"
    );
}

#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let daemon = TestDaemon::start(
        "[server]\nlisten = \"127.0.0.1:0\"\nidle_timeout = \"1s\"\nheader_read_timeout = \"60s\"\n",
    );
    let mut stream = TcpStream::connect(daemon.addr).unwrap();
    let body = point("a", 1.0, 1.0);
    let request = format!(
        "POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    assert_eq!(read_reply(&mut stream).status, 200);
    // Kept alive: a second request on the same connection works.
    stream.write_all(request.as_bytes()).unwrap();
    assert_eq!(read_reply(&mut stream).status, 200);
    assert!(
        closed_by_server(&mut stream),
        "the idle connection stayed open"
    );
}

#[test]
fn connections_beyond_max_connections_wait_for_a_free_slot() {
    let daemon = TestDaemon::start(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 2\nheader_read_timeout = \"30s\"\nidle_timeout = \"30s\"\n",
    );
    let body = point("a", 1.0, 1.0);
    let request = format!(
        "POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Two kept-alive connections hold both slots.
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(daemon.addr).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            assert_eq!(read_reply(&mut s).status, 200);
            s
        })
        .collect();
    let mut third = TcpStream::connect(daemon.addr).unwrap();
    third.write_all(request.as_bytes()).unwrap();
    // A bounded look for an answer that must not come while both are held.
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = third.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a third connection was served beyond max_connections: {early:?}"
    );
    drop(held.pop());
    third.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(
        read_reply(&mut third).status,
        200,
        "served once a slot was free"
    );
}

#[test]
fn idle_series_are_forgotten_after_their_ttl() {
    let daemon = TestDaemon::start(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_series = 1\n[detector]\nseries_ttl = \"1s\"\n",
    );
    assert_eq!(daemon.detect(&point("a", 1.0, 1.0)).status, 200);
    assert_eq!(daemon.detect(&point("b", 1.0, 1.0)).status, 429);
    wait_until("series a to be forgotten", || {
        (daemon.detect(&point("b", 1.0, 1.0)).status == 200).then_some(())
    });
    assert_eq!(
        daemon.detect(&point("a", 1.0, 1.0)).status,
        429,
        "b now holds the only slot"
    );
}
