//! Lean MCP load for bench-gateway: N callers each keep one `tools/call echo` in flight for a
//! measured window and record every call's latency. Two kinds of client, both as cheap as
//! the bench can make them so that the client is not what is measured: a raw HTTP/1.1
//! keep-alive client on one gateway session per caller ([`HttpSession`]), and a line
//! multiplexer on a server's own stdio ([`LineClient`]: a child's pipes, or the agent's
//! Docker attach), shared by all callers the way the gateway shares one stdio session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The revision the clients announce.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

/// What the callers of one load run did inside the measured window.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Calls started and answered correctly inside the window.
    pub calls: u64,
    /// Calls that failed or came back with the wrong text (the run goes on).
    pub errors: u64,
    /// Latency of each counted call, in microseconds.
    pub latencies_us: Vec<u32>,
}

impl LoadResult {
    fn merge(&mut self, other: LoadResult) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.latencies_us.extend(other.latencies_us);
    }

    /// The `q` quantile (0..=1) of the latencies in milliseconds (nearest rank).
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let rank = ((q * self.latencies_us.len() as f64).ceil() as usize).max(1);
        let us = self.latencies_us[rank.min(self.latencies_us.len()) - 1];
        f64::from(us) / 1000.0
    }
}

/// The measured window: calls that start at or after `from` and end by `until` count.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: Instant,
    pub until: Instant,
}

/// The JSON-RPC body of `tools/call echo` with `text` (plain ASCII, no escaping needed).
pub fn echo_request(id: u64, text: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{text}"}}}}}}"#
    )
}

fn initialize_request(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize","params":{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{{}},"clientInfo":{{"name":"bench-gateway","version":"0"}}}}}}"#
    )
}

const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

#[derive(Deserialize)]
struct Answer {
    id: Option<u64>,
    result: Option<EchoResult>,
}

#[derive(Deserialize)]
struct EchoResult {
    #[serde(default)]
    content: Vec<Content>,
    #[serde(rename = "isError", default)]
    is_error: bool,
}

#[derive(Deserialize)]
struct Content {
    text: Option<String>,
}

/// Whether `answer` is a successful echo of `text`.
fn echoed(answer: &Answer, text: &str) -> bool {
    answer.result.as_ref().is_some_and(|r| {
        !r.is_error && r.content.first().and_then(|c| c.text.as_deref()) == Some(text)
    })
}

/// Runs `one_call(caller, n)` in a loop on every caller until the window ends.
async fn drive<C, F, Fut>(callers: Vec<C>, window: Window, one_call: F) -> (LoadResult, Vec<C>)
where
    C: Send + 'static,
    F: Fn(C, usize, u64) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = (C, bool)> + Send,
{
    let mut tasks = Vec::new();
    for (i, caller) in callers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut caller = caller;
            let mut result = LoadResult::default();
            let mut n = 0u64;
            loop {
                let start = Instant::now();
                if start >= window.until {
                    break;
                }
                n += 1;
                let (back, ok) = one_call(caller, i, n).await;
                caller = back;
                let end = Instant::now();
                if start < window.from || end > window.until {
                    continue;
                }
                if ok {
                    result.calls += 1;
                    let us = (end - start).as_micros();
                    result
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                } else {
                    result.errors += 1;
                }
            }
            (result, caller)
        }));
    }
    let mut total = LoadResult::default();
    let mut back = Vec::new();
    for t in tasks {
        // A caller task only panics on a bug in this file; the bench then stops.
        let (r, c) = t.await.expect("load task");
        total.merge(r);
        back.push(c);
    }
    (total, back)
}

/// One gateway client session over its own keep-alive connection.
pub struct HttpSession {
    conn: BufReader<TcpStream>,
    host: String,
    path: String,
    session: String,
    request: Vec<u8>,
    line: String,
    body: Vec<u8>,
}

/// An HTTP answer: status, `Mcp-Session-Id` if any; the body is in `HttpSession::body`.
struct Head {
    status: u16,
    session: Option<String>,
}

impl HttpSession {
    /// Connects to `addr`, initializes a session on `path` and sends `initialized`.
    pub async fn open(addr: SocketAddr, path: &str) -> std::io::Result<HttpSession> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut s = HttpSession {
            conn: BufReader::new(stream),
            host: addr.to_string(),
            path: path.to_owned(),
            session: String::new(),
            request: Vec::with_capacity(512),
            line: String::new(),
            body: Vec::with_capacity(512),
        };
        let head = s.exchange("POST", &initialize_request(0)).await?;
        match (head.status, head.session) {
            (200, Some(id)) => s.session = id,
            (status, _) => return Err(other(format!("initialize answered {status}"))),
        }
        let head = s.exchange("POST", INITIALIZED).await?;
        if head.status != 202 {
            return Err(other(format!("initialized answered {}", head.status)));
        }
        Ok(s)
    }

    /// One `tools/call echo`; true when the right text came back.
    pub async fn echo(&mut self, id: u64, text: &str) -> bool {
        match self.exchange("POST", &echo_request(id, text)).await {
            Ok(head) if head.status == 200 => serde_json::from_slice::<Answer>(&self.body)
                .is_ok_and(|a| a.id == Some(id) && echoed(&a, text)),
            _ => false,
        }
    }

    /// Ends the session (DELETE).
    pub async fn close(mut self) {
        let _ = self.exchange("DELETE", "").await;
    }

    async fn exchange(&mut self, method: &str, body: &str) -> std::io::Result<Head> {
        use std::io::Write as _;
        self.request.clear();
        write!(
            self.request,
            "{method} {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
            self.path,
            self.host,
            body.len()
        )?;
        if !self.session.is_empty() {
            write!(
                self.request,
                "Mcp-Session-Id: {}\r\nMCP-Protocol-Version: {PROTOCOL_VERSION}\r\n",
                self.session
            )?;
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(body.as_bytes());
        self.conn.get_mut().write_all(&self.request).await?;
        self.read_answer().await
    }

    /// Reads one answer with a `Content-Length` body (the gateway answers a request whose
    /// answer comes first as plain JSON; an SSE answer would be chunked and is refused).
    async fn read_answer(&mut self) -> std::io::Result<Head> {
        self.line.clear();
        self.conn.read_line(&mut self.line).await?;
        let status = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| other(format!("bad status line {:?}", self.line)))?;
        let mut length = 0usize;
        let mut session = None;
        loop {
            self.line.clear();
            if self.conn.read_line(&mut self.line).await? == 0 {
                return Err(other("connection closed in the headers".into()));
            }
            let line = self.line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(|_| other("bad length".into()))?;
            } else if name.eq_ignore_ascii_case("mcp-session-id") {
                session = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(other("a streamed (SSE) answer; expected JSON".into()));
            }
        }
        self.body.resize(length, 0);
        self.conn.read_exact(&mut self.body).await?;
        Ok(Head { status, session })
    }
}

fn other(text: String) -> std::io::Error {
    std::io::Error::other(text)
}

/// `sessions` gateway sessions on `addr`/`path`, each calling echo back to back in `window`.
pub async fn run_http(
    addr: SocketAddr,
    path: &str,
    sessions: usize,
    window: Window,
) -> std::io::Result<LoadResult> {
    let mut callers = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        callers.push(HttpSession::open(addr, path).await?);
    }
    let (result, callers) = drive(callers, window, |mut s, i, n| async move {
        let text = format!("s{i}-{n}");
        let ok = s.echo(n, &text).await;
        (s, ok)
    })
    .await;
    for s in callers {
        s.close().await;
    }
    Ok(result)
}

/// Where a [`LineClient`] writes its lines.
pub enum LineOut {
    /// A child's stdin: each line (with its newline) is one write.
    Pipe(tokio::sync::Mutex<pipe::Sender>),
    /// The agent's Docker attach (its writer task adds the newline).
    Channel(mpsc::Sender<String>),
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<String>>>>;

/// One JSON-RPC session over a line stream, shared by many concurrent callers.
pub struct LineClient {
    out: LineOut,
    waiters: Waiters,
    next_id: AtomicU64,
}

impl LineClient {
    /// Over a child's stdin and stdout pipes.
    pub fn over_pipes(
        stdin: std::process::ChildStdin,
        stdout: std::process::ChildStdout,
    ) -> Arc<LineClient> {
        let tx = pipe::Sender::from_owned_fd(stdin.into()).expect("child stdin is a pipe");
        let rx = pipe::Receiver::from_owned_fd(stdout.into()).expect("child stdout is a pipe");
        let client = LineClient::new(LineOut::Pipe(tokio::sync::Mutex::new(tx)));
        let waiters = Arc::clone(&client.waiters);
        tokio::spawn(async move {
            let mut lines = BufReader::new(rx).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                route(&waiters, line);
            }
        });
        client
    }

    /// Over the two channels of a line transport (the agent's `stdio_attach::Upstream`).
    pub fn over_channels(
        to_server: mpsc::Sender<String>,
        mut from_server: mpsc::Receiver<String>,
    ) -> Arc<LineClient> {
        let client = LineClient::new(LineOut::Channel(to_server));
        let waiters = Arc::clone(&client.waiters);
        tokio::spawn(async move {
            while let Some(line) = from_server.recv().await {
                route(&waiters, line);
            }
        });
        client
    }

    fn new(out: LineOut) -> Arc<LineClient> {
        Arc::new(LineClient {
            out,
            waiters: Arc::default(),
            next_id: AtomicU64::new(1),
        })
    }

    async fn send(&self, line: String) -> std::io::Result<()> {
        match &self.out {
            LineOut::Pipe(stdin) => {
                let mut line = line;
                line.push('\n');
                stdin.lock().await.write_all(line.as_bytes()).await
            }
            LineOut::Channel(tx) => tx
                .send(line)
                .await
                .map_err(|_| other("the attach has ended".into())),
        }
    }

    /// Sends the request `make(id)` and waits for the answer line with that id.
    async fn request(&self, make: impl FnOnce(u64) -> String) -> std::io::Result<(u64, String)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        self.send(make(id)).await?;
        let line = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .map_err(|_| other("no answer within 30 s".into()))?
            .map_err(|_| other("the server's output ended".into()))?;
        Ok((id, line))
    }

    /// `initialize`, then `notifications/initialized`.
    pub async fn initialize(&self) -> std::io::Result<()> {
        let (_, line) = self.request(initialize_request).await?;
        if !line.contains("\"result\"") {
            return Err(other("initialize failed".into()));
        }
        self.send(INITIALIZED.to_owned()).await
    }

    /// One `tools/call echo`; true when the right text came back.
    pub async fn echo(&self, text: &str) -> bool {
        match self.request(|id| echo_request(id, text)).await {
            Ok((id, line)) => serde_json::from_str::<Answer>(&line)
                .is_ok_and(|a| a.id == Some(id) && echoed(&a, text)),
            Err(_) => false,
        }
    }
}

/// Hands an answer line to the caller waiting for its id; other lines are dropped.
fn route(waiters: &Waiters, line: String) {
    #[derive(Deserialize)]
    struct Id {
        id: Option<u64>,
    }
    let Some(id) = serde_json::from_str::<Id>(&line).ok().and_then(|m| m.id) else {
        return;
    };
    let waiter = waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    if let Some(w) = waiter {
        let _ = w.send(line);
    }
}

/// `callers` concurrent callers on one line session, each calling echo back to back.
pub async fn run_lines(client: &Arc<LineClient>, callers: usize, window: Window) -> LoadResult {
    let callers: Vec<Arc<LineClient>> = (0..callers).map(|_| Arc::clone(client)).collect();
    let (result, _) = drive(callers, window, |c, i, n| async move {
        let ok = c.echo(&format!("s{i}-{n}")).await;
        (c, ok)
    })
    .await;
    result
}
