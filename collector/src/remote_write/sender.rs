//! One task per endpoint: read committed batches after the endpoint's cursor, turn them
//! into remote-write requests (one per shard: the batch's series split across at most
//! `max_shards` requests sent at once), send each until it is accepted or refused for
//! good, and only then advance the cursor in the database. A collector restart or a
//! receiver outage therefore loses nothing, and a crash resends at most the batch that was
//! in flight.
//!
//! Before a request goes, the raw row it reaches is recorded (`sending_to`; on a busy
//! endpoint, in the same write as the previous request's cursor). After a crash
//! the interrupted batch is read again up to that row and sent alone: a receiver that took
//! part of it (Prometheus refuses a whole request holding one sample older than a series'
//! newest) refuses only samples it already holds, never newer ones sent along with them.
//!
//! Retries: transport errors, 5xx and 429 wait the backoff (a 429's or 503's Retry-After
//! when longer) and try again, forever (the cursor waits; the lag grows and pages through
//! `remote_write_lagging`). Any other answer is final: its samples are dropped, counted
//! with the status as the reason, and logged with an excerpt of the body.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::config::Endpoint;
use super::encode::{self, TimeSeries};
use super::relabel::passes_all;
use super::series::{self, Refused};
use crate::alerting::OwnSeries;
use crate::metrics::CollectorMetrics;
use crate::store::query::remote_write::RawBatch;
use crate::store::{Store, StoreError};

/// The series rules read for `remote_write_lagging`.
pub const LAG_METRIC: &str = "mcpwatch_collector_remote_write_lag_seconds";
/// How often an idle sender looks for new batches.
const POLL: Duration = Duration::from_millis(200);
/// Host labels may change (relabel): cached series labels are dropped this often.
const LABEL_CACHE_TTL: Duration = Duration::from_secs(300);
/// Longest a Retry-After is honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Samples per shard below which another shard is not worth a request.
const MIN_SHARD_SAMPLES: usize = 1000;
/// How much of a refusing answer's body is logged.
const BODY_EXCERPT: usize = 300;

/// The labels of a series as this endpoint sends them; `None`: not sent (relabel or refused).
type Cached = Option<Arc<Vec<(String, String)>>>;

pub struct Sender {
    endpoint: Endpoint,
    store: Store,
    client: reqwest::Client,
    metrics: Arc<CollectorMetrics>,
    own: OwnSeries,
    labels: HashMap<i64, Cached>,
    labels_since: Instant,
}

/// Batches read but not yet sent.
#[derive(Default)]
struct Pending {
    batches: Vec<RawBatch>,
    samples: usize,
    /// Raw row id read up to (batches and unreadable rows).
    last_id: i64,
    since: Option<Instant>,
}

/// The task was asked to stop.
struct Stopped;

/// How a request ended: done (accepted, or dropped for good and counted), or a resend
/// refused, for the caller to split.
enum Sent {
    Done,
    Refused,
}

impl Sender {
    pub fn new(
        endpoint: Endpoint,
        store: Store,
        client: reqwest::Client,
        metrics: Arc<CollectorMetrics>,
        own: OwnSeries,
    ) -> Sender {
        Sender {
            endpoint,
            store,
            client,
            metrics,
            own,
            labels: HashMap::new(),
            labels_since: Instant::now(),
        }
    }

    fn name(&self) -> &str {
        &self.endpoint.name
    }

    /// Waits `d`; `Err(Stopped)` when `stop` came first.
    async fn wait(d: Duration, stop: &CancellationToken) -> Result<(), Stopped> {
        if crate::polling::pause(d, stop).await {
            Ok(())
        } else {
            Err(Stopped)
        }
    }

    /// Retries a store call until it answers (the store may be busy for a moment).
    async fn retry_store<T, F, Fut>(
        &self,
        what: &str,
        stop: &CancellationToken,
        mut f: F,
    ) -> Result<T, Stopped>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        loop {
            let answer = tokio::select! {
                _ = stop.cancelled() => return Err(Stopped),
                answer = f() => answer,
            };
            match answer {
                Ok(v) => return Ok(v),
                Err(e) => {
                    self.metrics.durability.remote_write_store_errors.inc();
                    tracing::warn!(endpoint = %self.name(), error = %e, what, "remote write: store failed; retrying");
                    Self::wait(Duration::from_secs(1), stop).await?;
                }
            }
        }
    }

    pub async fn run(mut self, stop: CancellationToken) {
        let _ = self.run_until_stopped(&stop).await;
    }

    async fn run_until_stopped(&mut self, stop: &CancellationToken) -> Result<(), Stopped> {
        let name = self.name().to_owned();
        let store = self.store.clone();
        let stored = {
            let n = name.clone();
            self.retry_store("cursor", stop, || store.remote_write_cursor(n.clone()))
                .await?
        };
        // A request's upper row, recorded before it goes: after a crash, the rows of the
        // request it interrupted, sent again alone.
        let mut bound = stored
            .filter(|c| c.sending_to > c.delivered)
            .map(|c| c.sending_to);
        let mut resending = bound.is_some();
        let mut cursor = match stored {
            Some(c) => c.delivered,
            None => {
                // A new endpoint starts with what is committed from now on: receivers refuse
                // samples far older than their head, so history is not backfilled.
                let newest = self
                    .retry_store("newest", stop, || store.newest_raw_id())
                    .await?;
                let n = name.clone();
                self.retry_store("cursor", stop, || {
                    store.set_remote_write_cursor(n.clone(), newest, None, crate::now_ms())
                })
                .await?;
                newest
            }
        };
        tracing::info!(endpoint = %name, cursor, resend_through = bound, "remote write started");
        let mut pending = Pending {
            last_id: cursor,
            ..Pending::default()
        };
        loop {
            let mut more = false;
            let through = bound.unwrap_or(i64::MAX);
            if pending.samples < self.endpoint.max_samples_per_send && pending.last_id < through {
                more = self.read_more(&mut pending, through, stop).await?;
                if bound.is_some()
                    && !more
                    && pending.batches.is_empty()
                    && pending.last_id < through
                {
                    // Nothing left at or below the bound (retention took it): carry on.
                    bound = None;
                    resending = false;
                }
            }
            // Before sending: the oldest batch read and not yet delivered (0 when none waits).
            // Only an empty read resets it, so a backlog shows while it drains.
            self.set_lag(pending.batches.first().map(|b| b.committed_ms));
            let bound_reached = bound.is_some_and(|t| pending.last_id >= t);
            let full =
                pending.samples >= self.endpoint.max_samples_per_send || more || bound_reached;
            let old = pending
                .since
                .is_some_and(|s| s.elapsed() >= self.endpoint.batch_send_deadline);
            if pending.last_id > cursor && (full || old) {
                // A bound on record covers this request (all of it, or its first part when
                // a resend's rows exceed one request): nothing to write before sending.
                if bound.is_none() {
                    let (n, upto) = (name.clone(), pending.last_id);
                    self.retry_store("sending", stop, || {
                        store.set_remote_write_sending(n.clone(), upto)
                    })
                    .await?;
                }
                self.send(&pending.batches, resending, stop).await?;
                cursor = pending.last_id;
                pending = Pending {
                    last_id: cursor,
                    ..Pending::default()
                };
                if bound.is_some() && !bound_reached {
                    // The rest of a resend, up to its bound, still goes alone.
                    let n = name.clone();
                    self.retry_store("cursor", stop, || {
                        store.set_remote_write_cursor(n.clone(), cursor, None, crate::now_ms())
                    })
                    .await?;
                    continue;
                }
                resending = false;
                // What is committed already starts the next request. When it fills one (a
                // busy collector), its bound goes in the same write as this cursor, so a
                // request costs one write, not two.
                let more = self.read_more(&mut pending, i64::MAX, stop).await?;
                let next_full = more || pending.samples >= self.endpoint.max_samples_per_send;
                bound = (next_full && pending.last_id > cursor).then_some(pending.last_id);
                let n = name.clone();
                self.retry_store("cursor", stop, || {
                    store.set_remote_write_cursor(n.clone(), cursor, bound, crate::now_ms())
                })
                .await?;
                continue;
            }
            if !more {
                let wait = match pending.since {
                    Some(s) => POLL.min(
                        self.endpoint
                            .batch_send_deadline
                            .saturating_sub(s.elapsed()),
                    ),
                    None => POLL,
                };
                Self::wait(wait.max(Duration::from_millis(1)), stop).await?;
            }
        }
    }

    /// Reads committed batches after `pending` (up to raw row `through`) into it, within the
    /// request's sample budget; whether more were waiting.
    async fn read_more(
        &self,
        pending: &mut Pending,
        through: i64,
        stop: &CancellationToken,
    ) -> Result<bool, Stopped> {
        let room = self
            .endpoint
            .max_samples_per_send
            .saturating_sub(pending.samples);
        if room == 0 {
            return Ok(true);
        }
        let from = pending.last_id;
        let store = self.store.clone();
        let read = self
            .retry_store("read", stop, || store.batches_after(from, through, room))
            .await?;
        if !read.unreadable.is_empty() {
            self.metrics.durability.remote_write_dropped(
                self.name(),
                "unreadable",
                read.unreadable.len() as u64,
            );
        }
        let last = read
            .batches
            .iter()
            .map(|b| b.id)
            .chain(read.unreadable.iter().copied())
            .max();
        if let Some(last) = last {
            pending.last_id = pending.last_id.max(last);
            pending.since.get_or_insert_with(Instant::now);
        }
        for b in read.batches {
            pending.samples += b.samples.len();
            pending.batches.push(b);
        }
        Ok(read.full)
    }

    /// Lag: how long ago the oldest unsent batch was stored (0 when none waits). From
    /// arrival, not sample time: a replayed spool is old data, not a slow endpoint.
    fn set_lag(&self, oldest_unsent_ts: Option<i64>) {
        let lag =
            oldest_unsent_ts.map_or(0.0, |ts| ((crate::now_ms() - ts).max(0) as f64) / 1000.0);
        self.metrics.durability.remote_write_lag(self.name(), lag);
        self.own.set(LAG_METRIC, &[("endpoint", self.name())], lag);
    }

    /// The labels of every series in `batches`, fetched for those not cached.
    async fn resolve(
        &mut self,
        batches: &[RawBatch],
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        if self.labels_since.elapsed() >= LABEL_CACHE_TTL {
            self.labels.clear();
            self.labels_since = Instant::now();
        }
        let mut missing: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.samples.iter().map(|s| s.0))
            .filter(|id| !self.labels.contains_key(id))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let metas = self
            .retry_store("series", stop, || store.series_meta(missing.clone()))
            .await?;
        for id in &missing {
            self.labels.insert(*id, None);
        }
        for meta in metas {
            let labels = match series::labels(&meta) {
                Ok(l) if passes_all(&self.endpoint.relabel, &l) => Some(Arc::new(l)),
                Ok(_) => None,
                Err(Refused::InvalidName) | Err(Refused::Unreadable) => {
                    tracing::debug!(endpoint = %self.name(), series = meta.id, name = %meta.name,
                        "remote write: series not sent (name or labels Prometheus refuses)");
                    None
                }
            };
            self.labels.insert(meta.id, labels);
        }
        Ok(())
    }

    /// Sends `batches`, returning once every shard was accepted or refused for good.
    async fn send(
        &mut self,
        batches: &[RawBatch],
        resend: bool,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        self.resolve(batches, stop).await?;
        // Per series, in the order series appear; samples in time order (a replayed batch
        // can be older than one committed before it).
        let mut by_series: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
        let mut skipped = 0u64;
        for b in batches {
            for &(id, ts, v) in &b.samples {
                match self.labels.get(&id) {
                    Some(Some(_)) => by_series.entry(id).or_default().push((ts, v)),
                    _ => skipped += 1,
                }
            }
        }
        if skipped > 0 {
            self.metrics
                .durability
                .remote_write_dropped(self.name(), "not_sent", skipped);
        }
        let total: usize = by_series.values().map(Vec::len).sum();
        if total == 0 {
            return Ok(());
        }
        let shards = self
            .endpoint
            .max_shards
            .min(total.div_ceil(MIN_SHARD_SAMPLES))
            .min(by_series.len())
            .max(1);
        self.metrics
            .durability
            .remote_write_shards(self.name(), shards);
        // By series id, not position: a resend of the same rows makes the same requests even
        // if a series dropped out meanwhile (a receiver that took one refuses only that one).
        let mut parts: Vec<Vec<TimeSeries>> = vec![Vec::new(); shards];
        for (id, mut samples) in by_series {
            samples.sort_by_key(|s| s.0);
            let labels = self
                .labels
                .get(&id)
                .cloned()
                .flatten()
                .map(|l| (*l).clone())
                .unwrap_or_default();
            let shard = usize::try_from(id.rem_euclid(shards as i64)).unwrap_or(0);
            parts[shard].push(TimeSeries { labels, samples });
        }
        let oldest = batches.first().map(|b| b.committed_ms);
        let sends = parts
            .iter()
            .map(|part| self.send_part(part, oldest, resend, stop));
        let results = futures::future::join_all(sends).await;
        let mut refused = Vec::new();
        for (part, result) in parts.into_iter().zip(results) {
            match result {
                Err(Stopped) => return Err(Stopped),
                Ok(Sent::Done) => {}
                Ok(Sent::Refused) => refused.push(part),
            }
        }
        // A resend refused as a whole may still hold series the receiver never got (the
        // crash came between two shards): halves are sent again until each refusal is one
        // series, which the receiver holds already.
        while let Some(part) = refused.pop() {
            if part.len() <= 1 {
                let n: usize = part.iter().map(|s| s.samples.len()).sum();
                self.metrics.durability.remote_write_dropped(
                    self.name(),
                    "resend_refused",
                    n as u64,
                );
                continue;
            }
            let mut first = part;
            let second = first.split_off(first.len() / 2);
            for half in [first, second] {
                if let Sent::Refused = self.send_part(&half, oldest, resend, stop).await? {
                    refused.push(half);
                }
            }
        }
        Ok(())
    }

    /// One request, retried until accepted or refused for good. `resend`: the request repeats
    /// one a crash interrupted, so a refusal most likely means the receiver holds it already.
    async fn send_part(
        &self,
        part: &[TimeSeries],
        oldest: Option<i64>,
        resend: bool,
        stop: &CancellationToken,
    ) -> Result<Sent, Stopped> {
        let m = &self.metrics.durability;
        let name = self.name();
        let samples: usize = part.iter().map(|s| s.samples.len()).sum();
        let body = match encode::body(part) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                // Snappy refuses only inputs beyond its 4 GiB bound; a request never nears it.
                tracing::error!(endpoint = %name, error = %e, "remote write: cannot compress");
                m.remote_write_dropped(name, "encode", samples as u64);
                return Ok(Sent::Done);
            }
        };
        let mut attempt = 0u32;
        loop {
            let mut request = self
                .client
                .post(self.endpoint.url.expose())
                .header(reqwest::header::CONTENT_TYPE, encode::CONTENT_TYPE)
                .header(reqwest::header::CONTENT_ENCODING, encode::CONTENT_ENCODING)
                .header(encode::VERSION_HEADER, encode::VERSION)
                .body(body.clone());
            for (k, v) in &self.endpoint.headers {
                // Validated at load; sensitive keeps it out of any Debug of the request.
                if let Ok(mut value) = reqwest::header::HeaderValue::from_str(v.expose()) {
                    value.set_sensitive(true);
                    request = request.header(k.clone(), value);
                }
            }
            // A request in flight does not hold up a stopping collector: its batch is not
            // acknowledged, so the cursor stays and it is sent again after the restart.
            let sent = tokio::select! {
                _ = stop.cancelled() => return Err(Stopped),
                sent = request.send() => sent,
            };
            let retry_after = match sent {
                Ok(r) if r.status().is_success() => {
                    m.remote_write_sent(name, samples as u64);
                    return Ok(Sent::Done);
                }
                Ok(r) => {
                    let status = r.status();
                    let after = crate::notify::http::retry_after_header(r.headers());
                    // Bounded: a hostile or broken receiver cannot make the collector buffer
                    // an endless answer.
                    let text = tokio::select! {
                        _ = stop.cancelled() => return Err(Stopped),
                        text = crate::notify::http::read_limited(r, 4 * BODY_EXCERPT) => text,
                    };
                    let excerpt: String = text.chars().take(BODY_EXCERPT).collect();
                    m.remote_write_failed(name, samples as u64);
                    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    {
                        tracing::warn!(endpoint = %name, status = status.as_u16(), body = ?excerpt.trim(),
                            attempt, "remote write: request failed; retrying");
                        after
                    } else if resend {
                        tracing::warn!(endpoint = %name, status = status.as_u16(), body = ?excerpt.trim(),
                            samples, series = part.len(), "remote write: a request resent after a \
                            restart was refused; the receiver most likely holds it from before");
                        return Ok(Sent::Refused);
                    } else {
                        tracing::error!(endpoint = %name, status = status.as_u16(), body = ?excerpt.trim(),
                            samples, "remote write: request refused; its samples are dropped");
                        m.remote_write_dropped(
                            name,
                            &format!("http_{}", status.as_u16()),
                            samples as u64,
                        );
                        return Ok(Sent::Done);
                    }
                }
                Err(e) => {
                    m.remote_write_failed(name, samples as u64);
                    // Without the URL: it may hold credentials.
                    tracing::warn!(endpoint = %name, error = %e.without_url(), attempt,
                        "remote write: request failed; retrying");
                    None
                }
            };
            m.remote_write_retried(name, samples as u64);
            self.set_lag(oldest);
            let delay = self
                .endpoint
                .backoff
                .delay(attempt)
                .max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
            attempt = attempt.saturating_add(1);
            Self::wait(delay, stop).await?;
        }
    }
}
