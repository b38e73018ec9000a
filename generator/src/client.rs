//! A kept-alive HTTP/1.1 client for anomalyd's `/detect`: one connection,
//! re-established after any failure, one request at a time (so points of a
//! series arrive in order). With a `nats://` target it publishes the points
//! straight to an anomalyd cluster's points stream instead, each to its
//! partition, as a member would (the layout is read from the cluster's KV
//! bucket).

use std::time::Duration;

use anomalyd::http_client::{ClientError, Connection};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};

use crate::config::{AuthToken, ClientTls, NatsAccess, Target};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take, reply included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a post did not get a reply.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// No connection, or it failed during the request (including a
    /// reply that never came because the peer closed the connection).
    #[error(transparent)]
    Connection(#[from] ClientError),
    /// No reply within the request timeout.
    #[error("no reply from {authority} within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout {
        /// `host:port`.
        authority: String,
    },
    /// Publishing to NATS failed.
    #[error("cannot publish to NATS at {authority}: {reason}")]
    Nats {
        /// `host:port`.
        authority: String,
        /// Why.
        reason: String,
    },
}

/// A connection to an anomalyd cluster's NATS, with its layout.
struct NatsLink {
    js: async_nats::jetstream::Context,
    partitions: u32,
    names: anomalyd::cluster::partition::Names,
}

/// A reply from anomalyd.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The body (a JSON document).
    pub body: Bytes,
}

/// The client: the target and the current connection, if any.
pub struct Client {
    target: Target,
    /// `Authorization: Bearer <token>`, marked sensitive.
    authorization: Option<HeaderValue>,
    /// The connection to an `http(s)://` target.
    connection: Connection,
    /// Credentials and CAs for a `nats://` target.
    nats_access: NatsAccess,
    nats: Option<NatsLink>,
}

impl Client {
    /// A client for `target`; connects on the first post.
    pub fn new(target: Target, token: Option<&AuthToken>, tls: Option<ClientTls>) -> Client {
        let connection = Connection::new(target.endpoint(), tls, CONNECT_TIMEOUT, "anomalyd");
        let mut client = Client {
            target,
            authorization: None,
            connection,
            nats_access: NatsAccess::default(),
            nats: None,
        };
        client.set_token(token);
        client
    }

    /// Connects to a `nats://` target with `access` from the next
    /// connection on (a reload may change it).
    pub fn set_nats_access(&mut self, access: NatsAccess) {
        if access != self.nats_access {
            self.nats = None;
            self.nats_access = access;
        }
    }

    /// Trusts `tls`'s CAs from the next connection on (a reload may
    /// change them).
    pub fn set_tls(&mut self, tls: Option<ClientTls>) {
        self.connection.set_tls(tls);
    }

    /// Sends `token` (a reload may change it) as `Authorization: Bearer`.
    pub fn set_token(&mut self, token: Option<&AuthToken>) {
        self.authorization = token.and_then(|token| {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.0)).ok()?;
            value.set_sensitive(true);
            Some(value)
        });
    }

    /// Switches to another target (a reload), dropping the connection if
    /// the address changed.
    pub fn set_target(&mut self, target: Target) {
        if target.authority != self.target.authority || target.path != self.target.path {
            self.connection.close();
            self.nats = None;
        }
        self.connection.set_endpoint(target.endpoint());
        self.target = target;
    }

    /// Posts `body` (one JSON object, or NDJSON lines when `ndjson`) and
    /// reads the reply. Any failure drops the connection, so the next post
    /// starts afresh.
    pub async fn post(&mut self, body: Bytes, ndjson: bool) -> Result<Reply, PostError> {
        if self.target.nats {
            let result = tokio::time::timeout(REQUEST_TIMEOUT, self.publish(&body, ndjson)).await;
            let result = result.unwrap_or_else(|_| {
                Err(PostError::Timeout {
                    authority: self.target.authority.clone(),
                })
            });
            if result.is_err() {
                self.nats = None;
            }
            return result;
        }
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.post_inner(body, ndjson)).await;
        let result = result.unwrap_or_else(|_| {
            Err(PostError::Timeout {
                authority: self.target.authority.clone(),
            })
        });
        if result.is_err() {
            self.connection.close();
        }
        result
    }

    async fn post_inner(&mut self, body: Bytes, ndjson: bool) -> Result<Reply, PostError> {
        let content_type = if ndjson {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.target.path.as_str())
            .header(HOST, self.target.authority.as_str())
            .header(CONTENT_TYPE, content_type);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Full::new(body))
            .expect("a request from valid parts");
        let response = self.connection.send(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|source| {
            self.connection.close();
            ClientError::Http {
                authority: self.target.authority.clone(),
                source,
            }
        })?;
        Ok(Reply {
            status,
            body: body.to_bytes(),
        })
    }

    /// Publishes the points of `body` to their partitions and waits for
    /// JetStream's acknowledgements; answers as a member would (202).
    async fn publish(&mut self, body: &[u8], ndjson: bool) -> Result<Reply, PostError> {
        let authority = self.target.authority.clone();
        let failed = |reason: String| PostError::Nats {
            authority: authority.clone(),
            reason,
        };
        let parsed = if ndjson {
            anomalyd::ingest::parse_ndjson_body(body)
        } else {
            anomalyd::ingest::parse_json_object(body).map(|point| vec![point])
        };
        let points = parsed.map_err(|e| failed(e.message))?;
        if self.nats.is_none() {
            self.nats = Some(self.link().await?);
        }
        let link = self.nats.as_ref().expect("linked just above");
        anomalyd::cluster::producer::publish_points(
            &link.js,
            &link.names,
            link.partitions,
            &points,
            anomalyd::cluster::producer::Origin::Detect,
            anomalyd::clock::unix_now(),
            || {},
        )
        .await
        .map_err(failed)?;
        let reply = format!(
            "{{\"status\":\"Data accepted\",\"received\":{}}}",
            points.len()
        );
        Ok(Reply {
            status: 202,
            body: Bytes::from(reply),
        })
    }

    /// Connects to NATS and reads the cluster's layout.
    async fn link(&self) -> Result<NatsLink, PostError> {
        let authority = self.target.authority.clone();
        let failed = |reason: String| PostError::Nats {
            authority: authority.clone(),
            reason,
        };
        let mut options = async_nats::ConnectOptions::new()
            .name("anomaly-generator")
            .connection_timeout(CONNECT_TIMEOUT);
        if let Some(credentials) = &self.nats_access.credentials {
            // Checked when the configuration was read.
            options = options
                .credentials(&credentials.0)
                .map_err(|e| failed(format!("nats_creds_file: {e}")))?;
        }
        if let Some(tls) = &self.nats_access.tls {
            options = options
                .tls_client_config(tls.config().as_ref().clone())
                .require_tls(true);
        }
        let client = options.connect(authority.as_str()).await.map_err(|e| {
            use async_nats::ConnectErrorKind::{Authentication, AuthorizationViolation};
            let advice = match (e.kind(), &self.nats_access.credentials) {
                (AuthorizationViolation | Authentication, None) => {
                    "; the server wants credentials: set nats_creds_file to a .creds file of a user the anomalyd cluster's account trusts"
                }
                (AuthorizationViolation | Authentication, Some(_)) => {
                    "; check that the credentials of nats_creds_file belong to a user of an account the server trusts"
                }
                _ => "",
            };
            failed(format!("{e}{advice}"))
        })?;
        let js = async_nats::jetstream::new(client);
        let names = anomalyd::cluster::partition::Names::new(&self.target.path);
        let kv = js.get_key_value(names.kv_bucket()).await.map_err(|e| {
            failed(format!(
                "no anomalyd cluster with prefix `{}` there ({e}); start a member first",
                self.target.path
            ))
        })?;
        let layout = kv
            .get(anomalyd::cluster::partition::LAYOUT_KEY)
            .await
            .map_err(|e| failed(e.to_string()))?
            .and_then(|bytes| {
                serde_json::from_slice::<anomalyd::cluster::connect::Layout>(&bytes).ok()
            })
            .ok_or_else(|| failed("the cluster has no layout yet; start a member first".into()))?;
        tracing::info!(url = %self.target.url, partitions = layout.partitions, "Publishing straight to the anomalyd cluster's points stream.");
        Ok(NatsLink {
            js,
            partitions: layout.partitions,
            names,
        })
    }
}
