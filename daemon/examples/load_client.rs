//! Load client for `daemon/benches/load.sh`: posts the shapes real senders
//! post, each request new, to `anomalyd` or the baseline server.
//!
//! wrk replays fixed bodies; that is fine for `/detect` without `seq`, but
//! remote-write and line protocol are de-duplicated by timestamp, so a
//! replayed body would be acknowledged as resends without being applied,
//! and `seq` would do the same for `/detect`. This client builds every
//! body afresh, with timestamps (and `seq`s) that advance per request.
//!
//! Formats (`--format`):
//! - `ndjson`: the generator's shape, `{"value", "timestamp", "series",
//!   "seq"}` per line, to `/detect`;
//! - `remote-write`: a snappy protobuf `WriteRequest`, to `/api/v1/write`;
//! - `influx`: line protocol with `--fields` fields per line (nanosecond
//!   timestamps, as Telegraf sends), to `/api/v2/write`.
//!
//! Each of `--connections` keep-alive connections owns a disjoint share of
//! `--series` series (so that its timestamps only go forward), and posts
//! `--batch` values per request (points, samples or fields) over its
//! series; one value in `--anomaly-every` (per series) is a spike (NDJSON:
//! one per series per request, about one in 83 at the defaults, since its
//! body is a template whose timestamps and `seq`s are rewritten in place;
//! 0 = none). Names
//! are `--names short` (`s17`) or `prometheus`
//! (`node_cpu_seconds_total{cpu="3",instance="web-0142:9100",job="node",mode="idle"}`).
//!
//! At the end it prints, like the wrk scripts of `load.sh`:
//! `RESULT requests=N duration_us=N non2xx=N socket_errors=N p50_us=N p99_us=N values=N`
//! (`values`: points, samples or fields in the requests answered 2xx).
//!
//! ```sh
//! cargo run --release -p anomalyd --example load_client -- \
//!     --addr 127.0.0.1:8001 --format remote-write --duration 10
//! ```

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::net::TcpStream;

use anomalyd::ingest::labels::write_series_name;
use anomalyd::ingest::remote_write::{Label, Sample, TimeSeries, WriteRequest};

/// What to post.
#[derive(Clone, Copy, PartialEq)]
enum Format {
    Ndjson,
    RemoteWrite,
    Influx,
}

/// The command line.
#[derive(Clone)]
struct Args {
    addr: SocketAddr,
    format: Format,
    connections: usize,
    duration: Duration,
    series: usize,
    batch: usize,
    fields: usize,
    anomaly_every: u64,
    prometheus_names: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:8001".parse().expect("valid"),
        format: Format::Ndjson,
        connections: 8,
        duration: Duration::from_secs(10),
        series: 100,
        batch: 1000,
        fields: 5,
        anomaly_every: 100,
        prometheus_names: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| {
            text.parse::<u64>()
                .map_err(|e| format!("{flag} {text}: {e}"))
        };
        match flag.as_str() {
            "--addr" => {
                let text = value()?;
                args.addr = text.parse().map_err(|e| format!("--addr {text}: {e}"))?;
            }
            "--format" => {
                args.format = match value()?.as_str() {
                    "ndjson" => Format::Ndjson,
                    "remote-write" => Format::RemoteWrite,
                    "influx" => Format::Influx,
                    other => {
                        return Err(format!(
                            "--format {other}: use ndjson, remote-write or influx"
                        ));
                    }
                }
            }
            "--connections" => args.connections = number(value()?)?.max(1) as usize,
            "--duration" => args.duration = Duration::from_secs_f64(number(value()?)? as f64),
            "--series" => args.series = number(value()?)?.max(1) as usize,
            "--batch" => args.batch = number(value()?)?.max(1) as usize,
            "--fields" => args.fields = number(value()?)?.max(1) as usize,
            "--anomaly-every" => args.anomaly_every = number(value()?)?,
            "--names" => {
                args.prometheus_names = match value()?.as_str() {
                    "short" => false,
                    "prometheus" => true,
                    other => return Err(format!("--names {other}: use short or prometheus")),
                }
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

/// The label set of series `i`: metric name first, then labels sorted.
fn labels_of(i: usize, prometheus: bool) -> Vec<(String, String)> {
    if !prometheus {
        return vec![("__name__".into(), format!("s{i}"))];
    }
    const MODES: [&str; 8] = [
        "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
    ];
    vec![
        ("__name__".into(), "node_cpu_seconds_total".into()),
        ("cpu".into(), (i / 8 % 64).to_string()),
        ("instance".into(), format!("web-{:04}:9100", i / 512)),
        ("job".into(), "node".into()),
        ("mode".into(), MODES[i % 8].into()),
    ]
}

/// The canonical name of a label set, as anomalyd writes it.
fn canonical(labels: &[(String, String)]) -> String {
    let mut name = String::new();
    let mut rest = labels[1..].to_vec();
    write_series_name(&mut name, &labels[0].1, &mut rest);
    name
}

/// One connection's series and where its stream stands.
struct Stream {
    labels: Vec<Vec<(String, String)>>,
    /// The names as JSON strings (quoted, escaped), made once.
    names: Vec<String>,
    /// Values sent per series so far (the next timestamp and `seq`).
    step: u64,
    /// NDJSON: the body with fixed-width timestamps and `seq`s, and where
    /// each line's digits are, rewritten in place for every request (so
    /// the client formats no number per point and keeps up with the
    /// server).
    template: Option<(Vec<u8>, Vec<Slot>)>,
}

/// Where one NDJSON line's timestamp and `seq` digits are, and its step
/// within the request.
type Slot = (usize, usize, u64);

/// Base time of the stream: 2023-11-14T22:13:20Z, in milliseconds.
const START_MS: i64 = 1_700_000_000_000;

impl Stream {
    /// The value of series `s` at step `n`: a narrow pattern, with a spike
    /// every `every` steps (staggered across series).
    fn value(s: usize, n: u64, every: u64) -> f64 {
        if every > 0 && (n + s as u64) % every == every - 1 && n > 40 {
            return 1000.0;
        }
        50.0 + ((n * 7 + s as u64) % 11) as f64 + 0.25 * (n % 4) as f64
    }

    /// The next body: `batch` values over this stream's series; returns
    /// how many values it holds.
    fn body(&mut self, args: &Args, out: &mut Vec<u8>) -> u64 {
        out.clear();
        let series = self.labels.len();
        let per_series = match args.format {
            Format::Influx => (args.batch / args.fields / series).max(1),
            _ => (args.batch / series).max(1),
        };
        let first = self.step;
        self.step += per_series as u64;
        let values = (per_series * series) as u64
            * if args.format == Format::Influx {
                args.fields as u64
            } else {
                1
            };
        match args.format {
            Format::Ndjson => {
                let (template, slots) = self
                    .template
                    .get_or_insert_with(|| ndjson_template(&self.names, per_series, args));
                // Timestamp 1,700,000,000 + n (.25) and seq 1,000,000,000 + n:
                // ten digits each for any run of this client.
                for &(ts_at, seq_at, step) in slots.iter() {
                    let n = first + step;
                    write_digits(&mut template[ts_at..ts_at + 10], 1_700_000_000 + n);
                    write_digits(&mut template[seq_at..seq_at + 10], 1_000_000_000 + n);
                }
                out.extend_from_slice(template);
            }
            Format::RemoteWrite => {
                let request = WriteRequest {
                    timeseries: self
                        .labels
                        .iter()
                        .enumerate()
                        .map(|(s, labels)| TimeSeries {
                            labels: labels
                                .iter()
                                .map(|(k, v)| Label {
                                    name: Bytes::copy_from_slice(k.as_bytes()),
                                    value: Bytes::copy_from_slice(v.as_bytes()),
                                })
                                .collect(),
                            samples: (first..first + per_series as u64)
                                .map(|n| Sample {
                                    value: Self::value(s, n, args.anomaly_every),
                                    timestamp: START_MS + n as i64 * 1000,
                                })
                                .collect(),
                        })
                        .collect(),
                };
                let raw = request.encode_to_vec();
                let compressed = snap::raw::Encoder::new()
                    .compress_vec(&raw)
                    .expect("snappy compresses");
                out.extend_from_slice(&compressed);
            }
            Format::Influx => {
                let mut text = String::with_capacity(args.batch * 40);
                for n in first..first + per_series as u64 {
                    for (s, labels) in self.labels.iter().enumerate() {
                        // Measurement and tags from the label set; fields
                        // f0, f1, ... (the metric `<measurement>_f<i>`).
                        text.push_str(&labels[0].1);
                        for (k, v) in &labels[1..] {
                            let _ = write!(text, ",{k}={}", v.replace(' ', "\\ "));
                        }
                        for f in 0..args.fields {
                            let sep = if f == 0 { ' ' } else { ',' };
                            let value = Self::value(s + f, n, args.anomaly_every);
                            let _ = write!(text, "{sep}f{f}={value}");
                        }
                        let ns = (START_MS + n as i64 * 1000) as i128 * 1_000_000;
                        let _ = writeln!(text, " {ns}");
                    }
                }
                out.extend_from_slice(text.as_bytes());
            }
        }
        values
    }
}

/// The NDJSON body of one request: `per_series` steps of every series,
/// with placeholder digits; returns it and, per line, where its timestamp
/// and `seq` digits are and its step in the request. Values depend on the
/// step in the request only; each series has one spike per request
/// (about 1% of the points at the default batch).
fn ndjson_template(names: &[String], per_series: usize, args: &Args) -> (Vec<u8>, Vec<Slot>) {
    let mut body = Vec::with_capacity(per_series * names.len() * 80);
    let mut slots = Vec::with_capacity(per_series * names.len());
    for j in 0..per_series {
        for (s, name) in names.iter().enumerate() {
            let spike = args.anomaly_every > 0 && j == (s * 7 + 40) % per_series.max(1) && j >= 31;
            let value = if spike {
                1000.0
            } else {
                Stream::value(s, j as u64, 0)
            };
            body.extend_from_slice(format!("{{\"value\":{value},\"timestamp\":").as_bytes());
            let ts_at = body.len();
            body.extend_from_slice(b"0000000000.25,\"series\":");
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(b",\"seq\":");
            let seq_at = body.len();
            body.extend_from_slice(b"0000000000}\n");
            slots.push((ts_at, seq_at, j as u64));
        }
    }
    (body, slots)
}

/// Writes `n` into `out` as decimal digits, right-aligned, zero-padded.
fn write_digits(out: &mut [u8], mut n: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// What one connection measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    values: u64,
    non2xx: u64,
    socket_errors: u64,
}

async fn connect(addr: SocketAddr) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn run_connection(args: Args, index: usize, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let share: Vec<usize> = (0..args.series)
        .filter(|i| i % args.connections == index)
        .collect();
    if share.is_empty() {
        return tally;
    }
    let labels: Vec<_> = share
        .iter()
        .map(|&i| labels_of(i, args.prometheus_names))
        .collect();
    let names = labels
        .iter()
        .map(|l| serde_json::to_string(&canonical(l)).expect("a string serializes"))
        .collect();
    let mut stream = Stream {
        labels,
        names,
        step: 0,
        template: None,
    };
    let (path, content_type) = match args.format {
        Format::Ndjson => ("/detect", "application/x-ndjson"),
        Format::RemoteWrite => ("/api/v1/write", "application/x-protobuf"),
        Format::Influx => ("/api/v2/write", "text/plain; charset=utf-8"),
    };
    let host = args.addr.to_string();
    let mut sender = None;
    let mut body = Vec::new();
    while Instant::now() < deadline {
        if sender.is_none() {
            match connect(args.addr).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    tally.socket_errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let values = stream.body(&args, &mut body);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, host.as_str())
            .header(CONTENT_TYPE, content_type);
        if args.format == Format::RemoteWrite {
            request = request
                .header(CONTENT_ENCODING, "snappy")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(&body)))
            .expect("valid request");
        let started = Instant::now();
        let s = sender.as_mut().expect("connected");
        let outcome = async {
            s.ready().await?;
            let response = s.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        }
        .await;
        match outcome {
            Ok(status) => {
                let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                tally.latencies_us.push(micros);
                if status.is_success() {
                    tally.values += values;
                } else {
                    tally.non2xx += 1;
                }
            }
            Err(_) => {
                tally.socket_errors += 1;
                sender = None;
            }
        }
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("load_client: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (tallies, elapsed) = runtime.block_on(async {
        let started = Instant::now();
        let deadline = started + args.duration;
        let tasks: Vec<_> = (0..args.connections)
            .map(|i| tokio::spawn(run_connection(args.clone(), i, deadline)))
            .collect();
        let mut tallies = Vec::new();
        for task in tasks {
            tallies.push(task.await.expect("connection task"));
        }
        (tallies, started.elapsed())
    });
    let mut latencies: Vec<u32> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let non2xx: u64 = tallies.iter().map(|t| t.non2xx).sum();
    let socket_errors: u64 = tallies.iter().map(|t| t.socket_errors).sum();
    let values: u64 = tallies.iter().map(|t| t.values).sum();
    println!(
        "RESULT requests={} duration_us={} non2xx={non2xx} socket_errors={socket_errors} p50_us={} p99_us={} values={values}",
        latencies.len(),
        elapsed.as_micros(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0)
    );
    std::process::ExitCode::SUCCESS
}
