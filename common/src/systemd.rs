//! systemd integration for `Type=notify` units: READY=1 once listeners are bound, STOPPING=1
//! on shutdown, and WATCHDOG=1 pings at half the configured watchdog interval. Outside systemd
//! (no NOTIFY_SOCKET) every call is a no-op.

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub fn ready() {
    if let Err(err) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!(error = %err, "sd_notify READY failed");
    }
}

pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Pings the watchdog while `token` is live. The pings come from the runtime, so a wedged
/// runtime stops them and systemd restarts the service.
pub fn spawn_watchdog(tracker: &TaskTracker, token: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tick.tick() => { let _ = sd_notify::notify(&[NotifyState::Watchdog]); }
            }
        }
    });
}
