//! `[alert]`: where episodes are sent. `[[alert.alertmanager]]` tables
//! name Alertmanager instances, `[[alert.webhook]]` tables HTTP endpoints;
//! every one of them gets every episode. The tables of all files add up
//! (a drop-in in `conf.d/` can add a sink).

use std::fmt::Write as _;
use std::ops::{Bound, Range};
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::toml_walk::{Document, entries, format_duration, join_key, quote};
use crate::http_client::{Endpoint, Proxy};
use crate::tls::ClientTls;

/// Default `resend_interval` of an Alertmanager sink (Prometheus' own).
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);
/// Default `timeout` of a sink's requests.
pub const DEFAULT_SINK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `queue_size` of a sink.
pub const DEFAULT_QUEUE_SIZE: usize = 10_000;

/// The keys of `[[alert.alertmanager]]`, in documentation order.
pub const ALERTMANAGER_KEYS: &[&str] = &[
    "url",
    "ca_file",
    "proxy_url",
    "resend_interval",
    "timeout",
    "queue_size",
];
/// The keys of `[[alert.webhook]]`, in documentation order.
pub const WEBHOOK_KEYS: &[&str] = &[
    "url",
    "ca_file",
    "proxy_url",
    "headers",
    "timeout",
    "queue_size",
];

/// `[alert]`: the sinks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertConfig {
    /// `[[alert.alertmanager]]`, in file order.
    pub alertmanagers: Vec<AlertmanagerConfig>,
    /// `[[alert.webhook]]`, in file order.
    pub webhooks: Vec<WebhookConfig>,
}

/// One `[[alert.alertmanager]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertmanagerConfig {
    /// The Alertmanager's base URL, e.g. `http://127.0.0.1:9093`; alerts
    /// go to `<url>/api/v2/alerts`.
    pub url: HttpUrl,
    /// `ca_file`: the CAs trusted for an `https://` URL (unset: the
    /// system's).
    pub ca_file: Option<PathBuf>,
    /// The trusted CAs, read from `ca_file`, for an `https://` URL.
    pub tls: Option<ClientTls>,
    /// `proxy_url`: the HTTP proxy requests go through.
    pub proxy: Option<Proxy>,
    /// How often the alert of an open episode is sent again.
    pub resend_interval: Duration,
    /// How long one request may take.
    pub timeout: Duration,
    /// Most notifications waiting to be sent.
    pub queue_size: usize,
}

/// One `[[alert.webhook]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookConfig {
    /// The URL each notification is POSTed to.
    pub url: HttpUrl,
    /// `ca_file`: the CAs trusted for an `https://` URL (unset: the
    /// system's).
    pub ca_file: Option<PathBuf>,
    /// The trusted CAs, read from `ca_file`, for an `https://` URL.
    pub tls: Option<ClientTls>,
    /// `proxy_url`: the HTTP proxy requests go through.
    pub proxy: Option<Proxy>,
    /// Extra request headers (for example a token), in file order.
    pub headers: Vec<(String, String)>,
    /// How long one request may take.
    pub timeout: Duration,
    /// Most notifications waiting to be sent.
    pub queue_size: usize,
}

/// An `http://` or `https://` URL, split for a client:
/// `scheme://authority/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// The URL as written, without a trailing `/`.
    pub text: String,
    /// `host:port` (port 80, or 443 for `https://`, when the URL has none).
    pub authority: String,
    /// The host alone, without brackets (the name TLS checks).
    pub host: String,
    /// Whether the URL is `https://`.
    pub tls: bool,
    /// The path and query, `/` at least.
    pub path: String,
}

impl HttpUrl {
    /// Parses `text`; the error says what is wrong and what to write.
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        let example = "e.g. \"http://127.0.0.1:9093\"";
        let uri: hyper::Uri = text
            .parse()
            .map_err(|e| format!("not a URL ({e}); write a full URL, {example}"))?;
        let (tls, default_port) = match uri.scheme_str() {
            Some("http") => (false, 80),
            Some("https") => (true, 443),
            _ => return Err(format!("expected an http:// or https:// URL, {example}")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("the URL has no host, {example}"))?;
        if authority.as_str().contains('@') {
            return Err("credentials in the URL are not supported; for a webhook, set headers = { Authorization = \"...\" }".into());
        }
        let bare_host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(default_port);
        let host = if bare_host.contains(':') {
            format!("[{bare_host}]")
        } else {
            bare_host.clone()
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Ok(HttpUrl {
            // As written: a trailing `/` is part of a webhook's path, and
            // the effective configuration must print the URL it posts to.
            text: text.to_owned(),
            authority: format!("{host}:{port}"),
            host: bare_host,
            tls,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.to_owned()
            },
        })
    }

    /// Where a client connects for this URL.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            authority: self.authority.clone(),
            host: self.host.clone(),
            tls: self.tls,
            proxy: None,
        }
    }

    /// This URL with `suffix` appended to its path (`/api/v2/alerts`).
    pub fn join(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.path.trim_end_matches('/'))
    }
}

/// Reads `[alert]` from `table` into `alert`.
pub(super) fn read_alert(doc: &mut Document<'_>, table: &DeTable<'_>, alert: &mut AlertConfig) {
    for (name, value) in entries(table) {
        let key = join_key("alert", name.get_ref());
        match name.get_ref().as_ref() {
            "alertmanager" => {
                for (index, span, sink) in doc.array_of_tables(&key, value) {
                    let prefix = format!("{key}[{index}]");
                    if let Some(sink) = read_alertmanager(doc, &prefix, span, sink) {
                        alert.alertmanagers.push(sink);
                    }
                }
            }
            "webhook" => {
                for (index, span, sink) in doc.array_of_tables(&key, value) {
                    let prefix = format!("{key}[{index}]");
                    if let Some(sink) = read_webhook(doc, &prefix, span, sink) {
                        alert.webhooks.push(sink);
                    }
                }
            }
            _ => doc.unknown_key(name, &key, "[alert]", &["alertmanager", "webhook"]),
        }
    }
}

/// The keys every sink has.
struct Common {
    url: Option<HttpUrl>,
    /// Where `url` is written, for problems with its TLS.
    url_span: Option<Range<usize>>,
    ca_file: Option<PathBuf>,
    ca_file_span: Option<Range<usize>>,
    tls: Option<ClientTls>,
    proxy: Option<Proxy>,
    timeout: Duration,
    queue_size: usize,
    valid: bool,
}

impl Common {
    fn new() -> Common {
        Common {
            url: None,
            url_span: None,
            ca_file: None,
            ca_file_span: None,
            tls: None,
            proxy: None,
            timeout: DEFAULT_SINK_TIMEOUT,
            queue_size: DEFAULT_QUEUE_SIZE,
            valid: true,
        }
    }

    /// Reads `name` if it is a common key; false if it is not one.
    fn read(
        &mut self,
        doc: &mut Document<'_>,
        name: &str,
        key: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> bool {
        match name {
            "url" => match doc.string(key, value).map(HttpUrl::parse) {
                Some(Ok(url)) => {
                    self.url = Some(url);
                    self.url_span = Some(value.span());
                }
                Some(Err(message)) => {
                    doc.report(Some(key), Some(value.span()), message);
                    self.valid = false;
                }
                None => self.valid = false,
            },
            "ca_file" => match doc.path_buf(key, value) {
                Some(path) => {
                    self.ca_file = Some(path);
                    self.ca_file_span = Some(value.span());
                }
                None => self.valid = false,
            },
            "proxy_url" => match doc.string(key, value).map(Proxy::parse) {
                Some(Ok(proxy)) => self.proxy = Some(proxy),
                Some(Err(message)) => {
                    doc.report(Some(key), Some(value.span()), message);
                    self.valid = false;
                }
                None => self.valid = false,
            },
            "timeout" => match doc.duration(key, value, timeout_range()) {
                Some(timeout) => self.timeout = timeout,
                None => self.valid = false,
            },
            "queue_size" => match doc.integer(key, value, 1..=10_000_000) {
                Some(size) => self.queue_size = size,
                None => self.valid = false,
            },
            _ => return false,
        }
        true
    }

    /// The keys read, with the CAs of an `https://` URL read, or a
    /// problem naming the missing or wrong key.
    fn finish(
        mut self,
        doc: &mut Document<'_>,
        prefix: &str,
        span: Range<usize>,
        example: &str,
    ) -> Option<Common> {
        if !self.valid {
            return None;
        }
        let Some(url) = &self.url else {
            doc.report(
                Some(prefix),
                Some(span),
                format!("missing required key \"url\", e.g. url = \"{example}\""),
            );
            return None;
        };
        if !url.tls {
            if self.ca_file.is_some() {
                doc.report(
                    Some(&join_key(prefix, "ca_file")),
                    self.ca_file_span.clone(),
                    "ca_file is for an https:// url; remove it, or write the url with https://",
                );
                return None;
            }
            return Some(self);
        }
        match ClientTls::from_ca_file(self.ca_file.as_deref()) {
            Ok(tls) => self.tls = Some(tls),
            Err(e) => {
                let (key, at) = match &self.ca_file {
                    Some(_) => ("ca_file", self.ca_file_span.clone()),
                    None => ("url", self.url_span.clone()),
                };
                doc.report(
                    Some(&join_key(prefix, key)),
                    at,
                    format!(
                        "{e} (an https:// url needs the CAs that signed the receiver's certificate: set ca_file, or install ca-certificates)"
                    ),
                );
                return None;
            }
        }
        Some(self)
    }
}

fn timeout_range() -> (Bound<Duration>, Bound<Duration>) {
    (
        Bound::Excluded(Duration::ZERO),
        Bound::Included(Duration::from_secs(300)),
    )
}

fn read_alertmanager(
    doc: &mut Document<'_>,
    prefix: &str,
    span: Range<usize>,
    table: &DeTable<'_>,
) -> Option<AlertmanagerConfig> {
    let mut common = Common::new();
    let mut resend_interval = DEFAULT_RESEND_INTERVAL;
    for (name, value) in entries(table) {
        let key = join_key(prefix, name.get_ref());
        if common.read(doc, name.get_ref(), &key, value) {
            continue;
        }
        if name.get_ref() == "resend_interval" {
            let range = (
                Bound::Included(Duration::from_secs(1)),
                Bound::Included(Duration::from_secs(86_400)),
            );
            match doc.duration(&key, value, range) {
                Some(interval) => resend_interval = interval,
                None => common.valid = false,
            }
        } else {
            doc.unknown_key(name, &key, "[[alert.alertmanager]]", ALERTMANAGER_KEYS);
        }
    }
    let common = common.finish(doc, prefix, span, "http://127.0.0.1:9093")?;
    Some(AlertmanagerConfig {
        url: common.url?,
        ca_file: common.ca_file,
        tls: common.tls,
        proxy: common.proxy,
        resend_interval,
        timeout: common.timeout,
        queue_size: common.queue_size,
    })
}

fn read_webhook(
    doc: &mut Document<'_>,
    prefix: &str,
    span: Range<usize>,
    table: &DeTable<'_>,
) -> Option<WebhookConfig> {
    let mut common = Common::new();
    let mut headers = Vec::new();
    for (name, value) in entries(table) {
        let key = join_key(prefix, name.get_ref());
        if common.read(doc, name.get_ref(), &key, value) {
            continue;
        }
        if name.get_ref() == "headers" {
            match read_headers(doc, &key, value) {
                Some(read) => headers = read,
                None => common.valid = false,
            }
        } else {
            doc.unknown_key(name, &key, "[[alert.webhook]]", WEBHOOK_KEYS);
        }
    }
    let common = common.finish(doc, prefix, span, "http://127.0.0.1:8080/hook")?;
    Some(WebhookConfig {
        url: common.url?,
        ca_file: common.ca_file,
        tls: common.tls,
        proxy: common.proxy,
        headers,
        timeout: common.timeout,
        queue_size: common.queue_size,
    })
}

/// `headers = { Name = "value", ... }`: valid HTTP header names and values.
fn read_headers(
    doc: &mut Document<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<Vec<(String, String)>> {
    let DeValue::Table(table) = value.get_ref() else {
        doc.wrong_type(
            key,
            value,
            "a table of header values, e.g. { Authorization = \"Bearer ...\" }",
        );
        return None;
    };
    let mut headers = Vec::new();
    let mut valid = true;
    for (name, header_value) in entries(table) {
        let dotted = join_key(key, name.get_ref());
        let Some(text) = doc.string(&dotted, header_value) else {
            valid = false;
            continue;
        };
        let lower = name.get_ref().to_ascii_lowercase();
        if hyper::header::HeaderName::from_bytes(name.get_ref().as_bytes()).is_err() {
            doc.report(
                Some(&dotted),
                Some(name.span()),
                format!("{} is not a valid HTTP header name", quote(name.get_ref())),
            );
            valid = false;
        } else if matches!(
            lower.as_str(),
            "host" | "content-length" | "content-type" | "transfer-encoding" | "connection"
        ) {
            doc.report(
                Some(&dotted),
                Some(name.span()),
                format!("{} is set by anomalyd; remove it", quote(name.get_ref())),
            );
            valid = false;
        } else if hyper::header::HeaderValue::from_str(text).is_err() {
            doc.report(
                Some(&dotted),
                Some(header_value.span()),
                "not a valid HTTP header value (control characters or non-ASCII)",
            );
            valid = false;
        } else {
            headers.push((name.get_ref().to_string(), text.to_owned()));
        }
    }
    valid.then_some(headers)
}

impl AlertConfig {
    /// Appends `[[alert.*]]` tables for `--check-config`. Header values
    /// are not printed (they often hold tokens).
    pub fn write_toml(&self, out: &mut String) {
        if self.alertmanagers.is_empty() && self.webhooks.is_empty() {
            out.push_str("\n# [[alert.alertmanager]] and [[alert.webhook]]: none\n");
        }
        for sink in &self.alertmanagers {
            out.push_str("\n[[alert.alertmanager]]\n");
            let _ = writeln!(out, "url = {}", quote(&sink.url.text));
            write_ca_file(out, sink.ca_file.as_ref());
            write_proxy(out, sink.proxy.as_ref());
            let _ = writeln!(
                out,
                "resend_interval = {}",
                quote(&format_duration(sink.resend_interval))
            );
            let _ = writeln!(out, "timeout = {}", quote(&format_duration(sink.timeout)));
            let _ = writeln!(out, "queue_size = {}", sink.queue_size);
        }
        for sink in &self.webhooks {
            out.push_str("\n[[alert.webhook]]\n");
            let _ = writeln!(out, "url = {}", quote(&sink.url.text));
            write_ca_file(out, sink.ca_file.as_ref());
            write_proxy(out, sink.proxy.as_ref());
            if !sink.headers.is_empty() {
                let names: Vec<String> = sink
                    .headers
                    .iter()
                    .map(|(name, _)| format!("{} = \"<hidden>\"", quote(name)))
                    .collect();
                let _ = writeln!(out, "# headers = {{ {} }}", names.join(", "));
            }
            let _ = writeln!(out, "timeout = {}", quote(&format_duration(sink.timeout)));
            let _ = writeln!(out, "queue_size = {}", sink.queue_size);
        }
    }
}

/// `proxy_url = "..."` when set; commented out when its password is
/// hidden (it cannot be pasted back).
fn write_proxy(out: &mut String, proxy: Option<&Proxy>) {
    if let Some(proxy) = proxy {
        let hidden = if proxy.shown.contains("<hidden>") {
            "# "
        } else {
            ""
        };
        let _ = writeln!(out, "{hidden}proxy_url = {}", quote(&proxy.shown));
    }
}

/// `ca_file = "..."` when set.
fn write_ca_file(out: &mut String, ca_file: Option<&PathBuf>) {
    if let Some(path) = ca_file {
        let _ = writeln!(out, "ca_file = {}", quote(&path.display().to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let url = HttpUrl::parse("http://127.0.0.1:9093/").unwrap();
        assert_eq!(url.authority, "127.0.0.1:9093");
        assert_eq!(url.join("/api/v2/alerts"), "/api/v2/alerts");
        // As written, since a webhook posts to the path as written.
        assert_eq!(url.text, "http://127.0.0.1:9093/");
        assert_eq!(HttpUrl::parse("http://h/in/").unwrap().path, "/in/");
        let url = HttpUrl::parse("http://am.example/prefix?x=1").unwrap();
        assert_eq!(url.authority, "am.example:80");
        assert_eq!(url.path, "/prefix?x=1");
        let url = HttpUrl::parse("http://[::1]:9093/am").unwrap();
        assert_eq!(url.authority, "[::1]:9093");
        assert_eq!(url.join("/api/v2/alerts"), "/am/api/v2/alerts");
        let url = HttpUrl::parse("https://hooks.example.com/services/T0").unwrap();
        assert_eq!(url.authority, "hooks.example.com:443");
        assert_eq!(url.host, "hooks.example.com");
        assert!(url.tls);
        let url = HttpUrl::parse("https://[::1]:8443/").unwrap();
        assert_eq!(
            (url.authority.as_str(), url.host.as_str()),
            ("[::1]:8443", "::1")
        );
        assert!(!HttpUrl::parse("http://x").unwrap().tls);
        assert!(HttpUrl::parse("ftp://x").unwrap_err().contains("https://"));
        assert!(
            HttpUrl::parse("localhost:9093")
                .unwrap_err()
                .contains("http://")
        );
        assert!(
            HttpUrl::parse("http://u:p@x/")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(
            HttpUrl::parse("not a url")
                .unwrap_err()
                .contains("not a URL")
        );
    }
}
