//! The sockets the server accepts on: a TCP address, a unix socket
//! (`listen = "unix:/path"`), or a socket systemd passed in (socket
//! activation, `LISTEN_FDS`), and the connected stream of each, with TLS
//! on top when `[server] tls_cert_file` is set.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::access::Peer;
use crate::config::ListenAddr;

/// A bound listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A unix stream socket; `path` is removed on drop when we created it.
    Unix {
        /// The socket.
        listener: UnixListener,
        /// Where it is, when known.
        path: Option<PathBuf>,
        /// Whether we created the file (and so remove it).
        owned: bool,
    },
}

/// The `FileDescriptorName=` of a passed socket that serves as the admin
/// address (`/healthz`, `/ready`, `/metrics`) instead of every endpoint.
pub const ADMIN_FD_NAME: &str = "admin";

/// The sockets systemd passed, by role.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Sockets serving every endpoint: all but the one named `admin`.
    pub main: Vec<Listener>,
    /// The socket named `admin`, serving as `[server] admin_listen` would.
    pub admin: Option<Listener>,
}

/// The address a [`Listener`] is bound to, as announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoundAddr {
    /// A TCP address (the real port when `listen` said 0).
    Tcp(SocketAddr),
    /// A unix socket (`None`: an inherited one without a path).
    Unix(Option<PathBuf>),
}

impl fmt::Display for BoundAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoundAddr::Tcp(addr) => write!(f, "{addr}"),
            BoundAddr::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            BoundAddr::Unix(None) => write!(f, "unix:(unnamed)"),
        }
    }
}

impl Listener {
    /// Binds `addr`. A unix socket gets `mode`; a stale socket file left
    /// by a crash is replaced, a live one (another daemon answers on it)
    /// is an error.
    pub async fn bind(addr: &ListenAddr, mode: u32) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(addr) => TcpListener::bind(addr).await.map(Listener::Tcp),
            ListenAddr::Unix(path) => bind_unix(path, mode).await,
        }
    }

    /// The sockets systemd passed (`LISTEN_PID`/`LISTEN_FDS`, named by
    /// `LISTEN_FDNAMES`), sorted by role. Call it once, before other file
    /// descriptors may be opened and closed by other threads (the fds are
    /// ours from then on).
    pub fn from_systemd() -> io::Result<Inherited> {
        let mut inherited = Inherited::default();
        for (fd, name) in sd_notify::listen_fds_with_names()? {
            let listener = Self::from_inherited(fd)?;
            if name == ADMIN_FD_NAME {
                if inherited.admin.is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "systemd passed several sockets named \"admin\"; give one \
                         FileDescriptorName=admin",
                    ));
                }
                inherited.admin = Some(listener);
            } else {
                inherited.main.push(listener);
            }
        }
        Ok(inherited)
    }

    /// Takes ownership of the listening socket `fd`.
    fn from_inherited(fd: RawFd) -> io::Result<Listener> {
        // SAFETY: `fd` is a descriptor systemd passed to this process for
        // it to own (LISTEN_PID is our pid; sd_notify::listen_fds checked
        // it and set FD_CLOEXEC); it is taken once, here, so no other
        // owner closes it.
        #[allow(unsafe_code)]
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let tcp = std::net::TcpListener::from(owned);
        if tcp.local_addr().is_ok() {
            tcp.set_nonblocking(true)?;
            return TcpListener::from_std(tcp).map(Listener::Tcp);
        }
        let unix = std::os::unix::net::UnixListener::from(OwnedFd::from(tcp));
        let path = unix.local_addr()?.as_pathname().map(Path::to_path_buf);
        unix.set_nonblocking(true)?;
        Ok(Listener::Unix {
            listener: UnixListener::from_std(unix)?,
            path,
            owned: false,
        })
    }

    /// Where the listener is bound.
    pub fn local_addr(&self) -> io::Result<BoundAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr().map(BoundAddr::Tcp),
            Listener::Unix { path, .. } => Ok(BoundAddr::Unix(path.clone())),
        }
    }

    /// Accepts a connection: the stream, and who is at its other end.
    pub async fn accept(&self) -> io::Result<(Stream, Peer)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for a connection, as [`Listener::accept`].
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Stream, Peer)>> {
        match self {
            Listener::Tcp(listener) => listener.poll_accept(cx).map_ok(|(stream, peer)| {
                let _ = stream.set_nodelay(true);
                (Stream::Tcp(stream), Peer::Ip(peer.ip()))
            }),
            Listener::Unix { listener, .. } => listener.poll_accept(cx).map_ok(|(stream, _)| {
                let uid = stream.peer_cred().ok().map(|cred| cred.uid());
                (Stream::Unix(stream), Peer::Local { uid })
            }),
        }
    }
}

/// Accepts a connection on any of `listeners`, polling them from `*next`
/// on so that a busy one does not starve the others.
pub async fn accept_any(listeners: &[Listener], next: &mut usize) -> io::Result<(Stream, Peer)> {
    std::future::poll_fn(|cx| {
        for offset in 0..listeners.len() {
            let index = (*next + offset) % listeners.len();
            if let Poll::Ready(accepted) = listeners[index].poll_accept(cx) {
                *next = index + 1;
                return Poll::Ready(accepted);
            }
        }
        Poll::Pending
    })
    .await
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Listener::Tcp(listener)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix {
            path: Some(path),
            owned: true,
            ..
        } = self
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds a unix socket at `path` with permission bits `mode`.
async fn bind_unix(path: &Path, mode: u32) -> io::Result<Listener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another process serves on {}", path.display()),
            ));
        }
        // Nobody answers: left behind by a process that died.
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(Listener::Unix {
        listener,
        path: Some(path.to_owned()),
        owned: true,
    })
}

/// A connected client stream.
#[derive(Debug)]
pub enum Stream {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a unix socket.
    Unix(UnixStream),
    /// TLS over one of the others.
    Tls(Box<tokio_rustls::server::TlsStream<Stream>>),
}

impl Stream {
    /// The stream after a TLS handshake as the server of `config`.
    pub async fn accept_tls(self, config: Arc<rustls::ServerConfig>) -> io::Result<Stream> {
        let tls = tokio_rustls::TlsAcceptor::from(config).accept(self).await?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_unix_socket_gets_its_mode_replaces_a_stale_file_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let addr = ListenAddr::Unix(path.clone());
        let listener = Listener::bind(&addr, 0o600).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second daemon on the same path is refused while the first
        // serves.
        let err = Listener::bind(&addr, 0o600).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        drop(listener);
        assert!(!path.exists(), "removed on drop");
        // A socket file left by a crash (nobody listens) is replaced.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        assert!(path.exists());
        let _again = Listener::bind(&addr, 0o660).await.unwrap();
        // A regular file is not ours to delete.
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = Listener::bind(&ListenAddr::Unix(file), 0o660)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }
}
