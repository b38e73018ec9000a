//! `[server] listen`: a TCP address, or a unix socket path as
//! `unix:/run/anomalyd/anomalyd.sock`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the main listener binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address and port.
    Tcp(SocketAddr),
    /// A unix stream socket at an absolute path.
    Unix(PathBuf),
}

impl ListenAddr {
    /// The TCP address, if it is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Tcp(addr) => Some(*addr),
            ListenAddr::Unix(_) => None,
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        ListenAddr::Tcp(addr)
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Why a `listen` value is not an address.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListenAddrError {
    /// `unix:` with a relative or empty path.
    #[error("a unix socket needs an absolute path, e.g. \"unix:/run/anomalyd/anomalyd.sock\"")]
    RelativeUnixPath,
    /// A unix path longer than `sun_path` holds.
    #[error("a unix socket path may be at most 107 bytes long (the kernel's limit)")]
    UnixPathTooLong,
    /// Neither form.
    #[error("not a socket address, nor unix: and a path")]
    Invalid,
}

impl FromStr for ListenAddr {
    type Err = ListenAddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(ListenAddrError::RelativeUnixPath);
            }
            if path.len() > 107 {
                return Err(ListenAddrError::UnixPathTooLong);
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        text.parse()
            .map(ListenAddr::Tcp)
            .map_err(|_| ListenAddrError::Invalid)
    }
}

/// Parses `socket_mode`: an octal string of permission bits, such as
/// `"0660"`.
pub fn parse_socket_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err("expected octal permission bits as a string, e.g. \"0660\"".into());
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|e| e.to_string())?;
    if mode > 0o777 {
        return Err("only permission bits (at most \"0777\") may be set".into());
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse_and_print_back() {
        for text in [
            "127.0.0.1:8001",
            "[::1]:9",
            "unix:/run/anomalyd/anomalyd.sock",
        ] {
            let addr: ListenAddr = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!(
            "unix:run/a.sock".parse::<ListenAddr>(),
            Err(ListenAddrError::RelativeUnixPath)
        );
        assert_eq!(
            format!("unix:/{}", "a".repeat(107)).parse::<ListenAddr>(),
            Err(ListenAddrError::UnixPathTooLong)
        );
        assert_eq!(
            "localhost:80".parse::<ListenAddr>(),
            Err(ListenAddrError::Invalid)
        );
    }

    #[test]
    fn socket_modes_are_octal_permission_bits() {
        assert_eq!(parse_socket_mode("0660"), Ok(0o660));
        assert_eq!(parse_socket_mode("600"), Ok(0o600));
        assert_eq!(parse_socket_mode("0o777"), Ok(0o777));
        for bad in ["", "0668", "4755", "rw-rw----", "06600"] {
            assert!(parse_socket_mode(bad).is_err(), "{bad}");
        }
    }
}
