//! The collector's dead-man's switch: `[heartbeat]` pings a URL every `interval` (a
//! healthchecks-style check, Cronitor, Better Stack, an Opsgenie heartbeat...) only while
//! ingest accepts agents, the store writer commits (a no-op request answered within
//! `timeout`) and every notification worker is running. The outside service pages when the
//! pings stop: the collector is dead, wedged, or cannot page by itself.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_common::config::{ConfigError, Duration as CfgDuration};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerting::dispatcher::Dispatcher;
use crate::metrics::CollectorMetrics;
use crate::notify::{Destinations, Secret, SecretRef};
use crate::store::Store;

/// `[heartbeat]`: what to ping and how often.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeartbeat {
    /// The URL to ping, held like a receiver's secret (healthchecks-style URLs carry their
    /// key): `{ file = "heartbeat-url" }`, `{ env = "VAR" }` or `{ value = "https://..." }`.
    /// Unset: no heartbeat.
    pub url: Option<SecretRef>,
    /// Time between pings, 10s..=1h. Default 1m. Set the outside check's period to it and
    /// its grace to at least one more interval.
    pub interval: Option<CfgDuration>,
    /// How long the writer may take to answer, and the ping to be answered (1s..=interval).
    /// Default 10s.
    pub timeout: Option<CfgDuration>,
    /// "GET" (default), "POST" or "HEAD".
    pub method: Option<String>,
}

/// Validated `[heartbeat]`.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    pub url: Secret,
    pub interval: Duration,
    pub timeout: Duration,
    pub method: reqwest::Method,
}

impl HeartbeatConfig {
    pub fn validate(
        path: &Path,
        raw: RawHeartbeat,
    ) -> Result<Option<HeartbeatConfig>, ConfigError> {
        let bad = |key: &str, msg: &str| ConfigError::invalid(path, key, msg);
        let Some(url) = raw.url else {
            if raw.interval.is_some() || raw.timeout.is_some() || raw.method.is_some() {
                return Err(bad("heartbeat.url", "required when [heartbeat] is set"));
            }
            return Ok(None);
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let url = url
            .load("heartbeat", "url", base)
            .map_err(|e| bad("heartbeat.url", &e.to_string()))?;
        // The URL itself is never put in an error: it is the check's key.
        match reqwest::Url::parse(url.expose()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err(bad("heartbeat.url", "must be an http:// or https:// URL")),
        }
        let interval = raw
            .interval
            .map_or(Duration::from_secs(60), CfgDuration::get);
        if !(Duration::from_secs(10)..=Duration::from_secs(3600)).contains(&interval) {
            return Err(bad("heartbeat.interval", "must be 10s..=1h"));
        }
        let timeout = raw
            .timeout
            .map_or(Duration::from_secs(10), CfgDuration::get);
        if timeout < Duration::from_secs(1) || timeout > interval {
            return Err(bad("heartbeat.timeout", "must be 1s..=interval"));
        }
        let method = match raw.method.as_deref().unwrap_or("GET") {
            "GET" => reqwest::Method::GET,
            "POST" => reqwest::Method::POST,
            "HEAD" => reqwest::Method::HEAD,
            _ => return Err(bad("heartbeat.method", "must be GET, POST or HEAD")),
        };
        Ok(Some(HeartbeatConfig {
            url,
            interval,
            timeout,
            method,
        }))
    }
}

/// What must be healthy for a ping to go out.
#[derive(Clone)]
pub struct Health {
    /// Cleared when the ingest accept loop ends.
    pub ingest_up: Arc<AtomicBool>,
    pub store: Store,
    /// The notification workers (none in tests of the heartbeat alone).
    pub dispatcher: Option<Dispatcher>,
}

impl Health {
    /// `Err(part)` names the first part found unhealthy. `aborts_seen` is the writer's
    /// count of rolled-back groups at the last check: a writer that answers but whose
    /// commits fail (disk full, I/O errors) is not healthy either.
    pub async fn check(&self, within: Duration, aborts_seen: &mut u64) -> Result<(), &'static str> {
        if !self.ingest_up.load(Ordering::Relaxed) {
            return Err("ingest");
        }
        // A no-op through the writer's queue: answered only by a writer that is working.
        match tokio::time::timeout(within, self.store.flush()).await {
            Ok(Ok(())) => {}
            _ => return Err("writer"),
        }
        let aborts = self.store.stats().aborted_groups;
        if aborts > std::mem::replace(aborts_seen, aborts) {
            return Err("writer commits");
        }
        if self.dispatcher.as_ref().is_some_and(|d| !d.healthy()) {
            return Err("dispatcher");
        }
        Ok(())
    }
}

/// Pings until `stop`: the first at once, then every interval.
pub fn spawn(
    config: HeartbeatConfig,
    health: Health,
    metrics: Arc<CollectorMetrics>,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Result<(), crate::notify::NotifyConfigError> {
    let client = crate::notify::http::client("heartbeat", config.timeout, &Destinations::Any)?;
    tracker.spawn(async move {
        let m = &metrics.durability;
        let mut aborts_seen = health.store.stats().aborted_groups;
        let mut every = tokio::time::interval(config.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            // Neither the check nor the request holds up a stopping collector.
            let checked = tokio::select! {
                _ = stop.cancelled() => return,
                c = health.check(config.timeout, &mut aborts_seen) => c,
            };
            if let Err(part) = checked {
                m.heartbeat_withheld.inc();
                tracing::warn!(unhealthy = part, "heartbeat withheld");
                continue;
            }
            let request = client
                .request(config.method.clone(), config.url.expose())
                .send();
            let sent = tokio::select! {
                _ = stop.cancelled() => return,
                sent = request => sent,
            };
            match sent {
                Ok(r) if r.status().is_success() => {
                    m.heartbeat_sent.inc();
                }
                Ok(r) => {
                    m.heartbeat_failures.inc();
                    tracing::warn!(status = r.status().as_u16(), "heartbeat refused");
                }
                Err(e) => {
                    m.heartbeat_failures.inc();
                    // Without the URL: it is the check's key.
                    tracing::warn!(error = %e.without_url(), "heartbeat failed");
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use std::sync::atomic::AtomicU64;

    /// A local HTTP endpoint answering 200 to every request; counts them.
    async fn check_endpoint() -> (String, Arc<AtomicU64>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pings = Arc::new(AtomicU64::new(0));
        let counted = pings.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        if got.windows(4).any(|w| w == b"\r\n\r\n") {
                            got.clear();
                            counted.fetch_add(1, Ordering::SeqCst);
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nOK";
                            if s.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (format!("http://{addr}/ping/0f1e2d3c"), pings)
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heartbeat_stops_while_the_writer_is_wedged_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = Store::open(StoreConfig::new(dir.path().join("c.db"))).unwrap();
        let (url, pings) = check_endpoint().await;
        let metrics = CollectorMetrics::new();
        let ingest_up = Arc::new(AtomicBool::new(true));
        let health = Health {
            ingest_up: ingest_up.clone(),
            store: store.clone(),
            dispatcher: None,
        };
        let config = HeartbeatConfig {
            url: Secret::new(url),
            interval: Duration::from_millis(300),
            timeout: Duration::from_millis(200),
            method: reqwest::Method::GET,
        };
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        spawn(config, health, metrics.clone(), &tracker, stop.clone()).unwrap();
        let pinged = || pings.load(Ordering::SeqCst);
        let withheld = || metrics.durability.heartbeat_withheld.get();
        until("two pings", || pinged() >= 2).await;

        // The test hook: a request that holds the writer's thread until released.
        let (entered_tx, entered) = tokio::sync::oneshot::channel::<()>();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let blocked = store.clone();
        let wedge = tokio::spawn(async move {
            blocked
                .exec(move |_| {
                    let _ = entered_tx.send(());
                    let _ = held.recv();
                    Ok(())
                })
                .await
        });
        entered.await.unwrap();
        let at_wedge = pinged();
        until("a withheld ping", || withheld() >= 1).await;
        let after = pinged();
        assert!(
            after <= at_wedge + 1,
            "only a ping decided before the wedge goes out"
        );
        until("two more withheld", || withheld() >= 3).await;
        assert_eq!(pinged(), after, "no ping while the writer is wedged");

        release.send(()).unwrap();
        wedge.await.unwrap().unwrap();
        until("pings again", || pinged() > after).await;

        // A group whose commit fails (here an SQLite error inside it) withholds the next
        // ping: the writer answers, but what it is given is lost.
        let w = withheld();
        let failed = store
            .exec(|c| {
                c.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                Ok(())
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(store.stats().aborted_groups, 1);
        until("withheld for a failed commit", || withheld() > w).await;
        let resumed_from = pinged();
        until("pings again after it", || pinged() > resumed_from).await;

        // Ingest stopped: withheld too.
        ingest_up.store(false, Ordering::Relaxed);
        let w = withheld();
        until("withheld for ingest", || withheld() > w).await;
        let stopped_at = pinged();
        until("one more withheld", || withheld() > w + 1).await;
        assert_eq!(pinged(), stopped_at);

        stop.cancel();
        tracker.close();
        tracker.wait().await;
        drop(store);
        writer.join().unwrap();
    }

    #[test]
    fn heartbeat_config_checks_url_interval_and_method_without_echoing_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collector.toml");
        let raw = |url: &str, interval: &str, method: Option<&str>| RawHeartbeat {
            url: Some(SecretRef::value(Secret::new(url))),
            interval: Some(interval.parse().unwrap()),
            timeout: None,
            method: method.map(str::to_owned),
        };
        let ok = HeartbeatConfig::validate(&path, raw("https://hc.example/ping/abc", "1m", None))
            .unwrap()
            .unwrap();
        assert_eq!(
            (ok.interval, ok.timeout),
            (Duration::from_secs(60), Duration::from_secs(10))
        );
        let err = HeartbeatConfig::validate(&path, raw("ftp://secret-key@x", "1m", None))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret-key"), "{err}");
        assert!(HeartbeatConfig::validate(&path, raw("https://x/p", "1s", None)).is_err());
        assert!(HeartbeatConfig::validate(&path, raw("https://x/p", "1m", Some("PUT"))).is_err());
        assert!(HeartbeatConfig::validate(&path, RawHeartbeat::default())
            .unwrap()
            .is_none());
        std::fs::write(
            dir.path().join("hb-url"),
            "https://hc.example/ping/from-file\n",
        )
        .unwrap();
        let from_file = RawHeartbeat {
            url: Some(SecretRef::file("hb-url")),
            ..RawHeartbeat::default()
        };
        let c = HeartbeatConfig::validate(&path, from_file)
            .unwrap()
            .unwrap();
        assert_eq!(c.url.expose(), "https://hc.example/ping/from-file");
    }

    /// A notification worker that ended (a panic) withholds the heartbeat: the collector
    /// could no longer page through that receiver.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_notification_worker_withholds_the_heartbeat() {
        use crate::alerting::{dispatcher, Alerting, AlertingSetup, OutboxShared};
        let dir = tempfile::tempdir().unwrap();
        let shared = OutboxShared::new(["ops"]);
        let (alerting, _writer) = Alerting::open(
            StoreConfig::new(dir.path().join("c.db")),
            AlertingSetup::disabled(),
            shared.clone(),
        )
        .unwrap();
        let raw: crate::notify::ReceiverConfigRaw = toml::from_str(
            "type = \"webhook\"\nname = \"ops\"\nurl = \"http://127.0.0.1:9/hook\"\n\
             secret = { value = \"k\" }\n",
        )
        .unwrap();
        let receiver =
            crate::notify::Receiver::from_raw(raw, dir.path(), &Destinations::Any).unwrap();
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let workers = dispatcher::spawn(
            &alerting,
            vec![receiver],
            shared,
            crate::alerting::config::RetryPolicy::new(
                Duration::from_secs(1),
                Duration::from_secs(2),
            )
            .unwrap(),
            CollectorMetrics::new(),
            &tracker,
            stop.clone(),
        );
        let health = Health {
            ingest_up: Arc::new(AtomicBool::new(true)),
            store: alerting.store().clone(),
            dispatcher: Some(workers.clone()),
        };
        let mut aborts = 0;
        assert_eq!(
            health.check(Duration::from_secs(5), &mut aborts).await,
            Ok(())
        );
        workers.kill_worker("ops").await;
        assert_eq!(
            health.check(Duration::from_secs(5), &mut aborts).await,
            Err("dispatcher")
        );
        stop.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
