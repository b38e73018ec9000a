//! TLS with rustls and its `ring` provider: the server's certificate and
//! key (`[server] tls_cert_file`, `tls_key_file`), optional client
//! certificates (`tls_client_ca_file`, mutual TLS), and the trust roots
//! of a client (the generator's `ca_file`). Everything is read from PEM
//! files; no OpenSSL.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The system's trust roots on Debian (the `ca-certificates` package),
/// used by a client without a `ca_file`.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why TLS cannot be set up from the files given.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No PEM certificate in a file that should hold some.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// No PEM private key.
    #[error(
        "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1: -----BEGIN PRIVATE KEY-----)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the material (a key that does not match the
    /// certificate, an unusable CA).
    #[error("{what}: {source}")]
    Refused {
        /// What was being set up.
        what: String,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// A server's TLS settings, built from files. Two are equal when the
/// files held the same bytes, so a reload applies a renewed certificate
/// and leaves an unchanged one alone.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    /// Whether clients must present a certificate.
    pub client_auth: bool,
    /// A hash of the files' contents.
    digest: u64,
}

impl ServerTls {
    /// Reads the certificate chain, the key, and (for mutual TLS) the CA
    /// that signs client certificates.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let chain = certificates(&cert_pem, cert)?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|_| TlsError::NoKey { path: key.into() })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| refused("TLS protocol versions", source))?;
        let mut hasher = std::hash::DefaultHasher::new();
        (&cert_pem, &key_pem).hash(&mut hasher);
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let ca_pem = read(ca)?;
                ca_pem.hash(&mut hasher);
                let roots = root_store(&ca_pem, ca)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::Refused {
                            what: format!("client CA {}", ca.display()),
                            source: rustls::Error::General(e.to_string()),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, private_key)
            .map_err(|source| {
                refused(
                    &format!(
                        "certificate {} with key {} (does the key belong to the certificate?)",
                        cert.display(),
                        key.display()
                    ),
                    source,
                )
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            client_auth: client_ca.is_some(),
            digest: hasher.finish(),
        })
    }

    /// The rustls configuration to accept connections with.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.client_auth == other.client_auth
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

/// A client's TLS settings: the CAs it trusts. Equal when built from the
/// same bytes.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    digest: u64,
}

impl ClientTls {
    /// Trusts the CAs of `ca_file`, or the system's
    /// ([`SYSTEM_CA_BUNDLE`]) when `None`.
    pub fn from_ca_file(ca_file: Option<&Path>) -> Result<Self, TlsError> {
        let path = ca_file.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
        let pem = read(path)?;
        let mut hasher = std::hash::DefaultHasher::new();
        pem.hash(&mut hasher);
        Ok(ClientTls {
            config: client_config(&pem, path)?,
            digest: hasher.finish(),
        })
    }

    /// The rustls configuration to connect with.
    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientTls(..)")
    }
}

/// A client configuration trusting the CAs in `pem` (read from `path`).
fn client_config(pem: &[u8], path: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = root_store(pem, path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| refused("TLS protocol versions", source))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Unreadable {
        path: path.into(),
        source,
    })
}

fn refused(what: &str, source: rustls::Error) -> TlsError {
    TlsError::Refused {
        what: what.to_owned(),
        source,
    }
}

/// Every certificate of a PEM file, in order.
fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(chain)
}

/// The CAs of a PEM file as trust roots.
fn root_store(pem: &[u8], path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates(pem, path)?);
    if added == 0 {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_pem_say_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = ServerTls::from_files(&empty, &empty, None).unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
        let missing = dir.path().join("missing.pem");
        let err = ClientTls::from_ca_file(Some(&missing)).unwrap_err();
        assert!(err.to_string().starts_with("cannot read"), "{err}");
    }
}
