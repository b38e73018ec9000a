//! The bearer tokens of `[server] auth_token_file`: reading the file,
//! checking a presented token against the set in constant time, and the
//! dashboard's session values derived from them.
//!
//! A session value is HMAC-SHA256 keyed with a token over a fixed label,
//! in hex: the dashboard's cookie holds it instead of the token, so a
//! leaked cookie cannot be sent as a token (it reads, never writes), and
//! it stops working when its token is rotated out.

use std::fmt;
use std::io;
use std::path::Path;

use crate::fnv::fnv1a;

/// Fewest bytes a token may have: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The tokens a client may present. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    tokens: Vec<Box<[u8]>>,
    /// The session value of each token, in the same order.
    sessions: Vec<Box<[u8]>>,
}

/// What a session value is the HMAC of (versioned, so that a new scheme
/// invalidates old cookies instead of misreading them).
const SESSION_LABEL: &[u8] = b"anomalyd dashboard session v1";

/// The dashboard session value for `token` (64 hex digits).
fn session_of(token: &[u8]) -> Box<[u8]> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token);
    let tag = ring::hmac::sign(&key, SESSION_LABEL);
    let hex: String = tag
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    hex.into_bytes().into_boxed_slice()
}

/// Which token of a [`TokenSet`] a client presented: a stable, non-secret
/// key (a hash of the token) for per-client state such as rate limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenId(pub u64);

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A line is not a usable token.
    #[error("{path} line {line}: {problem}")]
    BadLine {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the token itself).
        problem: String,
    },
    /// No token at all: every request would be refused.
    #[error(
        "{path} holds no token, so every request would be refused; put one token per line (generate one with `openssl rand -hex 32`)"
    )]
    Empty {
        /// The file.
        path: String,
    },
}

impl TokenSet {
    /// Reads the token file at `path` (see [`TokenSet::parse`]).
    pub fn read(path: &Path) -> Result<TokenSet, TokenFileError> {
        let text = std::fs::read(path).map_err(|source| TokenFileError::Unreadable {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses a token file: one token per line, surrounding blanks
    /// ignored, blank lines and lines starting with `#` skipped. A token
    /// is at least [`MIN_TOKEN_LEN`] visible ASCII characters (it travels
    /// in an HTTP header). `path` names the file in errors.
    pub fn parse(text: &[u8], path: &str) -> Result<TokenSet, TokenFileError> {
        let mut tokens: Vec<Box<[u8]>> = Vec::new();
        for (index, line) in text.split(|&b| b == b'\n').enumerate() {
            let token = line.trim_ascii();
            if token.is_empty() || token.starts_with(b"#") {
                continue;
            }
            let bad = |problem: String| TokenFileError::BadLine {
                path: path.to_owned(),
                line: index + 1,
                problem,
            };
            if let Some(at) = token.iter().position(|b| !b.is_ascii_graphic()) {
                return Err(bad(format!(
                    "character {} is not visible ASCII; a token may hold letters, digits and punctuation only",
                    at + 1
                )));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(format!(
                    "the token is {} characters long, fewer than {MIN_TOKEN_LEN}; use a long random one (`openssl rand -hex 32`)",
                    token.len()
                )));
            }
            if !tokens.iter().any(|known| known.as_ref() == token) {
                tokens.push(token.into());
            }
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty {
                path: path.to_owned(),
            });
        }
        let sessions = tokens.iter().map(|token| session_of(token)).collect();
        Ok(TokenSet { tokens, sessions })
    }

    /// The file's first token: the one a client reading the same file
    /// (the generator) sends.
    pub fn first(&self) -> &[u8] {
        &self.tokens[0]
    }

    /// How many distinct tokens the set holds.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the set is empty (never, for a set read from a file).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of `presented` when it is one of the tokens. Every token is
    /// compared, each in time that depends only on the lengths, so the
    /// time taken does not tell how much of a guess was right.
    pub fn check(&self, presented: &[u8]) -> Option<TokenId> {
        Self::find(&self.tokens, presented).map(|at| self.id(at))
    }

    /// The id of the token whose session value `presented` is (the
    /// dashboard's cookie), compared as [`TokenSet::check`] compares.
    pub fn check_session(&self, presented: &[u8]) -> Option<TokenId> {
        Self::find(&self.sessions, presented).map(|at| self.id(at))
    }

    /// The session value for `token`, which must be one of the set's
    /// (`None` otherwise): what `POST /login` puts in the cookie.
    pub fn session_for(&self, token: &[u8]) -> Option<String> {
        let at = Self::find(&self.tokens, token)?;
        Some(String::from_utf8_lossy(&self.sessions[at]).into_owned())
    }

    /// Where `presented` is in `values`, comparing with every one.
    fn find(values: &[Box<[u8]>], presented: &[u8]) -> Option<usize> {
        let mut found = None;
        for (at, value) in values.iter().enumerate() {
            if constant_time_eq(value, presented) {
                found = Some(at);
            }
        }
        found
    }

    /// The id of the token at `at`: stable across reloads, so a client
    /// keeps its rate-limit bucket when the token file is re-read.
    fn id(&self, at: usize) -> TokenId {
        TokenId(fnv1a(&self.tokens[at]))
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSet({} tokens)", self.tokens.len())
    }
}

/// Whether `a == b`, looking at every byte of both whatever they hold:
/// the time depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= u64::from(x ^ y);
    }
    // Keep the optimiser from turning the loop into an early exit.
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123";
    const B: &str = "fedcba9876543210fedc";

    #[test]
    fn comments_blanks_and_duplicates_are_skipped() {
        let text = format!("# tokens\n\n  {A}  \r\n{B}\n{A}\n   # indented comment\n");
        let set = TokenSet::parse(text.as_bytes(), "t").unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.check(A.as_bytes()).is_some());
        assert!(set.check(B.as_bytes()).is_some());
        assert_ne!(set.check(A.as_bytes()), set.check(B.as_bytes()));
    }

    #[test]
    fn wrong_prefix_or_extension_is_refused() {
        let set = TokenSet::parse(A.as_bytes(), "t").unwrap();
        assert!(set.check(&A.as_bytes()[..A.len() - 1]).is_none());
        assert!(set.check(format!("{A}x").as_bytes()).is_none());
        assert!(set.check(b"").is_none());
        assert!(set.check(A.to_uppercase().as_bytes()).is_none());
    }

    #[test]
    fn short_invisible_and_empty_files_are_errors_that_do_not_echo_the_token() {
        let short = TokenSet::parse(b"# c\nshort-token\n", "/etc/t").unwrap_err();
        let text = short.to_string();
        assert!(text.contains("/etc/t line 2"), "{text}");
        assert!(!text.contains("short-token"), "{text}");
        let spaced = TokenSet::parse(b"0123456789 abcdef0123\n", "t").unwrap_err();
        assert!(spaced.to_string().contains("character 11"), "{spaced}");
        let empty = TokenSet::parse(b"# nothing\n\n", "t").unwrap_err();
        assert!(matches!(empty, TokenFileError::Empty { .. }), "{empty}");
    }

    #[test]
    fn a_session_value_reads_as_its_token_but_is_not_one() {
        let set = TokenSet::parse(format!("{A}\n{B}\n").as_bytes(), "t").unwrap();
        let session = set.session_for(A.as_bytes()).unwrap();
        assert_eq!(session.len(), 64);
        assert!(!session.contains(A));
        assert_eq!(
            set.check_session(session.as_bytes()),
            set.check(A.as_bytes())
        );
        assert_ne!(set.session_for(A.as_bytes()), set.session_for(B.as_bytes()));
        // Neither passes for the other.
        assert_eq!(set.check(session.as_bytes()), None);
        assert_eq!(set.check_session(A.as_bytes()), None);
        assert_eq!(set.session_for(b"not-a-token-of-the-set"), None);
        // Rotated out, the session stops working.
        let rotated = TokenSet::parse(B.as_bytes(), "t").unwrap();
        assert_eq!(rotated.check_session(session.as_bytes()), None);
    }

    #[test]
    fn debug_hides_tokens() {
        let set = TokenSet::parse(A.as_bytes(), "t").unwrap();
        assert_eq!(format!("{set:?}"), "TokenSet(1 tokens)");
    }
}
