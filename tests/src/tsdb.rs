//! Real time-series databases receiving remote write, on loopback: Debian's Prometheus 2.42
//! (`--web.enable-remote-write-receiver`) and VictoriaMetrics. Each keeps its data and log in
//! a directory of its own and is killed on drop; their data are read back raw.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{free_addr, http_get, wait_for};

/// A series read back: labels (with `__name__`) → samples `(ts_ms, value)` in time order.
pub type Dump = BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>>;

/// One receiving database process.
pub struct Tsdb {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
    kind: Kind,
    dir: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Prometheus,
    Victoria,
}

impl Tsdb {
    /// Prometheus with its remote-write receiver (`/api/v1/write`).
    pub fn prometheus(dir: &Path) -> Tsdb {
        Tsdb::start(dir, Kind::Prometheus, free_addr())
    }

    /// VictoriaMetrics (`/api/v1/write`).
    pub fn victoria(dir: &Path) -> Tsdb {
        Tsdb::start(dir, Kind::Victoria, free_addr())
    }

    fn start(dir: &Path, kind: Kind, addr: SocketAddr) -> Tsdb {
        std::fs::create_dir_all(dir).expect("mkdir");
        let mut t = Tsdb {
            child: None,
            addr,
            log: dir.join("tsdb.log"),
            kind,
            dir: dir.to_owned(),
        };
        t.restart();
        t
    }

    /// Starts the process (again, after `stop`) on the same address and data, and waits
    /// until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut cmd = match self.kind {
            Kind::Prometheus => {
                let config = self.dir.join("prometheus.yml");
                std::fs::write(&config, "global:\n  scrape_interval: 1m\n").expect("config");
                let mut c = Command::new("prometheus");
                c.arg(format!("--config.file={}", config.display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        self.dir.join("data").display()
                    ))
                    .arg(format!("--web.listen-address={}", self.addr))
                    .arg("--web.enable-remote-write-receiver")
                    .arg("--log.level=warn");
                c
            }
            Kind::Victoria => {
                let mut c = Command::new("victoria-metrics");
                c.arg(format!("-httpListenAddr={}", self.addr))
                    .arg(format!(
                        "-storageDataPath={}",
                        self.dir.join("data").display()
                    ))
                    .arg("-retentionPeriod=1d")
                    // Identical samples sent twice (a resend after a crash) are kept once, as
                    // Prometheus does; without it VictoriaMetrics keeps both.
                    .arg("-dedup.minScrapeInterval=1ms")
                    .arg("-search.latencyOffset=0s")
                    .arg("-loggerLevel=WARN");
                c
            }
        };
        let name = self.program();
        self.child = Some(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {name} ({e}): apt-get install {name}")),
        );
        let ready = match self.kind {
            Kind::Prometheus => "/-/ready",
            Kind::Victoria => "/health",
        };
        let child = self.child.as_mut().expect("just started");
        wait_for(name, Duration::from_secs(60), || {
            // Another process on this port would answer in its place: ours must be alive.
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{name} exited ({status}) before it answered; see {:?}",
                    self.log
                );
            }
            http_get(self.addr, ready)
                .ok()
                .filter(|(s, _)| *s == 200)
                .map(|_| ())
        });
    }

    fn program(&self) -> &'static str {
        match self.kind {
            Kind::Prometheus => "prometheus",
            Kind::Victoria => "victoria-metrics",
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The remote-write URL.
    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// Stops the process as an operator would (SIGTERM: it flushes what it accepted; a
    /// kill -9 would lose its last unflushed seconds, which no sender can help).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::process::signal(&c, "TERM");
            let _ = c.wait();
        }
    }

    /// Every sample of every series whose name matches `name_regex`, raw.
    pub fn dump(&self, name_regex: &str) -> Dump {
        match self.kind {
            Kind::Prometheus => self.dump_prometheus(name_regex),
            Kind::Victoria => self.dump_victoria(name_regex),
        }
    }

    fn get(&self, path: &str) -> String {
        // Chunked answers: the API client de-chunks.
        let r = crate::api::request(self.addr, "GET", path, None, None).expect("GET");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.body
    }

    /// A range selector at an instant query answers every raw sample in the range.
    fn dump_prometheus(&self, name_regex: &str) -> Dump {
        let now = crate::sim::wall_ms() as f64 / 1000.0 + 60.0;
        let q = urlencode(&format!("{{__name__=~\"{name_regex}\"}}[6h]"));
        let body = self.get(&format!("/api/v1/query?query={q}&time={now}"));
        let v: Value = serde_json::from_str(&body).expect("json");
        let mut out = Dump::new();
        for s in v["data"]["result"].as_array().cloned().unwrap_or_default() {
            let labels = labels_of(&s["metric"]);
            let samples = s["values"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| {
                    let ts = (p[0].as_f64().expect("ts") * 1000.0).round() as i64;
                    (ts, parse_value(p[1].as_str().expect("value")))
                })
                .collect();
            out.insert(labels, samples);
        }
        out
    }

    fn dump_victoria(&self, name_regex: &str) -> Dump {
        // Freshly written data become searchable after an internal flush (about a second).
        let _ = http_get(self.addr, "/internal/force_flush");
        let q = urlencode(&format!("{{__name__=~\"{name_regex}\"}}"));
        let body = self.get(&format!("/api/v1/export?match[]={q}&start=0"));
        let mut out = Dump::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).expect("export line");
            let labels = labels_of(&v["metric"]);
            let values = v["values"].as_array().cloned().unwrap_or_default();
            let stamps = v["timestamps"].as_array().cloned().unwrap_or_default();
            let entry: &mut Vec<(i64, f64)> = out.entry(labels).or_default();
            for (val, ts) in values.iter().zip(&stamps) {
                let value = match val {
                    Value::Number(n) => n.as_f64().expect("number"),
                    Value::String(s) => parse_value(s),
                    other => panic!("value {other}"),
                };
                entry.push((ts.as_i64().expect("ts"), value));
            }
            entry.sort_by_key(|s| s.0);
        }
        out
    }
}

impl Drop for Tsdb {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn labels_of(metric: &Value) -> BTreeMap<String, String> {
    metric
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn parse_value(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or_else(|_| panic!("value {s}")),
    }
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One decoded remote-write request: per series, its labels and samples.
pub type WriteRequest = Vec<(BTreeMap<String, String>, Vec<(i64, f64)>)>;

/// Decodes a snappy-compressed protobuf `WriteRequest` (the fields remote write 1.0 uses),
/// or says why it cannot.
pub fn decode_write_request(body: &[u8]) -> Result<WriteRequest, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy: {e}"))?;
    let mut out = Vec::new();
    for (field, value) in fields(&raw)? {
        if field != 1 {
            continue;
        }
        let Field::Bytes(series) = value else {
            return Err("timeseries is not length-delimited".into());
        };
        let mut labels = BTreeMap::new();
        let mut samples = Vec::new();
        for (f, v) in fields(series)? {
            match (f, v) {
                (1, Field::Bytes(label)) => {
                    let mut name = String::new();
                    let mut value = String::new();
                    for (lf, lv) in fields(label)? {
                        match (lf, lv) {
                            (1, Field::Bytes(b)) => name = String::from_utf8_lossy(b).into_owned(),
                            (2, Field::Bytes(b)) => value = String::from_utf8_lossy(b).into_owned(),
                            _ => return Err("bad label field".into()),
                        }
                    }
                    labels.insert(name, value);
                }
                (2, Field::Bytes(sample)) => {
                    let mut ts = 0i64;
                    let mut value = 0f64;
                    for (sf, sv) in fields(sample)? {
                        match (sf, sv) {
                            (1, Field::Fixed64(bits)) => value = f64::from_bits(bits),
                            (2, Field::Varint(v)) => ts = v as i64,
                            _ => return Err("bad sample field".into()),
                        }
                    }
                    samples.push((ts, value));
                }
                _ => {}
            }
        }
        out.push((labels, samples));
    }
    Ok(out)
}

enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

fn fields(mut b: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    fn varint(b: &mut &[u8]) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let field = key >> 3;
        match key & 7 {
            0 => out.push((field, Field::Varint(varint(&mut b)?))),
            1 => {
                if b.len() < 8 {
                    return Err("truncated fixed64".into());
                }
                let (x, rest) = b.split_at(8);
                out.push((
                    field,
                    Field::Fixed64(u64::from_le_bytes(x.try_into().expect("8 bytes"))),
                ));
                b = rest;
            }
            2 => {
                let len = varint(&mut b)? as usize;
                if b.len() < len {
                    return Err("truncated bytes".into());
                }
                let (x, rest) = b.split_at(len);
                out.push((field, Field::Bytes(x)));
                b = rest;
            }
            w => return Err(format!("wire type {w}")),
        }
    }
    Ok(out)
}

/// What a [`Proxy`] saw.
#[derive(Default)]
struct ProxyState {
    /// Requests seen so far, and the one (1-based) to answer 400 without forwarding.
    seen: usize,
    refuse: Option<usize>,
    /// The one to answer 429 with this Retry-After, without forwarding.
    throttle: Option<(usize, String)>,
    /// When each request came and the status it got.
    log: Vec<(std::time::SystemTime, u16)>,
    /// How long each request is held before it is forwarded (a slow receiver).
    delay: Duration,
    /// Requests read and not yet answered.
    in_flight: usize,
    accepted: Vec<WriteRequest>,
    refused: Vec<WriteRequest>,
}

/// A remote-write proxy in front of a database: forwards each request, records what the
/// database accepted, and can refuse one request with 400 (as a receiver refusing a batch
/// for good). Answers 503 while the database is down.
pub struct Proxy {
    pub addr: SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let state = shared.clone();
                std::thread::spawn(move || serve(conn, upstream, &state));
            }
        });
        Proxy { addr, state }
    }

    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// The `n`-th request from now is answered 400 and not forwarded.
    pub fn refuse_nth(&self, n: usize) {
        let mut s = self.state.lock().expect("proxy state");
        s.refuse = Some(s.seen + n);
    }

    /// Holds every request `delay` before forwarding it, as a slow receiver would: a sender
    /// killed meanwhile has its request delivered without ever hearing the answer.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().expect("proxy state").delay = delay;
    }

    /// Requests read whose answer is not written yet.
    pub fn in_flight(&self) -> usize {
        self.state.lock().expect("proxy state").in_flight
    }

    /// The `n`-th request from now is answered 429 with `Retry-After: retry_after`.
    pub fn throttle_nth(&self, n: usize, retry_after: &str) {
        let mut s = self.state.lock().expect("proxy state");
        s.throttle = Some((s.seen + n, retry_after.to_owned()));
    }

    /// When each request came and the status it was answered.
    pub fn log(&self) -> Vec<(std::time::SystemTime, u16)> {
        self.state.lock().expect("proxy state").log.clone()
    }

    pub fn accepted(&self) -> Vec<WriteRequest> {
        self.state.lock().expect("proxy state").accepted.clone()
    }

    pub fn refused(&self) -> Vec<WriteRequest> {
        self.state.lock().expect("proxy state").refused.clone()
    }
}

fn serve(
    mut conn: std::net::TcpStream,
    upstream: SocketAddr,
    state: &std::sync::Mutex<ProxyState>,
) {
    use std::io::{Read, Write};
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // One request: head, then Content-Length bytes of body (keep-alive loop).
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let mut chunk = [0u8; 65536];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + 4 + len {
            let mut chunk = [0u8; 65536];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf[head_end + 4..head_end + 4 + len].to_vec();
        buf.drain(..head_end + 4 + len);
        let decoded = decode_write_request(&body).unwrap_or_default();
        let (refuse, throttle, delay) = {
            let mut s = state.lock().expect("proxy state");
            s.seen += 1;
            s.in_flight += 1;
            let throttle = match &s.throttle {
                Some((n, after)) if *n == s.seen => Some(after.clone()),
                _ => None,
            };
            (s.refuse == Some(s.seen), throttle, s.delay)
        };
        // Simulated receiver latency, not synchronisation: the test waits on what the
        // proxy recorded.
        std::thread::sleep(delay);
        let status = if throttle.is_some() {
            429
        } else if refuse {
            state.lock().expect("proxy state").refused.push(decoded);
            400
        } else {
            match forward(upstream, &body) {
                Some(s) if (200..300).contains(&s) => {
                    state.lock().expect("proxy state").accepted.push(decoded);
                    s
                }
                Some(s) => s,
                None => 503,
            }
        };
        let reason = if status == 400 {
            "out of bounds (test)"
        } else {
            ""
        };
        state
            .lock()
            .expect("proxy state")
            .log
            .push((std::time::SystemTime::now(), status));
        let retry_after = throttle
            .map(|a| format!("retry-after: {a}\r\n"))
            .unwrap_or_default();
        let answer = format!(
            "HTTP/1.1 {status} X\r\n{retry_after}content-length: {}\r\n\r\n{reason}",
            reason.len()
        );
        let written = conn.write_all(answer.as_bytes());
        state.lock().expect("proxy state").in_flight -= 1;
        if written.is_err() {
            return;
        }
    }
}

/// POSTs `body` to the database; its status, or `None` when it does not answer.
fn forward(upstream: SocketAddr, body: &[u8]) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&upstream, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: {upstream}\r\nContent-Encoding: snappy\r\n\
         Content-Type: application/x-protobuf\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
