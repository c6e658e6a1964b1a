//! A small blocking HTTP/1.1 client for the collector's API in tests: any method, bearer
//! token, JSON body; answers status and parsed JSON (or `Value::Null`).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// One response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: String,
    /// The status line and header lines, as received.
    pub head: String,
}

impl Resp {
    /// The value of response header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The `error.code` of an API error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// Sends one request on a fresh connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> std::io::Result<Resp> {
    request_with(addr, method, path, token, &[], body)
}

/// [`request`] with extra header lines, written as given (`name: value`, no escaping: tests
/// use it to send hostile values too).
pub fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Resp> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    if let Some(b) = body {
        // The server may answer (413) and close before reading a large body.
        let _ = s.write_all(b);
    }
    let buf = read_response(&mut s);
    // Split and de-chunk as bytes: a gzipped body is not UTF-8.
    let (head, raw) = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => (
            String::from_utf8_lossy(&buf[..end]).into_owned(),
            &buf[end + 4..],
        ),
        None => (String::new(), &[][..]),
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok(Resp { status, body, head })
}

/// Reads an answer to its end, except a live stream (`text/event-stream`), which never
/// ends: of that only the head is read (`sse.rs` reads streams).
fn read_response(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return buf,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if head.contains("content-type: text/event-stream") {
                return buf;
            }
        }
    }
}

fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&s[..eol]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let rest = &s[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// A client bound to one collector and credential.
#[derive(Debug, Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Api {
    pub fn new(addr: SocketAddr, token: Option<&str>) -> Api {
        Api {
            addr,
            token: token.map(str::to_owned),
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, self.token.as_deref(), None).expect("GET")
    }

    pub fn send(&self, method: &str, path: &str, body: &Value) -> Resp {
        let b = body.to_string();
        request(
            self.addr,
            method,
            path,
            self.token.as_deref(),
            Some(b.as_bytes()),
        )
        .expect("request")
    }
}

/// Creates a token straight in the database (as the admin CLI does): without `user` it
/// holds every permission. Returns the bearer string.
pub fn admin_token(db: &std::path::Path, name: &str, user: Option<i64>) -> String {
    use mcpwatch_collector::auth::credential;
    let secret = credential::secret().expect("secret");
    let hash = credential::hash(&secret);
    let id = mcpwatch_collector::store::admin::with_db(db, |c| {
        mcpwatch_collector::store::query::tokens::create_token(
            c,
            name,
            user,
            None,
            None,
            &hash,
            mcpwatch_collector::now_ms(),
        )
    })
    .expect("create token");
    credential::format(credential::Kind::Token, id, &secret)
}

/// Creates a local user straight in the database (as `user add` does), bound to `role` on
/// the hosts `selector` picks (empty: every host). Returns its id.
pub fn local_user(db: &std::path::Path, name: &str, pw: &str, role: &str, selector: &str) -> i64 {
    use mcpwatch_collector::store::query::{roles, users};
    let hash = mcpwatch_collector::auth::password::hash(pw).expect("hash");
    mcpwatch_collector::store::admin::with_db(db, |c| {
        let id = users::create_user(c, name, &hash, mcpwatch_collector::now_ms())?;
        roles::bind(c, id, role, selector, mcpwatch_collector::now_ms())?;
        Ok(id)
    })
    .expect("create user")
}
