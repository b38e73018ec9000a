//! NATS decentralised authentication for tests, as `nsc` would set it up:
//! an operator, a system account, one account with JetStream, and a user
//! of it, each an
//! nkey with a JWT signed by its issuer; a server configuration that
//! trusts the operator and preloads the account; and the user's
//! `.creds` file, which clients present.

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
    /// Credentials of a user signed by an account the server does not
    /// know.
    pub stranger_creds: PathBuf,
}

impl OperatorMode {
    /// Writes the keys, JWTs, server configuration and credentials into
    /// `dir`.
    pub fn new(dir: &Path) -> OperatorMode {
        let operator = KeyPair::new_operator();
        let account = KeyPair::new_account();
        let operator_jwt = jwt(
            &operator,
            &operator.public_key(),
            "test-operator",
            serde_json::json!({"type": "operator", "version": 2}),
        );
        let account_jwt = jwt(
            &operator,
            &account.public_key(),
            "test-account",
            serde_json::json!({
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1,
                    "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
                    "mem_storage": -1, "disk_storage": -1, "streams": -1,
                    "consumer": -1,
                },
                "type": "account",
                "version": 2,
            }),
        );
        // JetStream needs a system account.
        let system = KeyPair::new_account();
        let system_jwt = jwt(
            &operator,
            &system.public_key(),
            "SYS",
            serde_json::json!({"type": "account", "version": 2}),
        );
        let operator_path = dir.join("operator.jwt");
        std::fs::write(&operator_path, &operator_jwt).unwrap();
        let server_config = dir.join("nats-server.conf");
        std::fs::write(
            &server_config,
            format!(
                "operator: \"{}\"\nsystem_account: {system_key}\nresolver: MEMORY\n\
                 resolver_preload: {{\n  {system_key}: \"{system_jwt}\"\n  {}: \"{account_jwt}\"\n}}\n",
                operator_path.display(),
                account.public_key(),
                system_key = system.public_key(),
            ),
        )
        .unwrap();
        let creds = dir.join("member.creds");
        std::fs::write(&creds, user_creds(&account, "member")).unwrap();
        let stranger_creds = dir.join("stranger.creds");
        std::fs::write(
            &stranger_creds,
            user_creds(&KeyPair::new_account(), "stranger"),
        )
        .unwrap();
        OperatorMode {
            server_config,
            creds,
            stranger_creds,
        }
    }
}

/// A new user of `account`, as the text of a `.creds` file.
fn user_creds(account: &KeyPair, name: &str) -> String {
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
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    )
}

/// A NATS JWT (`ed25519-nkey`) for `subject`, signed by `issuer`.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let issued = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
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
