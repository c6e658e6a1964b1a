//! A blocking reader of the collector's live stream (`GET /api/v1/stream`) for tests: sends
//! the request with any headers, then yields server-sent events one at a time, each read
//! with a deadline (the stream never ends on its own).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One dispatched event (comments and `retry:` lines are not events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

pub struct EventStream {
    stream: TcpStream,
    /// Bytes of the chunked body not yet decoded.
    raw: Vec<u8>,
    /// Decoded body text not yet parsed into events.
    text: String,
    pub status: u16,
    pub head: String,
}

impl EventStream {
    /// Opens the stream at `path` with extra header lines (`name`, `value`).
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Self> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes())?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::other("closed before the response head"));
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        raw.drain(..end + 4);
        Ok(EventStream {
            stream,
            raw,
            text: String::new(),
            status,
            head,
        })
    }

    /// The next event within `timeout`; `None` on timeout or when the server closed.
    pub fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            self.decode_chunks();
            if let Some(e) = self.parse_one() {
                return Some(e);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let _ = self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
    }

    /// The first event `want` accepts within `timeout`, skipping others.
    pub fn find(
        &mut self,
        timeout: Duration,
        want: impl Fn(&SseEvent) -> bool,
    ) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let e = self.next(left)?;
            if want(&e) {
                return Some(e);
            }
        }
    }

    /// Moves complete chunks of the chunked body into `text`.
    fn decode_chunks(&mut self) {
        loop {
            let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size = String::from_utf8_lossy(&self.raw[..eol]);
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                return;
            };
            if self.raw.len() < eol + 2 + n + 2 {
                return;
            }
            let chunk = String::from_utf8_lossy(&self.raw[eol + 2..eol + 2 + n]).into_owned();
            self.text.push_str(&chunk);
            self.raw.drain(..eol + 2 + n + 2);
        }
    }

    fn parse_one(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.text.find("\n\n")?;
            let block: String = self.text.drain(..end + 2).collect();
            let mut event = SseEvent {
                id: None,
                event: "message".into(),
                data: String::new(),
            };
            let mut has_data = false;
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => event.id = Some(value.to_owned()),
                    "event" => event.event = value.to_owned(),
                    "data" => {
                        if has_data {
                            event.data.push('\n');
                        }
                        event.data.push_str(value);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            if has_data {
                return Some(event);
            }
        }
    }
}
