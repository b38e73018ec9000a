//! `[cluster]`: joins the daemon to a cluster of members that share the
//! series through NATS JetStream ([`crate::cluster`]). Without the table the
//! daemon runs alone. Every key is read at start only: a change waits for a
//! restart (the partition count is fixed for the life of the stream).

use std::fmt::Write as _;
use std::ops::Bound;
use std::path::PathBuf;
use std::time::Duration;

use super::toml_walk::quote;
use super::{Document, KeyTable, Spanned, TomlValue};
use toml::de::DeValue;

/// The most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// Longest `subject_prefix`.
const MAX_PREFIX_BYTES: usize = 32;
/// Longest `instance_id`.
pub const MAX_INSTANCE_ID_BYTES: usize = 128;

/// `lease_renew`: 100 ms to 10 min.
pub(super) const RENEW: (Bound<Duration>, Bound<Duration>) = (
    Bound::Included(Duration::from_millis(100)),
    Bound::Included(Duration::from_secs(600)),
);
/// `lease_ttl`: 300 ms to 1 h.
pub(super) const TTL: (Bound<Duration>, Bound<Duration>) = (
    Bound::Included(Duration::from_millis(300)),
    Bound::Included(Duration::from_secs(3600)),
);

/// `[cluster]`: how this member reaches NATS and shares the partitions.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222` (`tls://` for TLS).
    pub nats_url: String,
    /// A NATS credentials file (JWT and NKey seed), as `nats` tools take it.
    pub nats_creds_file: Option<PathBuf>,
    /// CA certificates (PEM) that sign the NATS server's certificate;
    /// setting it requires TLS.
    pub nats_ca_file: Option<PathBuf>,
    /// Prefix of every subject, stream and bucket.
    pub subject_prefix: String,
    /// Partitions of the series; fixed for the life of the stream.
    pub partitions: u32,
    /// This member's name, unique in the cluster; `None`: hostname plus
    /// the port of `[server] listen`.
    pub instance_id: Option<String>,
    /// How often this member renews its leases.
    pub lease_renew: Duration,
    /// How long an unrenewed lease lasts.
    pub lease_ttl: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats_url: String::new(),
            nats_creds_file: None,
            nats_ca_file: None,
            subject_prefix: "anomalyd".into(),
            partitions: 64,
            instance_id: None,
            lease_renew: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(10),
        }
    }
}

impl ClusterConfig {
    /// Appends the `[cluster]` table of [`super::Config::to_toml`].
    pub(super) fn write_toml(&self, out: &mut String) {
        out.push_str("\n[cluster]\n");
        let _ = writeln!(out, "nats_url = {}", quote(&self.nats_url));
        for (key, path) in [
            ("nats_creds_file", &self.nats_creds_file),
            ("nats_ca_file", &self.nats_ca_file),
        ] {
            match path {
                Some(path) => {
                    let _ = writeln!(out, "{key} = {}", path.toml());
                }
                None => {
                    let _ = writeln!(out, "# {key} = (unset)");
                }
            }
        }
        let _ = writeln!(out, "subject_prefix = {}", quote(&self.subject_prefix));
        let _ = writeln!(out, "partitions = {}", self.partitions);
        match &self.instance_id {
            Some(id) => {
                let _ = writeln!(out, "instance_id = {}", quote(id));
            }
            None => out.push_str("# instance_id = (unset: hostname and listen port)\n"),
        }
        let _ = writeln!(out, "lease_renew = {}", self.lease_renew.toml());
        let _ = writeln!(out, "lease_ttl = {}", self.lease_ttl.toml());
    }

    /// Problems across keys, as (key, message).
    pub(super) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.nats_url.is_empty() {
            problems.push((
                "nats_url",
                "[cluster] needs nats_url, e.g. \"nats://127.0.0.1:4222\"; remove [cluster] to run alone"
                    .to_owned(),
            ));
        }
        if self.lease_ttl < self.lease_renew * 2 {
            problems.push((
                "lease_ttl",
                format!(
                    "lease_ttl ({}) must be at least twice lease_renew ({}), or a member that renews on time can lose its leases",
                    self.lease_ttl.toml(),
                    self.lease_renew.toml()
                ),
            ));
        }
        problems
    }
}

/// `nats_url`: one or more comma-separated `nats://`, `tls://` or bare
/// `host:port` URLs.
pub(super) fn check_nats_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(
            "expected a NATS URL such as \"nats://127.0.0.1:4222\", found an empty string".into(),
        );
    }
    for url in text.split(',') {
        let url = url.trim();
        let rest = url
            .strip_prefix("nats://")
            .or_else(|| url.strip_prefix("tls://"))
            .unwrap_or(url);
        if rest.is_empty() || rest.contains("://") || rest.contains(char::is_whitespace) {
            return Err(format!(
                "`{url}` is not a NATS URL; write \"nats://host:4222\" (or \"tls://host:4222\")"
            ));
        }
    }
    Ok(text.to_owned())
}

/// `subject_prefix`: letters, digits, `_` and `-`, since it also names
/// streams and buckets.
pub(super) fn check_prefix(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= MAX_PREFIX_BYTES
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a valid subject prefix: use 1 to {MAX_PREFIX_BYTES} letters, digits, `_` or `-` (it names NATS subjects, streams and buckets)"
        ))
    }
}

/// `instance_id`: visible ASCII, 1 to [`MAX_INSTANCE_ID_BYTES`] bytes.
pub fn check_instance_id(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= MAX_INSTANCE_ID_BYTES
        && text.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a valid instance id: use 1 to {MAX_INSTANCE_ID_BYTES} visible ASCII characters, unique in the cluster"
        ))
    }
}

key_table! {
    /// The `[cluster]` keys one file sets.
    pub(super) struct ClusterKeys => ClusterConfig {
        nats_url: String = |d, k, v| {
            let text = d.string(k, v)?;
            check_nats_url(text).map_err(|m| d.report(Some(k), Some(v.span()), m)).ok()
        },
        nats_creds_file: PathBuf = |d, k, v| d.path_buf(k, v),
        nats_ca_file: PathBuf = |d, k, v| d.path_buf(k, v),
        subject_prefix: String = |d, k, v| {
            let text = d.string(k, v)?;
            check_prefix(text).map_err(|m| d.report(Some(k), Some(v.span()), m)).ok()
        },
        partitions: u32 = |d, k, v| d.integer(k, v, 1..=MAX_PARTITIONS),
        instance_id: String = |d, k, v| {
            let text = d.string(k, v)?;
            check_instance_id(text).map_err(|m| d.report(Some(k), Some(v.span()), m)).ok()
        },
        lease_renew: Duration = |d, k, v| d.duration(k, v, RENEW),
        lease_ttl: Duration = |d, k, v| d.duration(k, v, TTL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_toml_str(text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_means_alone_and_present_takes_the_defaults() {
        assert_eq!(parse("").unwrap().cluster, None);
        let cluster = parse("[cluster]\nnats_url = \"nats://127.0.0.1:4222\"\n")
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(
            cluster,
            ClusterConfig {
                nats_url: "nats://127.0.0.1:4222".into(),
                ..ClusterConfig::default()
            }
        );
        assert_eq!(cluster.partitions, 64);
        assert_eq!(cluster.lease_renew, Duration::from_secs(2));
        assert_eq!(cluster.lease_ttl, Duration::from_secs(10));
        assert_eq!(cluster.subject_prefix, "anomalyd");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, expected) in [
            ("[cluster]\n", "cluster.nats_url"),
            (
                "[cluster]\nnats_url = \"http://x:80\"\n",
                "cluster.nats_url",
            ),
            (
                "[cluster]\nnats_url = \"nats://a:1\"\npartitions = 0\n",
                "cluster.partitions",
            ),
            (
                "[cluster]\nnats_url = \"nats://a:1\"\npartitions = 5000\n",
                "cluster.partitions",
            ),
            (
                "[cluster]\nnats_url = \"nats://a:1\"\nsubject_prefix = \"a.b\"\n",
                "cluster.subject_prefix",
            ),
            (
                "[cluster]\nnats_url = \"nats://a:1\"\ninstance_id = \"a b\"\n",
                "cluster.instance_id",
            ),
            (
                "[cluster]\nnats_url = \"nats://a:1\"\nlease_renew = \"5s\"\nlease_ttl = \"6s\"\n",
                "cluster.lease_ttl",
            ),
            (
                "[cluster]\nnats_url = \"nats://a:1\"\nleases = 3\n",
                "cluster.leases",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn to_toml_round_trips() {
        for text in [
            "",
            "[cluster]\nnats_url = \"nats://10.0.0.1:4222,nats://10.0.0.2:4222\"\n",
            "[cluster]\nnats_url = \"tls://n:4222\"\nnats_creds_file = \"/etc/a.creds\"\n\
             nats_ca_file = \"/etc/ca.pem\"\nsubject_prefix = \"ad-1\"\npartitions = 8\n\
             instance_id = \"web-1:8080\"\nlease_renew = \"500ms\"\nlease_ttl = \"3s\"\n",
        ] {
            let config = parse(text).unwrap();
            let printed = config.to_toml();
            let again = parse(&printed).unwrap();
            assert_eq!(again.cluster, config.cluster, "{printed}");
        }
    }
}
