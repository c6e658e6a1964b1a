//! A simulated agent for end-to-end tests and benchmarks: one mutual-TLS connection made with
//! [`Conn`], Hello/Welcome, then batches of samples whose series are declared (`SeriesDef`)
//! the first time this connection uses them, each batch waiting for its `Ack`. Also the
//! alerting configuration most alerting tests share: the `test_high` rule and fast
//! `[alerting]` settings.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcpwatch_common::wire::{Batch, Event, Frame, Hello, Sample, SeriesDef, SeriesKey};

use crate::client::{AnyError, Conn};

/// The rules file of the alerting tests: `test_high` fires when the last `test_value` in
/// `window` is above 0.5; its summary is `test {i} on {host}`.
pub fn test_high_rules(window: &str) -> String {
    format!(
        r#"[[rule]]
name = "test_high"
selector = "test_value"
function = "last"
window = "{window}"
op = ">"
critical = 0.5
severity = "critical"
summary = "test {{{{ $labels.i }}}} on {{{{ $labels.host }}}}"
"#
    )
}

/// `[alerting]` settings (without the table header) for one notification per alert, at
/// once, with quick retries; rules from `rules.toml`, no built-in rules.
pub fn fast_alerting(repeat_interval: &str) -> String {
    format!(
        "rule_files = [\"rules.toml\"]\nbuiltin_rules = false\ngroup_by = [\"...\"]\n\
         group_wait = \"0s\"\ngroup_interval = \"1s\"\nrepeat_interval = \"{repeat_interval}\"\n\
         retry_initial = \"200ms\"\nretry_max = \"1s\"\n"
    )
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_millis()).expect("ms fit i64")
}

/// How a batch waits for its Ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckWait {
    /// The next frame must be the Ack; anything else is an error.
    Next,
    /// Frames before the Ack (commands, for instance) are skipped.
    SkipOthers,
}

/// A hand-driven agent connection.
pub struct SimAgent {
    pub conn: Conn,
    /// The next seq to send: the collector's `resume_from_seq` at connect, +1 per batch.
    pub seq: u64,
    agent_id: String,
    ids: HashMap<SeriesKey, u32>,
    next_id: u32,
    ack: AckWait,
    ack_timeout: Option<Duration>,
}

impl SimAgent {
    /// Connects and sends `hello`; an error unless the collector answers Welcome. Series ids
    /// start at 1, the Ack must be the next frame, and it must come within 10 s.
    pub async fn try_connect(
        ingest: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        hello: Hello,
    ) -> Result<SimAgent, AnyError> {
        let mut conn = Conn::open(ingest, tls).await?;
        let agent_id = hello.agent_id.clone();
        let seq = match conn.handshake(hello).await? {
            Frame::Welcome(w) => w.resume_from_seq,
            other => return Err(format!("{agent_id}: expected Welcome, got {other:?}").into()),
        };
        Ok(SimAgent {
            conn,
            seq,
            agent_id,
            ids: HashMap::new(),
            next_id: 1,
            ack: AckWait::Next,
            ack_timeout: Some(Duration::from_secs(10)),
        })
    }

    /// [`SimAgent::try_connect`] with `Conn::hello(agent_id)`; panics unless welcomed.
    pub async fn connect(
        ingest: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        agent_id: &str,
    ) -> SimAgent {
        Self::resume(ingest, tls, agent_id, 0).await
    }

    /// Like [`SimAgent::connect`], with `last_acked_seq` in the Hello (a reconnect).
    pub async fn resume(
        ingest: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        agent_id: &str,
        last_acked_seq: u64,
    ) -> SimAgent {
        let mut hello = Conn::hello(agent_id);
        hello.last_acked_seq = last_acked_seq;
        Self::try_connect(ingest, tls, hello)
            .await
            .unwrap_or_else(|e| panic!("connect to collector: {e}"))
    }

    /// The id the first series this connection declares gets (the next ones follow).
    pub fn first_series_id(mut self, id: u32) -> SimAgent {
        self.next_id = id;
        self
    }

    /// How batches wait for their Ack.
    pub fn ack_wait(mut self, ack: AckWait) -> SimAgent {
        self.ack = ack;
        self
    }

    /// How long a batch waits for its Ack (None: no limit).
    pub fn ack_timeout(mut self, timeout: Option<Duration>) -> SimAgent {
        self.ack_timeout = timeout;
        self
    }

    /// Sends one batch of `(series, ts_ms, value)` samples and `events`, declaring series
    /// not used before on this connection, and waits for its Ack; returns its seq.
    pub async fn try_push(
        &mut self,
        samples: &[(SeriesKey, i64, f64)],
        events: Vec<Event>,
    ) -> Result<u64, AnyError> {
        let mut new_series = Vec::new();
        let mut out = Vec::with_capacity(samples.len());
        for (key, ts, v) in samples {
            let id = match self.ids.get(key) {
                Some(&id) => id,
                None => {
                    let id = self.next_id;
                    self.next_id = id.checked_add(1).ok_or("series ids exhausted")?;
                    self.ids.insert(key.clone(), id);
                    new_series.push(SeriesDef {
                        id,
                        key: key.clone(),
                    });
                    id
                }
            };
            out.push(Sample {
                series: id,
                ts_ms: *ts,
                value: *v,
            });
        }
        let seq = self.seq;
        self.conn
            .send(Frame::Batch(Batch {
                seq,
                new_series,
                samples: out,
                events,
            }))
            .await?;
        loop {
            let reply = match self.ack_timeout {
                Some(t) => tokio::time::timeout(t, self.conn.recv())
                    .await
                    .map_err(|_| format!("no Ack within {} s", t.as_secs()))?,
                None => self.conn.recv().await,
            }
            .map_err(|e| format!("collector closed the stream: {e}"))?;
            match reply {
                Frame::Ack { seq: acked } if acked >= seq => break,
                _ if self.ack == AckWait::SkipOthers => continue,
                other => {
                    return Err(format!(
                        "{}: expected Ack {{ seq: {seq} }}, got {other:?}",
                        self.agent_id
                    )
                    .into())
                }
            }
        }
        self.seq += 1;
        Ok(seq)
    }

    /// [`SimAgent::try_push`]; panics on any failure.
    pub async fn push(&mut self, samples: &[(SeriesKey, i64, f64)], events: Vec<Event>) -> u64 {
        self.try_push(samples, events)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends `metric{i=i} value` at the current wall-clock time and waits for the Ack (the
    /// sample is committed, and the rules reading it evaluated, when this returns); returns
    /// the batch's seq.
    pub async fn send(&mut self, metric: &str, i: &str, value: f64) -> u64 {
        let key = SeriesKey::new(metric, &[("i", i)]);
        self.push(&[(key, wall_ms(), value)], Vec::new()).await
    }
}
