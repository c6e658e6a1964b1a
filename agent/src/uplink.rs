//! The durable uplink: replays the spool to the collector over mutual TLS, in seq order,
//! with a window of un-acked batches, deleting records only once the collector has acked
//! them (after its durable commit). Reconnects with exponential backoff and jitter.
//!
//! No frame leaves above the session's frame limit, the smaller of the agent's own and the
//! collector's (sent in its Welcome): a record whose frame would exceed it is replaced in
//! the spool by records that fit, and what is too large even alone is set aside and reported
//! as a gap, so one record can never end every session it is resent in.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use mcpwatch_common::backoff::ExponentialBackoff;
use mcpwatch_common::tls::Reloadable;
use mcpwatch_common::wire::{
    self, Batch, Command, CommandResult, Frame, FrameCodec, Hello, RenewRequest, RenewResult,
    Sample, SeriesDef, SeriesKey, MIN_FRAME_LIMIT, PROTOCOL_VERSION,
};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::mcp_servers::AgentCommand;
use crate::metrics::{AgentMetrics, UplinkErrorKind};
use crate::renewal;
use crate::spool::{stored_wire_len_bound, SpoolError, SpoolHandle, StoredRecord};

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("tls handshake: {0}")]
    Tls(std::io::Error),
    #[error("timed out during {0}")]
    Timeout(&'static str),
    #[error("stream: {0}")]
    Codec(#[from] wire::CodecError),
    #[error("rejected by collector ({reason:?}): {message}")]
    Rejected {
        reason: wire::RejectReason,
        message: String,
    },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("collector closed the stream")]
    Closed,
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
}

impl UplinkError {
    /// Label for `mcpwatch_agent_uplink_errors_total{kind}`.
    pub fn kind(&self) -> UplinkErrorKind {
        match self {
            UplinkError::Connect { .. } | UplinkError::Closed | UplinkError::Timeout(_) => {
                UplinkErrorKind::Io
            }
            UplinkError::Tls(_) => UplinkErrorKind::Tls,
            UplinkError::Codec(_) | UplinkError::Protocol(_) | UplinkError::Spool(_) => {
                UplinkErrorKind::Protocol
            }
            UplinkError::Rejected { .. } => UplinkErrorKind::Rejected,
        }
    }
}

/// Everything the uplink needs; built by `agent::run`.
pub struct Uplink {
    pub agent_id: String,
    pub hostname: String,
    pub boot_id: String,
    pub address: String,
    pub server_name: ServerName<'static>,
    pub tls: Arc<Reloadable<ClientConfig>>,
    pub max_frame_len: usize,
    pub max_in_flight: usize,
    pub connect_timeout: std::time::Duration,
    /// Delay before reconnect attempt n (jittered).
    pub reconnect: ExponentialBackoff,
    /// The spool this uplink replays; its writer signals each append through it.
    pub spool: SpoolHandle,
    pub metrics: Arc<AgentMetrics>,
    /// Where operator commands go; `None` when this agent supervises nothing.
    pub commands: Option<mpsc::Sender<AgentCommand>>,
    /// The collector's certificate at the last handshake, for its expiry sample.
    pub peer_certificate: crate::sampler::certificates::PeerCertificate,
    /// This agent's TLS files: renewal replaces the key and certificate there.
    pub files: mcpwatch_common::tls::TlsFiles,
}

/// Longest a command may take at the agent (a container restart included) before the
/// uplink answers for it.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// How a session ended without error.
enum SessionEnd {
    Stopped,
    Drained,
    /// A renewed certificate is in place: connect again at once with it.
    Renewed,
}

impl Uplink {
    /// Runs until `stop` is cancelled, or until `drain` is cancelled and every spooled batch
    /// has been acknowledged.
    pub async fn run(self, drain: CancellationToken, stop: CancellationToken) {
        let mut attempt: u32 = 0;
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                r = self.session(&drain, &mut attempt) => r,
                _ = stop.cancelled() => Ok(SessionEnd::Stopped),
            };
            self.metrics.uplink_connected.set(0);
            match result {
                Ok(SessionEnd::Stopped) | Ok(SessionEnd::Drained) => return,
                // Not a failure: no backoff, the spool replays what was not acked yet.
                Ok(SessionEnd::Renewed) => continue,
                Err(err) => {
                    self.metrics.inc_uplink_error(err.kind());
                    tracing::warn!(agent_id = %self.agent_id, address = %self.address,
                        error = %err, after_ms = started.elapsed().as_millis() as u64,
                        "uplink session ended");
                }
            }
            if drain.is_cancelled() && self.pending().await == 0 {
                return;
            }
            let delay = self.reconnect.delay(attempt);
            attempt = attempt.saturating_add(1);
            self.metrics.reconnects_total.inc();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn pending(&self) -> u64 {
        self.spool.run(|spool| spool.stats().records_pending).await
    }

    // Over 80 lines on purpose: connect, handshake and the send/ack loop share the connection
    // and the in-flight window; one linear function keeps that state in one scope.
    async fn session(
        &self,
        drain: &CancellationToken,
        attempt: &mut u32,
    ) -> Result<SessionEnd, UplinkError> {
        let timeout = self.connect_timeout;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| UplinkError::Timeout("connect"))?
            .map_err(|source| UplinkError::Connect {
                address: self.address.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let connector = TlsConnector::from(self.tls.get());
        let stream =
            tokio::time::timeout(timeout, connector.connect(self.server_name.clone(), tcp))
                .await
                .map_err(|_| UplinkError::Timeout("tls handshake"))?
                .map_err(UplinkError::Tls)?;
        if let Some(cert) = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
        {
            if let Ok(info) = mcpwatch_common::cert_info::inspect(cert.as_ref()) {
                *self
                    .peer_certificate
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(info);
            }
        }
        let mut framed = Framed::new(stream, FrameCodec::new(self.max_frame_len));

        let last_acked = self.spool.lock().last_acked();
        framed
            .send(Frame::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_id: self.agent_id.clone(),
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                hostname: self.hostname.clone(),
                boot_id: self.boot_id.clone(),
                last_acked_seq: last_acked,
            }))
            .await?;
        let welcome = match tokio::time::timeout(timeout, framed.next()).await {
            Err(_) => return Err(UplinkError::Timeout("welcome")),
            Ok(None) => return Err(UplinkError::Closed),
            Ok(Some(frame)) => match frame? {
                Frame::Welcome(w) => w,
                Frame::Reject(r) => {
                    return Err(UplinkError::Rejected {
                        reason: r.reason,
                        message: r.message,
                    })
                }
                other => {
                    return Err(UplinkError::Protocol(format!(
                        "expected Welcome, got {other:?}"
                    )))
                }
            },
        };
        if welcome.protocol_version != PROTOCOL_VERSION {
            return Err(UplinkError::Protocol(format!(
                "collector speaks protocol {}, agent {}",
                welcome.protocol_version, PROTOCOL_VERSION
            )));
        }
        // Both configs refuse limits below this; a smaller one would set every record aside.
        if (welcome.max_frame_len as usize) < MIN_FRAME_LIMIT {
            return Err(UplinkError::Protocol(format!(
                "collector frame limit {} is below {MIN_FRAME_LIMIT}",
                welcome.max_frame_len
            )));
        }
        let limit = self.max_frame_len.min(welcome.max_frame_len as usize);
        // Batches stored from now on are cut to what this collector accepts.
        self.spool.lock().set_max_frame_len(limit);
        // The collector has committed everything below resume_from_seq: those records are
        // acknowledged even if their Ack frames were lost with the previous connection.
        let mut last_acked = last_acked;
        if welcome.resume_from_seq > last_acked + 1 {
            self.ack(welcome.resume_from_seq - 1).await?;
        } else if welcome.resume_from_seq <= last_acked {
            // It lacks batches it once acknowledged: its database was restored from a
            // backup. What the spool still keeps of them is sent again.
            let from = welcome.resume_from_seq;
            let reopened = self.spool.run(move |spool| spool.rewind(from)).await?;
            last_acked = from.saturating_sub(1);
            tracing::warn!(agent_id = %self.agent_id, resume_from_seq = from, reopened,
                "collector lacks acknowledged batches (restored from a backup?); replaying what the spool keeps");
        }
        *attempt = 0;
        self.metrics.uplink_connected.set(1);
        tracing::info!(agent_id = %self.agent_id, address = %self.address,
            resume_from_seq = welcome.resume_from_seq, max_frame_len = limit,
            "connected to collector");

        // Renewal: due at two thirds of the certificate's lifetime; the new key waits here
        // for the collector's answer.
        let due = renewal::current(&self.files)
            .map(|c| renewal::due_in(&c, mcpwatch_common::time::now_ms() / 1000))
            .unwrap_or(renewal::RETRY);
        let renew_timer = tokio::time::sleep(due);
        tokio::pin!(renew_timer);
        let mut renew_key: Option<String> = None;
        let (results_tx, mut results_rx) = mpsc::channel::<CommandResult>(32);
        let mut next = welcome.resume_from_seq.max(last_acked + 1);
        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let mut interned = Interner::default();
        loop {
            if in_flight.len() < self.max_in_flight {
                let records = self
                    .read(next, self.max_in_flight - in_flight.len(), limit)
                    .await?;
                let mut sent = 0;
                for record in records {
                    let seq = record.seq;
                    next = seq + 1;
                    match interned.fit(record, limit)? {
                        Fitted::Frame(frame) => {
                            in_flight.push_back(seq);
                            framed.feed(frame).await?;
                            sent += 1;
                        }
                        Fitted::TooLarge(record, len) => self.replace(record, len, limit).await?,
                    }
                }
                if sent > 0 {
                    framed.flush().await?;
                    self.metrics.batches_sent_total.inc_by(sent);
                }
            }
            if drain.is_cancelled() && in_flight.is_empty() && self.pending().await == 0 {
                return Ok(SessionEnd::Drained);
            }
            let window_open = in_flight.len() < self.max_in_flight;
            tokio::select! {
                frame = framed.next() => match frame {
                    None => return Err(UplinkError::Closed),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Frame::Ack { seq })) => {
                        let before = in_flight.len();
                        while in_flight.front().is_some_and(|s| *s <= seq) {
                            in_flight.pop_front();
                        }
                        self.metrics.batches_acked_total.inc_by((before - in_flight.len()) as u64);
                        self.metrics.record_ack();
                        self.ack(seq).await?;
                    }
                    Some(Ok(Frame::Command(cmd))) => {
                        tracing::info!(agent_id = %self.agent_id, command_id = cmd.id, action = ?cmd.action, "command received");
                        // Run it beside the stream: a restart can take seconds and batches
                        // and acks must keep flowing meanwhile.
                        tokio::spawn(dispatch(cmd, self.commands.clone(), results_tx.clone()));
                    }
                    Some(Ok(Frame::RenewResult(r))) => {
                        if self.renewed(r, renew_key.take()) {
                            return Ok(SessionEnd::Renewed);
                        }
                    }
                    Some(Ok(other)) => {
                        return Err(UplinkError::Protocol(format!("unexpected frame {other:?}")));
                    }
                },
                _ = &mut renew_timer => {
                    // A later answer for an older key fails its key check and is retried.
                    renew_timer.as_mut().reset(tokio::time::Instant::now() + renewal::RETRY);
                    match renewal::request(&self.agent_id) {
                        Ok(r) => {
                            tracing::info!(agent_id = %self.agent_id, "certificate due for renewal; asking the collector");
                            renew_key = Some(r.key_pem);
                            framed.send(Frame::RenewRequest(RenewRequest { csr_der: r.csr_der })).await?;
                        }
                        Err(e) => {
                            self.metrics.inc_renewal("failed");
                            tracing::warn!(error = %e, "cannot make a renewal request");
                        }
                    }
                }
                Some(result) = results_rx.recv() => {
                    framed.send(Frame::CommandResult(result)).await?;
                }
                _ = self.spool.appended(), if window_open => {}
                _ = drain.cancelled(), if !drain.is_cancelled() => {}
            }
        }
    }

    /// Installs a renewed certificate; `true` when the session should reconnect with it.
    fn renewed(&self, r: RenewResult, key: Option<String>) -> bool {
        let outcome = match (r.ok, key) {
            (false, _) => {
                self.metrics.inc_renewal("refused");
                tracing::warn!(agent_id = %self.agent_id, reason = %r.message, "the collector refused to renew the certificate; trying again later");
                return false;
            }
            (true, None) => Err("an answer nobody asked for".to_owned()),
            (true, Some(key)) => {
                renewal::install(&self.files, &self.agent_id, &key, &r.certificate_pem).and_then(
                    |info| {
                        let config = mcpwatch_common::tls::client_config(&self.files)
                            .map_err(|e| e.to_string())?;
                        self.tls.set(config);
                        Ok(info)
                    },
                )
            }
        };
        match outcome {
            Ok(info) => {
                self.metrics.inc_renewal("renewed");
                tracing::info!(agent_id = %self.agent_id, serial = %info.serial,
                    not_after_s = info.not_after_s, "certificate renewed; reconnecting with it");
                true
            }
            Err(e) => {
                self.metrics.inc_renewal("failed");
                tracing::warn!(agent_id = %self.agent_id, error = %e, "installing the renewed certificate failed; trying again later");
                false
            }
        }
    }

    async fn read(
        &self,
        from: u64,
        max_records: usize,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, UplinkError> {
        // A read budget only (each record is its own frame): a few frames' worth.
        let max_bytes = limit.saturating_mul(2);
        let records = self
            .spool
            .run(move |spool| spool.read_from(from, max_records, max_bytes))
            .await?;
        Ok(records)
    }

    /// Replaces a record whose frame (`len` bytes) exceeds `limit` by records that fit, so
    /// the session goes on with the next one; the new records follow at the spool's end.
    async fn replace(
        &self,
        record: StoredRecord,
        len: usize,
        limit: usize,
    ) -> Result<(), UplinkError> {
        let seq = record.seq;
        let spool = self.spool.clone();
        let metrics = self.metrics.clone();
        let replaced = tokio::task::spawn_blocking(move || {
            let mut spool = spool.lock();
            let replaced = spool.replace_oversized(record, limit);
            metrics.observe_spool(&spool.stats());
            replaced
        })
        .await
        .map_err(|e| UplinkError::Protocol(format!("spool replace task failed: {e}")))??;
        if replaced.set_aside_samples + replaced.set_aside_events > 0 {
            tracing::warn!(agent_id = %self.agent_id, seq, frame_len = len, max_frame_len = limit,
                records = replaced.records, set_aside_samples = replaced.set_aside_samples,
                set_aside_events = replaced.set_aside_events, kept = replaced.kept,
                "spool record above the frame limit even when split; set aside and reported as a gap");
        } else {
            tracing::warn!(agent_id = %self.agent_id, seq, frame_len = len, max_frame_len = limit,
                records = replaced.records, "spool record above the frame limit; split");
        }
        // The new records are beyond this read: make the session look again at once.
        self.spool.notify_appended();
        Ok(())
    }

    async fn ack(&self, seq: u64) -> Result<(), UplinkError> {
        self.spool.run(move |spool| spool.ack(seq)).await?;
        Ok(())
    }
}

/// Runs one command through the dispatcher and queues its result for the session.
async fn dispatch(
    cmd: Command,
    commands: Option<mpsc::Sender<AgentCommand>>,
    results: mpsc::Sender<CommandResult>,
) {
    let outcome = match commands {
        None => Err("this agent supervises no MCP servers".to_owned()),
        Some(tx) => {
            let (reply, answer) = oneshot::channel();
            let sent = tx
                .send(AgentCommand {
                    action: cmd.action,
                    reply,
                })
                .await;
            match sent {
                Err(_) => Err("agent is shutting down".to_owned()),
                Ok(()) => match tokio::time::timeout(COMMAND_TIMEOUT, answer).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(_)) => Err("command dropped by the agent".to_owned()),
                    Err(_) => Err(format!("no outcome within {COMMAND_TIMEOUT:?}")),
                },
            }
        }
    };
    let (ok, message) = match outcome {
        Ok(m) => (true, m),
        Err(m) => (false, m),
    };
    // The session may be gone by now; the collector then reports a disconnect.
    let _ = results
        .send(CommandResult {
            id: cmd.id,
            ok,
            message,
        })
        .await;
}

/// Per-connection series interning: each key is sent in full once per connection. Keys are
/// held as their encoded bytes, looked up straight from the record's payload: a key costs one
/// allocation here, once, and none per cycle.
#[derive(Default)]
struct Interner {
    ids: HashMap<Box<[u8]>, u32>,
}

/// A record as one frame within the limit, or back unsent with its frame's size.
enum Fitted {
    Frame(Frame),
    TooLarge(StoredRecord, usize),
}

impl Interner {
    /// The record's frame if it fits in `limit` bytes; otherwise the record, with nothing
    /// interned (its keys were never declared to the collector).
    fn fit(&mut self, record: StoredRecord, limit: usize) -> Result<Fitted, UplinkError> {
        // The bound holds whatever ids are interned: most records need no exact measure.
        if stored_wire_len_bound(&record) <= limit {
            let (batch, _) = self.wire_batch(&record)?;
            return Ok(Fitted::Frame(Frame::Batch(batch)));
        }
        let (batch, new) = self.wire_batch(&record)?;
        let frame = Frame::Batch(batch);
        let len = wire::encoded_len(&frame)?;
        if len <= limit {
            return Ok(Fitted::Frame(frame));
        }
        // Ids are handed out as `ids.len()`: dropping the newest keeps that true.
        let keys: Vec<&[u8]> = record.series().collect();
        for key in new.iter().filter_map(|&i| keys.get(i)) {
            self.ids.remove(*key);
        }
        Ok(Fitted::TooLarge(record, len))
    }

    /// The record as a wire batch, and the table positions of the keys it declares.
    fn wire_batch(&mut self, record: &StoredRecord) -> Result<(Batch, Vec<usize>), UplinkError> {
        let mut new_series = Vec::new();
        let mut new = Vec::new();
        let mut local = Vec::with_capacity(record.series().len());
        for (i, key) in record.series().enumerate() {
            let id = match self.ids.get(key) {
                Some(id) => *id,
                None => {
                    let id = self.ids.len() as u32;
                    let decoded = postcard::from_bytes::<SeriesKey>(key)
                        .map_err(|_| SpoolError::Undecodable { seq: record.seq })?;
                    new_series.push(SeriesDef { id, key: decoded });
                    new.push(i);
                    self.ids.insert(key.into(), id);
                    id
                }
            };
            local.push(id);
        }
        let samples = record
            .samples
            .iter()
            .filter_map(|s| {
                // An index outside the record's own table can only come from a corrupt
                // record that still passed its checksum; drop that sample, keep the rest.
                let series = *local.get(s.series as usize)?;
                Some(Sample { series, ..*s })
            })
            .collect();
        let batch = Batch {
            seq: record.seq,
            new_series,
            samples,
            events: record.events.clone(),
        };
        Ok((batch, new))
    }
}

#[cfg(test)]
#[path = "uplink_tests.rs"]
mod tests;
