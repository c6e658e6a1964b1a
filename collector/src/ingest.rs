//! The ingest listener: accepts agent connections (bounded), runs the mutual-TLS handshake,
//! checks the Hello against the certificate's identity, then streams batches to the store
//! and acks each seq only once the store reports it durably committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::FuturesOrdered;
use futures::{SinkExt, StreamExt};
use mcpwatch_common::cert_info::{self, CertInfo};
use mcpwatch_common::tls::{self, Reloadable};
use mcpwatch_common::wire::{
    Batch, CodecError, CommandResult, Frame, FrameCodec, Hello, Reject, RejectReason, Welcome,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::command::{CommandRouter, PendingCommand};
use crate::metrics::CollectorMetrics;
use crate::refusal_log::{RefusalLog, Verdict};
use crate::store::{IngestBatch, IngestOutcome, Ingested, Store, StoreError};

/// Settings of the ingest listener, from the validated config.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub max_connections: usize,
    pub handshake_timeout: std::time::Duration,
    pub idle_timeout: std::time::Duration,
    pub max_frame_len: usize,
    pub max_in_flight: usize,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("tls handshake: {0}")]
    Handshake(std::io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("client certificate: {0}")]
    Identity(#[from] tls::TlsError),
    #[error("stream: {0}")]
    Codec(#[from] CodecError),
    #[error("refused hello: {0}")]
    Refused(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl SessionError {
    fn reason(&self) -> &'static str {
        match self {
            SessionError::Handshake(_) => "tls",
            SessionError::Timeout(_) => "timeout",
            SessionError::Identity(_) => "identity",
            SessionError::Codec(CodecError::Io(_)) => "io",
            SessionError::Codec(CodecError::Malformed(_)) => "malformed_frame",
            SessionError::Refused(_) => "refused",
            SessionError::Protocol(_) => "protocol",
            SessionError::Store(_) => "store",
        }
    }
}

/// Accepts connections until `shutdown`; each session runs on `tracker`.
#[allow(clippy::too_many_arguments)] // one call site; each is a distinct shared resource
pub async fn serve(
    listener: TcpListener,
    tls: Arc<Reloadable<ServerConfig>>,
    store: Store,
    router: CommandRouter,
    metrics: Arc<CollectorMetrics>,
    settings: IngestSettings,
    pki: crate::pki::Pki,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let next_conn = AtomicU64::new(1);
    let refusals = Arc::new(RefusalLog::new(
        REFUSALS_LOGGED_PER_MINUTE,
        std::time::Duration::from_secs(60),
    ));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.connections_refused_total.inc();
            log_refusal(&refusals, "limit", peer, || {
                tracing::warn!(%peer, limit = settings.max_connections, "connection limit reached; refusing");
            });
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = next_conn.fetch_add(1, Ordering::Relaxed);
        let session = Session {
            conn,
            peer,
            acceptor: TlsAcceptor::from(tls.get()),
            store: store.clone(),
            router: router.clone(),
            metrics: metrics.clone(),
            settings: settings.clone(),
            refusals: refusals.clone(),
            pki: pki.clone(),
        };
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            session.metrics.connections_active.inc();
            session.run(tcp, shutdown).await;
            session.metrics.connections_active.dec();
            drop(permit);
        });
    }
}

struct Session {
    conn: u64,
    peer: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    store: Store,
    router: CommandRouter,
    metrics: Arc<CollectorMetrics>,
    settings: IngestSettings,
    refusals: Arc<RefusalLog>,
    pki: crate::pki::Pki,
}

/// Refusals logged in full per reason and source address each minute; the rest are counted
/// (the refusal metrics count every one) and summed up in one line.
const REFUSALS_LOGGED_PER_MINUTE: u32 = 5;

/// Logs a refusal (`line`) unless this reason and address already had their share this
/// minute; writes the summaries of windows that ended.
fn log_refusal(
    refusals: &RefusalLog,
    reason: &'static str,
    peer: std::net::SocketAddr,
    line: impl FnOnce(),
) {
    let (verdict, summaries) = refusals.refused(reason, peer.ip(), std::time::Instant::now());
    for s in summaries {
        let addr = s
            .addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "many".into());
        tracing::warn!(reason = s.reason, peer = %addr, suppressed = s.count,
            "agent connections refused in the last minute and not logged one by one");
    }
    if verdict == Verdict::Log {
        line();
    }
}

type Stream = Framed<tokio_rustls::server::TlsStream<TcpStream>, FrameCodec>;

/// The first frame, which must be a Hello within `timeout`.
async fn read_hello(
    framed: &mut Stream,
    timeout: std::time::Duration,
) -> Result<Hello, SessionError> {
    match tokio::time::timeout(timeout, framed.next()).await {
        Err(_) => Err(SessionError::Timeout("hello")),
        Ok(None) => Err(SessionError::Protocol("closed before hello".into())),
        Ok(Some(frame)) => match frame? {
            Frame::Hello(h) => Ok(h),
            other => Err(SessionError::Protocol(format!(
                "first frame must be Hello, got {}",
                frame_name(&other)
            ))),
        },
    }
}

/// Tells the agent why it is refused; it may already be gone, which changes nothing.
async fn reject(framed: &mut Stream, reason: RejectReason, message: String) {
    let _ = framed.send(Frame::Reject(Reject { reason, message })).await;
}

impl Session {
    async fn run(&self, tcp: TcpStream, shutdown: CancellationToken) {
        let peer = self.peer;
        let (mut framed, agent_id, host_id, certificate) = match self.handshake(tcp).await {
            Ok(ok) => ok,
            Err(err) => {
                self.metrics.handshake_failure(err.reason());
                log_refusal(&self.refusals, err.reason(), peer, || {
                    tracing::warn!(%peer, reason = err.reason(), error = %err, "agent connection refused");
                });
                return;
            }
        };
        self.metrics.agents_connected.inc();
        let commands = self.router.register(&agent_id, self.conn);
        // Every line about this session's batches and commands names the agent.
        let span = tracing::info_span!("agent", agent_id = %agent_id, host_id, conn = self.conn);
        let result = self
            .stream(
                &mut framed,
                &agent_id,
                host_id,
                &certificate,
                commands,
                &shutdown,
            )
            .instrument(span)
            .await;
        self.router.unregister(&agent_id, self.conn);
        self.metrics.agents_connected.dec();
        self.store
            .agent_disconnected(host_id, self.conn, crate::now_ms())
            .await;
        match result {
            Ok(()) => {
                self.metrics.session_closed("shutdown");
                tracing::info!(%peer, agent_id = %agent_id, "agent session closed");
            }
            Err(err) => {
                self.metrics.session_closed(err.reason());
                tracing::warn!(%peer, agent_id = %agent_id, reason = err.reason(), error = %err, "agent session ended");
            }
        }
    }

    /// TLS, identity, Hello → Welcome. Returns the framed stream, agent id, host id and the
    /// client certificate.
    async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> Result<(Stream, String, i64, CertInfo), SessionError> {
        let timeout = self.settings.handshake_timeout;
        let stream = tokio::time::timeout(timeout, self.acceptor.accept(tcp))
            .await
            .map_err(|_| SessionError::Timeout("tls handshake"))?
            .map_err(SessionError::Handshake)?;
        let (identity, certificate) = {
            let (_, conn) = stream.get_ref();
            let cert = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or(tls::TlsError::NoIdentity)?;
            (tls::identity_of(cert)?, cert_info::inspect(cert.as_ref())?)
        };
        let mut framed = Framed::new(stream, FrameCodec::new(self.settings.max_frame_len));
        let hello = read_hello(&mut framed, timeout).await?;
        // Answer in the agent's version when it is one this collector still serves.
        if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.protocol_version) {
            framed.codec_mut().speak_version(hello.protocol_version);
        }
        if let Some((reason, message)) = check_hello(&hello, &identity) {
            reject(&mut framed, reason, message.clone()).await;
            return Err(SessionError::Refused(message));
        }
        let session = match self
            .store
            .register_agent(
                self.conn,
                &identity,
                &hello.hostname,
                &hello.agent_version,
                &hello.boot_id,
                crate::now_ms(),
            )
            .await
        {
            Ok(s) => s,
            Err(StoreError::Revoked(_)) => {
                let message = format!("agent identity {identity:?} is revoked");
                reject(&mut framed, RejectReason::Revoked, message.clone()).await;
                return Err(SessionError::Refused(message));
            }
            Err(err) => {
                let message = "collector storage unavailable".into();
                reject(&mut framed, RejectReason::Internal, message).await;
                return Err(err.into());
            }
        };
        let welcome = Frame::Welcome(Welcome {
            protocol_version: hello.protocol_version,
            resume_from_seq: session.last_seq + 1,
            // The config bounds it to 64 MiB.
            max_frame_len: u32::try_from(self.settings.max_frame_len).unwrap_or(u32::MAX),
        });
        if let Err(err) = framed.send(welcome).await {
            // Registered but never streaming: the store must not count it as live.
            self.store
                .agent_disconnected(session.host_id, self.conn, crate::now_ms())
                .await;
            return Err(err.into());
        }
        tracing::info!(peer = %self.peer, agent_id = %identity, host_id = session.host_id,
            resume_from_seq = session.last_seq + 1, agent_last_acked = hello.last_acked_seq,
            serial = %certificate.serial, "agent connected");
        self.pki.note_seen(&self.store, certificate.clone()).await;
        Ok((framed, identity, session.host_id, certificate))
    }

    /// Batches in, acks out in order, each after its commit. Reading pauses while
    /// `max_in_flight` batches wait for the store.
    async fn stream(
        &self,
        framed: &mut Stream,
        agent_id: &str,
        host_id: i64,
        certificate: &CertInfo,
        mut commands: tokio::sync::mpsc::Receiver<PendingCommand>,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        let serial = certificate.serial.as_str();
        let mut pending = FuturesOrdered::new();
        // A revocation ends the session at once; one made since the handshake counts too.
        let mut revocations = self.pki.revoked().subscribe();
        if self.pki.revoked().contains(serial) {
            return Err(SessionError::Refused(format!(
                "certificate {serial} revoked"
            )));
        }
        // Commands sent and not yet answered; dropped with the session, which tells each
        // waiting caller the agent went away.
        let mut awaiting: HashMap<u64, oneshot::Sender<CommandResult>> = HashMap::new();
        loop {
            let can_read = pending.len() < self.settings.max_in_flight;
            tokio::select! {
                // Acks first: they free the window and the agent's spool.
                biased;
                // A revoked certificate's session ends before anything else it sent counts.
                Ok(()) = revocations.changed() => {
                    if self.pki.revoked().contains(serial) {
                        return Err(SessionError::Refused(format!("certificate {serial} revoked")));
                    }
                }
                Some(done) = pending.next(), if !pending.is_empty() => {
                    let (seq, samples, events, received, result): (u64, u64, u64, Instant, Result<Ingested, StoreError>) = done;
                    let ingested = match result {
                        Ok(i) => i,
                        Err(err) => {
                            self.metrics.batch("failed");
                            tracing::warn!(seq, samples, error = %err, "batch not committed; ending the session");
                            return Err(err.into());
                        }
                    };
                    self.series_refused(agent_id, &ingested);
                    match ingested.outcome {
                        IngestOutcome::Committed => {
                            self.metrics.batch("committed");
                            self.metrics.samples_ingested_total.inc_by(samples.saturating_sub(ingested.refused_samples));
                            self.metrics.events_ingested_total.inc_by(events);
                            self.metrics.commit_latency_seconds.observe(received.elapsed().as_secs_f64());
                            tracing::trace!(seq, samples, events, "batch committed");
                        }
                        IngestOutcome::Duplicate => {
                            self.metrics.batch("duplicate");
                            tracing::debug!(seq, "batch already committed; acknowledged again");
                        }
                    }
                    framed.send(Frame::Ack { seq }).await?;
                }
                frame = tokio::time::timeout(self.settings.idle_timeout, framed.next()), if can_read => {
                    let frame = match frame {
                        Err(_) => return Err(SessionError::Timeout("a frame (idle)")),
                        Ok(None) => return Ok(()),
                        Ok(Some(f)) => f?,
                    };
                    match frame {
                        // Queued in arrival order (awaiting queue space is the backpressure);
                        // the commit is awaited in `pending`, acks go out in the same order.
                        Frame::Batch(batch) => pending.push_back(self.submit(host_id, batch).await?),
                        Frame::CommandResult(r) => {
                            tracing::info!(agent_id, command_id = r.id, ok = r.ok, message = %r.message, "command result");
                            match awaiting.remove(&r.id) {
                                Some(reply) => { let _ = reply.send(r); }
                                None => tracing::warn!(agent_id, command_id = r.id, "result for a command not awaited"),
                            }
                        }
                        Frame::RenewRequest(r) => {
                            let result = self.pki.renew(&self.store, certificate, &r.csr_der).await;
                            framed.send(Frame::RenewResult(result)).await?;
                        }
                        other => {
                            return Err(SessionError::Protocol(format!("unexpected {} from agent", frame_name(&other))));
                        }
                    }
                }
                Some(cmd) = commands.recv() => {
                    tracing::info!(agent_id, command_id = cmd.command.id, action = ?cmd.command.action, "sending command");
                    awaiting.insert(cmd.command.id, cmd.reply);
                    framed.send(Frame::Command(cmd.command)).await?;
                }
                _ = shutdown.cancelled() => {
                    // Let what is already queued commit and be acked, then close.
                    while let Some((seq, _, _, _, result)) = pending.next().await {
                        match &result {
                            Ok(ingested) => {
                                self.series_refused(agent_id, ingested);
                                framed.send(Frame::Ack { seq }).await?;
                            }
                            Err(err) => tracing::warn!(seq, error = %err,
                                "batch not committed at shutdown; the agent will resend it"),
                        }
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Counts series the store refused (the agent's series limit) and logs it, rate-limited
    /// per address. The batch is acked all the same: the agent cannot do better by sending
    /// it again, so the refusal is the operator's to see (metrics, this log, the host's
    /// `series_limit` event).
    fn series_refused(&self, agent_id: &str, ingested: &Ingested) {
        if ingested.refused_series == 0 && ingested.refused_samples == 0 {
            return;
        }
        self.metrics.series_refused(
            "agent_limit",
            u64::from(ingested.refused_series),
            ingested.refused_samples,
        );
        if ingested.refused_series > 0 {
            let peer = self.peer;
            log_refusal(&self.refusals, "series_limit", peer, || {
                tracing::warn!(%peer, agent_id, refused_series = ingested.refused_series,
                    dropped_samples = ingested.refused_samples,
                    "agent is at [ingest] max_series_per_agent: new series refused, their samples dropped");
            });
        }
    }

    async fn submit(
        &self,
        host_id: i64,
        batch: Batch,
    ) -> Result<
        impl std::future::Future<Output = (u64, u64, u64, Instant, Result<Ingested, StoreError>)>,
        SessionError,
    > {
        let received = Instant::now();
        let (seq, samples, events) = (
            batch.seq,
            batch.samples.len() as u64,
            batch.events.len() as u64,
        );
        let request = IngestBatch {
            conn: self.conn,
            host_id,
            seq: batch.seq,
            new_series: batch.new_series,
            samples: batch.samples,
            events: batch.events,
            received,
        };
        let committed = self.store.submit(request).await.inspect_err(|err| {
            tracing::warn!(seq, error = %err, "batch not queued for the store");
        })?;
        Ok(async move { (seq, samples, events, received, committed.await) })
    }
}

/// Why a Hello is refused, if it is.
fn check_hello(hello: &Hello, identity: &str) -> Option<(RejectReason, String)> {
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.protocol_version) {
        return Some((
            RejectReason::ProtocolVersion,
            format!(
                "protocol version {} not supported; this collector speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}",
                hello.protocol_version
            ),
        ));
    }
    if hello.agent_id != identity {
        return Some((
            RejectReason::IdentityMismatch,
            format!(
                "hello claims agent_id {:?} but the certificate identifies {:?}",
                hello.agent_id, identity
            ),
        ));
    }
    None
}

fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello(_) => "Hello",
        Frame::Welcome(_) => "Welcome",
        Frame::Reject(_) => "Reject",
        Frame::Batch(_) => "Batch",
        Frame::Ack { .. } => "Ack",
        Frame::Command(_) => "Command",
        Frame::CommandResult(_) => "CommandResult",
        Frame::RenewRequest(_) => "RenewRequest",
        Frame::RenewResult(_) => "RenewResult",
    }
}
