//! The connection to NATS and what a member needs there: the points and
//! anomalies streams, the KV bucket of the layout, members and leases, and
//! the object store of the partition snapshots. The first member creates
//! them; every member checks the layout against its own configuration.
//!
//! Debian's `nats-server` is 2.9: the client is built without the
//! features of later servers, and the KV bucket's stream is created here
//! (the client's own `create_key_value` reads an account-info field that
//! 2.9 does not send).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::ConnectErrorKind;
use async_nats::jetstream::{self, kv, object_store, stream};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::credentials::{self, UserCredentials};
use super::partition::{LAYOUT_KEY, Names};
use super::{ClusterError, Member};
use crate::config::ClusterConfig;
use crate::throttle::Throttle;

/// Bytes of the largest message the points stream takes (NATS' default
/// `max_payload` is 1 MiB; batches are split below it).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// What every member of one cluster must agree on, stored under the KV key
/// `layout` by the first member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// `[cluster] partitions`.
    pub partitions: u32,
    /// `[cluster] subject_prefix`.
    pub subject_prefix: String,
}

/// A member's handles on the cluster's NATS objects.
#[derive(Clone)]
pub struct Connection {
    /// The NATS client (reconnects by itself).
    pub client: async_nats::Client,
    /// JetStream.
    pub js: jetstream::Context,
    /// The points stream.
    pub points: stream::Stream,
    /// The KV bucket of layout, members and leases.
    pub kv: kv::Store,
    /// The object store of partition snapshots.
    pub snapshots: object_store::ObjectStore,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("state", &self.client.connection_state())
            .finish_non_exhaustive()
    }
}

/// Time between two tries of the first connection.
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// Opens the NATS connection, trying until it succeeds or `stop`
/// (`Ok(None)`): a NATS server that is down at start is waited for, each
/// failure kept in `member`'s connection error for `/ready`. Fails on
/// unreadable credentials, and when the server refuses them
/// (authorization violation), since trying again cannot help. Once
/// connected, the client reconnects by itself.
pub async fn open(
    member: &Member,
    stop: &CancellationToken,
) -> Result<Option<async_nats::Client>, ClusterError> {
    let config = &member.config;
    let mut attempts = 0u32;
    loop {
        let options = options(member).await?;
        let error = tokio::select! {
            () = stop.cancelled() => return Ok(None),
            connected = options.connect(config.nats_url.as_str()) => match connected {
                Ok(client) => {
                    member.set_connect_error(None);
                    return Ok(Some(client));
                }
                Err(e) => e,
            },
        };
        if matches!(
            error.kind(),
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication
        ) {
            return Err(ClusterError::Refused {
                url: config.nats_url.clone(),
                reason: error.to_string(),
                creds: config.nats_creds_file.clone(),
            });
        }
        attempts += 1;
        if attempts == 1 || attempts.is_multiple_of(30) {
            tracing::warn!(error = %error, url = %config.nats_url, "Cannot connect to NATS yet; retrying. /ready is 503 meanwhile.");
        }
        member.set_connect_error(Some(error.to_string()));
        tokio::select! {
            () = stop.cancelled() => return Ok(None),
            () = tokio::time::sleep(CONNECT_RETRY) => {}
        }
    }
}

/// The client's options from `[cluster]`. Every reconnection failure is
/// kept in `member`'s connection error for `/ready`, and a refusal of the
/// credentials is warned about (at most once a minute).
async fn options(member: &Member) -> Result<async_nats::ConnectOptions, ClusterError> {
    let config = &member.config;
    let options = match &config.nats_creds_file {
        Some(path) => {
            // Checked now, so that a missing or malformed file stops the
            // start; read again at every connection after.
            UserCredentials::read(path)?;
            credentials::options_reading(path.clone())
        }
        None => async_nats::ConnectOptions::new(),
    };
    let problem = member.connect_error_slot();
    let refusals = Arc::new(Mutex::new(Throttle::new(Duration::from_secs(60))));
    let creds_file = config.nats_creds_file.clone();
    let mut options = options
        .name(format!("anomalyd {}", member.instance_id))
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(20) as u64))
        .event_callback(move |event| {
            let (problem, refusals, creds_file) =
                (problem.clone(), refusals.clone(), creds_file.clone());
            async move {
                match event {
                    async_nats::Event::Connected => {
                        *problem.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        tracing::info!("Connected to NATS.");
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(
                            "Disconnected from NATS; reconnecting. Posts get 503 meanwhile."
                        )
                    }
                    async_nats::Event::ClientError(async_nats::ClientError::Other(error)) => {
                        let refused = is_refusal(&error);
                        let error = if refused {
                            format!("{error}: {}", refusal_advice(creds_file.as_deref()))
                        } else {
                            error
                        };
                        let allowed = refused
                            && refusals
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .allow(std::time::Instant::now())
                                .is_some();
                        if allowed {
                            tracing::warn!(error = %error, "NATS refuses this member on reconnecting; retrying (the credentials file is read again at every attempt).");
                        } else {
                            tracing::debug!(error = %error, "Cannot reconnect to NATS yet.");
                        }
                        *problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                    }
                    other => tracing::info!(event = %other, "NATS connection event."),
                }
            }
        });
    if let Some(path) = &config.nats_ca_file {
        if let Err(e) = std::fs::metadata(path) {
            return Err(ClusterError::Credentials {
                path: path.clone(),
                reason: e.to_string(),
            });
        }
        options = options
            .add_root_certificates(path.clone())
            .require_tls(true);
    }
    Ok(options)
}

/// Whether a connection error is the server refusing the credentials.
fn is_refusal(error: &str) -> bool {
    [
        ConnectErrorKind::AuthorizationViolation,
        ConnectErrorKind::Authentication,
    ]
    .iter()
    .any(|kind| error == kind.to_string())
}

/// What to check when the server refuses the member's credentials.
pub fn refusal_advice(creds_file: Option<&Path>) -> String {
    match creds_file {
        None => "the server wants credentials: set [cluster] nats_creds_file to a .creds file of a user of the cluster's account".to_owned(),
        Some(path) => format!(
            "check that the credentials in [cluster] nats_creds_file ({}) belong to a user of an account the server trusts, and that the user is not revoked or expired",
            path.display()
        ),
    }
}

/// Creates (or finds) the streams and buckets and checks the layout.
/// `max_age` is the points stream's retention; an existing stream that
/// keeps less is raised to it.
pub async fn set_up(
    client: async_nats::Client,
    config: &ClusterConfig,
    names: &Names,
    max_age: Duration,
) -> Result<Connection, ClusterError> {
    let js = jetstream::new(client.clone());
    let kv_stream = format!("KV_{}", names.kv_bucket());
    js.get_or_create_stream(stream::Config {
        name: kv_stream.clone(),
        description: Some("anomalyd cluster: layout, members and partition leases".into()),
        subjects: vec![format!("$KV.{}.>", names.kv_bucket())],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| setup_error(&kv_stream, e))?;
    let kv = js
        .get_key_value(names.kv_bucket())
        .await
        .map_err(|e| setup_error(&kv_stream, e))?;
    check_layout(&kv, config).await?;

    let points = ensure_stream(&js, points_config(names, max_age)).await?;
    ensure_stream(&js, anomalies_config(names, max_age)).await?;
    let bucket = names.snapshot_bucket();
    let snapshots = match js.get_object_store(&bucket).await {
        Ok(store) => store,
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: bucket.clone(),
                description: Some("anomalyd cluster: partition snapshots".into()),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| setup_error(&bucket, e))?,
    };
    Ok(Connection {
        client,
        js,
        points,
        kv,
        snapshots,
    })
}

/// Creates the stream `wanted` describes, or brings an existing one up to
/// it: its subjects (a stream created before the episodes had theirs) and
/// at least its `max_age` (a longer `snapshot_interval` needs more).
async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> Result<stream::Stream, ClusterError> {
    let name = wanted.name.clone();
    let mut found = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| setup_error(&name, e))?;
    let info = found.info().await.map_err(|e| setup_error(&name, e))?;
    let current = &info.config;
    if current.max_age >= wanted.max_age && current.subjects == wanted.subjects {
        return Ok(found);
    }
    let mut updated = current.clone();
    updated.max_age = current.max_age.max(wanted.max_age);
    updated.subjects = wanted.subjects;
    js.update_stream(&updated)
        .await
        .map_err(|e| setup_error(&name, e))?;
    tracing::info!(stream = %name, max_age_secs = updated.max_age.as_secs(), subjects = ?updated.subjects, "Updated the stream's subjects or raised its max_age (3 × [state] snapshot_interval, at least 15 min).");
    js.get_stream(&name)
        .await
        .map_err(|e| setup_error(&name, e))
}

/// The points stream: subjects `<prefix>.points.*`, limits retention,
/// `max_age`, file storage, messages of at most [`MAX_MESSAGE_BYTES`].
pub fn points_config(names: &Names, max_age: Duration) -> stream::Config {
    stream::Config {
        max_message_size: MAX_MESSAGE_BYTES as i32,
        ..limits_stream(
            names.points_stream(),
            "anomalyd cluster: points, one subject per partition",
            vec![names.points_subjects()],
            max_age,
        )
    }
}

/// The anomalies stream: subjects `<prefix>.anomalies.*` (anomaly
/// records) and `<prefix>.episodes.*` (closed episodes), the same
/// retention as the points.
pub fn anomalies_config(names: &Names, max_age: Duration) -> stream::Config {
    limits_stream(
        names.anomalies_stream(),
        "anomalyd cluster: anomaly records and closed episodes, one subject each per partition",
        names.anomalies_subjects(),
        max_age,
    )
}

/// A file-backed stream named `name` over `subjects`, with limits
/// retention: messages older than `max_age` go first.
fn limits_stream(
    name: String,
    description: &str,
    subjects: Vec<String>,
    max_age: Duration,
) -> stream::Config {
    stream::Config {
        name,
        description: Some(description.to_owned()),
        subjects,
        retention: stream::RetentionPolicy::Limits,
        max_age,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

/// What a failure about the layout key is about.
const LAYOUT_WHAT: &str = "the layout key";

/// The error of setting up `what` in JetStream.
fn setup_error(what: &str, reason: impl std::fmt::Display) -> ClusterError {
    ClusterError::Setup {
        what: what.to_owned(),
        reason: reason.to_string(),
    }
}

/// Writes the layout if no member has, else compares it with ours.
async fn check_layout(kv: &kv::Store, config: &ClusterConfig) -> Result<(), ClusterError> {
    let ours = Layout {
        partitions: config.partitions,
        subject_prefix: config.subject_prefix.clone(),
    };
    let bytes = serde_json::to_vec(&ours).expect("layout serialises");
    let stored = match kv.create(LAYOUT_KEY, bytes.into()).await {
        Ok(_) => {
            tracing::info!(partitions = ours.partitions, prefix = %ours.subject_prefix, "Wrote the cluster layout (first member).");
            return Ok(());
        }
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => kv
            .get(LAYOUT_KEY)
            .await
            .map_err(|e| setup_error(LAYOUT_WHAT, e))?,
        Err(e) => return Err(setup_error(LAYOUT_WHAT, e)),
    };
    let stored: Layout = stored
        .as_deref()
        .and_then(|bytes| serde_json::from_slice(bytes).ok())
        .ok_or_else(|| setup_error(LAYOUT_WHAT, "it does not hold an anomalyd layout"))?;
    if stored == ours {
        Ok(())
    } else {
        Err(ClusterError::LayoutMismatch { stored, ours })
    }
}
