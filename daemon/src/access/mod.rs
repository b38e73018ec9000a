//! Who may use the daemon, and how much: the tokens of
//! `[server] auth_token_file` ([`tokens`]), where a request carries one
//! ([`credentials`]), who the client is ([`peer`]), per-client rate limits
//! ([`rate_limit`]), and the log of refused requests ([`refusals`]).
//!
//! Pure logic with no HTTP types: the gate in front of the router
//! (`http::gate`) calls into it.

pub mod credentials;
pub mod peer;
pub mod rate_limit;
pub mod refusals;
pub mod tokens;

pub use peer::Peer;
pub use rate_limit::{ClientKey, Limit, RateLimiter};
pub use refusals::RefusalLog;
pub use tokens::{TokenFileError, TokenId, TokenSet};
