//! NATS decentralised authentication for tests, as `nsc` would set it up:
//! an operator, a system account, one account with JetStream, and a user
//! of it, each an
//! nkey with a JWT signed by its issuer; a server configuration that
//! trusts the operator and preloads the account (rewritten to revoke a
//! user); and the users' `.creds` files, which clients present.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;

/// The files of an operator-mode NATS setup in one directory.
pub struct OperatorMode {
    /// The `nats-server -c` configuration (operator, resolver, preloaded
    /// account).
    pub server_config: PathBuf,
    /// A user's credentials file (JWT and nkey seed).
    pub creds: PathBuf,
    /// The public key of that user.
    pub user: String,
    /// Credentials of a user signed by an account the server does not
    /// know.
    pub stranger_creds: PathBuf,
    operator: KeyPair,
    operator_path: PathBuf,
    account: KeyPair,
    system: KeyPair,
}

impl OperatorMode {
    /// Writes the keys, JWTs, server configuration and credentials into
    /// `dir`.
    pub fn new(dir: &Path) -> OperatorMode {
        let operator = KeyPair::new_operator();
        let operator_jwt = jwt(
            &operator,
            &operator.public_key(),
            "test-operator",
            serde_json::json!({"type": "operator", "version": 2}),
        );
        let operator_path = dir.join("operator.jwt");
        std::fs::write(&operator_path, &operator_jwt).unwrap();
        let mut mode = OperatorMode {
            server_config: dir.join("nats-server.conf"),
            creds: dir.join("member.creds"),
            user: String::new(),
            stranger_creds: dir.join("stranger.creds"),
            operator,
            operator_path,
            account: KeyPair::new_account(),
            // JetStream needs a system account.
            system: KeyPair::new_account(),
        };
        mode.write_server_config(&[]);
        let (text, user) = user_creds(&mode.account, "member");
        std::fs::write(&mode.creds, text).unwrap();
        mode.user = user;
        let (stranger, _) = user_creds(&KeyPair::new_account(), "stranger");
        std::fs::write(&mode.stranger_creds, stranger).unwrap();
        mode
    }

    /// Rewrites the server configuration with the account's users of
    /// `revoked` (public keys) revoked: JWTs issued to them until a minute
    /// from now are refused once the server reads the file again.
    pub fn write_server_config(&self, revoked: &[&str]) {
        let until = unix_now() + 60;
        let revocations: serde_json::Map<String, serde_json::Value> = revoked
            .iter()
            .map(|user| (user.to_string(), until.into()))
            .collect();
        let account_jwt = jwt(
            &self.operator,
            &self.account.public_key(),
            "test-account",
            serde_json::json!({
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1,
                    "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
                    "mem_storage": -1, "disk_storage": -1, "streams": -1,
                    "consumer": -1,
                },
                "revocations": revocations,
                "type": "account",
                "version": 2,
            }),
        );
        let system_jwt = jwt(
            &self.operator,
            &self.system.public_key(),
            "SYS",
            serde_json::json!({"type": "account", "version": 2}),
        );
        std::fs::write(
            &self.server_config,
            format!(
                "operator: \"{}\"\nsystem_account: {system_key}\nresolver: MEMORY\n\
                 resolver_preload: {{\n  {system_key}: \"{system_jwt}\"\n  {}: \"{account_jwt}\"\n}}\n",
                self.operator_path.display(),
                self.account.public_key(),
                system_key = self.system.public_key(),
            ),
        )
        .unwrap();
    }

    /// The text of a `.creds` file for a new user of the account, and the
    /// user's public key.
    pub fn new_user(&self, name: &str) -> (String, String) {
        user_creds(&self.account, name)
    }
}

/// Seconds since the epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A new user of `account`: the text of its `.creds` file and its public
/// key.
fn user_creds(account: &KeyPair, name: &str) -> (String, String) {
    let user = KeyPair::new_user();
    let user_jwt = jwt(
        account,
        &user.public_key(),
        name,
        serde_json::json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        }),
    );
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    (text, user.public_key())
}

/// A NATS JWT (`ed25519-nkey`) for `subject`, signed by `issuer`.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let issued = unix_now();
    let claims = serde_json::json!({
        "jti": format!("{subject}-{issued}"),
        "iat": issued,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}
