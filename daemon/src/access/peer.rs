//! Who is at the other end of a connection: a TCP client's address, or a
//! client on a unix socket with the user id the kernel vouches for. The
//! rate limits key on it and the refusal log names it.

use std::fmt;
use std::net::IpAddr;

/// The other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TCP client at this address.
    Ip(IpAddr),
    /// A client on a unix socket; `uid` is its user id (`SO_PEERCRED`),
    /// `None` when the kernel could not say.
    Local {
        /// The connecting process' user id.
        uid: Option<u32>,
    },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(addr) => write!(f, "{addr}"),
            Peer::Local { uid: Some(uid) } => write!(f, "unix socket (uid {uid})"),
            Peer::Local { uid: None } => write!(f, "unix socket"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_shows_as_its_address_or_its_uid() {
        assert_eq!(
            Peer::Ip("192.0.2.7".parse().unwrap()).to_string(),
            "192.0.2.7"
        );
        assert_eq!(
            Peer::Ip("2001:db8::1".parse().unwrap()).to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            Peer::Local { uid: Some(1000) }.to_string(),
            "unix socket (uid 1000)"
        );
        assert_eq!(Peer::Local { uid: None }.to_string(), "unix socket");
    }
}
