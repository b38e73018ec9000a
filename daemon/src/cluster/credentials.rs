//! The NATS user credentials of `[cluster] nats_creds_file` (a `.creds`
//! file as `nsc` writes it: the user's JWT and nkey seed between dashed
//! markers), read again at every connection and reconnection, so that a
//! rotated file (a new user, or a JWT re-issued before the old one
//! expires) is used without a restart.

use std::path::{Path, PathBuf};

use super::ClusterError;

/// A user's JWT and the key that signs the server's nonce.
pub struct UserCredentials {
    jwt: String,
    key: nkeys::KeyPair,
}

impl std::fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserCredentials(..)")
    }
}

impl UserCredentials {
    /// Parses the text of a `.creds` file.
    pub fn parse(text: &str) -> Result<UserCredentials, String> {
        let jwt = after_marker(text, "NATS USER JWT")
            .ok_or("no user JWT (a `-----BEGIN NATS USER JWT-----` block) in it")?;
        let seed = after_marker(text, "USER NKEY SEED")
            .ok_or("no nkey seed (a `-----BEGIN USER NKEY SEED-----` block) in it")?;
        let key = nkeys::KeyPair::from_seed(seed)
            .map_err(|e| format!("its nkey seed is not valid: {e}"))?;
        Ok(UserCredentials {
            jwt: jwt.to_owned(),
            key,
        })
    }

    /// Reads and parses the `.creds` file at `path`.
    pub fn read(path: &Path) -> Result<UserCredentials, ClusterError> {
        let problem = |reason: String| ClusterError::Credentials {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| problem(format!("nats_creds_file cannot be read: {e}")))?;
        UserCredentials::parse(&text)
            .map_err(|e| problem(format!("nats_creds_file is not a NATS .creds file: {e}")))
    }

    /// What the client sends: the JWT and `nonce` signed with the key.
    fn auth(&self, nonce: &[u8]) -> Result<async_nats::Auth, String> {
        let signature = self
            .key
            .sign(nonce)
            .map_err(|e| format!("cannot sign the server's nonce: {e}"))?;
        let mut auth = async_nats::Auth::new();
        auth.jwt = Some(self.jwt.clone());
        auth.signature = Some(signature);
        Ok(auth)
    }
}

/// The line after the `-----BEGIN <what>-----` marker line, trimmed.
fn after_marker<'a>(text: &'a str, what: &str) -> Option<&'a str> {
    let mut lines = text.lines();
    lines.find(|line| {
        let line = line.trim();
        line.starts_with("---") && line.contains(&format!("BEGIN {what}"))
    })?;
    lines
        .map(str::trim)
        .find(|line| !line.is_empty())
        .filter(|line| !line.starts_with("---"))
}

/// Connection options that read `path` at every (re)connection. A file
/// that cannot be read or parsed then fails that attempt (the client
/// retries), so check it once with [`UserCredentials::read`] first.
pub fn options_reading(path: PathBuf) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::with_auth_callback(move |nonce| {
        let read = UserCredentials::read(&path).map_err(|e| e.to_string());
        async move {
            read.and_then(|credentials| credentials.auth(&nonce))
                .map_err(async_nats::AuthError::new)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.creds` file for a new user (the JWT is not checked here).
    fn creds_text(seed: &str) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\neyJ0eXAi.eyJqdGki.c2ln\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
    }

    #[test]
    fn a_creds_file_gives_its_jwt_and_a_key_that_signs_the_nonce() {
        let user = nkeys::KeyPair::new_user();
        let credentials = UserCredentials::parse(&creds_text(&user.seed().unwrap())).unwrap();
        let auth = credentials.auth(b"nonce-123").unwrap();
        assert_eq!(auth.jwt.as_deref(), Some("eyJ0eXAi.eyJqdGki.c2ln"));
        user.verify(b"nonce-123", &auth.signature.unwrap())
            .expect("signed by the user's key");
        // CRLF line ends, as a file edited on Windows has.
        let crlf = creds_text(&user.seed().unwrap()).replace('\n', "\r\n");
        assert!(UserCredentials::parse(&crlf).is_ok());
    }

    #[test]
    fn what_is_missing_or_wrong_is_named() {
        let no_jwt = "-----BEGIN USER NKEY SEED-----\nSUAX\n------END USER NKEY SEED------\n";
        assert!(
            UserCredentials::parse(no_jwt)
                .unwrap_err()
                .contains("no user JWT")
        );
        let seed_only = creds_text("").replace("-----BEGIN USER NKEY SEED-----", "");
        assert!(
            UserCredentials::parse(&seed_only)
                .unwrap_err()
                .contains("no nkey seed")
        );
        let bad_seed = creds_text("SUNOTASEED");
        assert!(
            UserCredentials::parse(&bad_seed)
                .unwrap_err()
                .contains("seed is not valid")
        );
        let empty_block = creds_text("");
        assert!(
            UserCredentials::parse(&empty_block)
                .unwrap_err()
                .contains("no nkey seed")
        );
    }
}
