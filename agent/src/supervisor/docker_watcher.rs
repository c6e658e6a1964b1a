//! The Docker event watcher: keeps the supervisor's event stream connected, and the jittered
//! backoff shared by its reconnects and by retries of failed Docker calls.

use std::time::Duration;

use futures::StreamExt;
use mcpwatch_common::backoff::ExponentialBackoff;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::docker::DockerApi;
use super::handle::SupervisorOptions;
use super::internal_message::Internal;

/// How long the watcher waits for an immediate error from a new event subscription before
/// calling the connection established (the stream yields nothing until an event happens).
const SUBSCRIBE_SETTLE: Duration = Duration::from_millis(200);

/// Retry delays doubling from `min` to `max`, each drawn from `[d/2, d]` so that many
/// servers (or agents) do not retry in step. Settings outside `0 < min <= max` are clamped
/// into it (they can only come from hand-built options).
pub(super) fn retry_backoff(min: Duration, max: Duration) -> ExponentialBackoff {
    let min = min.max(Duration::from_millis(1));
    ExponentialBackoff::new(min, max.max(min))
        .and_then(|b| b.with_jitter(0.5, 1.0))
        .expect("clamped into a valid backoff")
}

/// Keeps the event stream connected: negotiate the API version, subscribe, forward events;
/// on any failure report `Lost`, back off and start over. Each success reports `Connected`,
/// which makes the supervisor list and reconcile.
// Over 80 lines on purpose: one reconnect loop (negotiate, subscribe, settle, forward),
// every step of which can end in the same `Lost` and backoff.
pub(super) async fn watch_events(
    api: DockerApi,
    tx: mpsc::Sender<Internal>,
    opts: SupervisorOptions,
    shutdown: CancellationToken,
) {
    let backoff = retry_backoff(opts.reconnect_min, opts.reconnect_max);
    let mut attempt = 0u32;
    loop {
        if attempt > 0 {
            let delay = backoff.delay(attempt - 1);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        attempt = attempt.saturating_add(1);
        let negotiated = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = api.negotiate() => r,
        };
        if let Err(e) = negotiated {
            if tx.send(Internal::Lost(e.to_string())).await.is_err() {
                return;
            }
            continue;
        }
        let mut stream = api.events();
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(SUBSCRIBE_SETTLE, stream.next()) => r,
        };
        let early = match first {
            Err(_) => None,
            Ok(Some(Ok(ev))) => Some(ev),
            Ok(Some(Err(e))) => {
                if tx.send(Internal::Lost(e.to_string())).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => {
                if tx
                    .send(Internal::Lost("event stream closed".into()))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        if tx.send(Internal::Connected).await.is_err() {
            return;
        }
        if let Some(ev) = early {
            if tx.send(Internal::Event(ev, Instant::now())).await.is_err() {
                return;
            }
        }
        // Connected: the next failure reconnects at once, repeated ones back off.
        attempt = 0;
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return,
                item = stream.next() => item,
            };
            let msg = match item {
                Some(Ok(ev)) => Internal::Event(ev, Instant::now()),
                Some(Err(e)) => Internal::Lost(e.to_string()),
                None => Internal::Lost("event stream ended".into()),
            };
            let lost = matches!(msg, Internal::Lost(_));
            if tx.send(msg).await.is_err() {
                return;
            }
            if lost {
                break;
            }
        }
    }
}
