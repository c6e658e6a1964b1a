//! Process signals mapped onto the cancellation tree: SIGTERM/SIGINT cancel, SIGHUP reloads.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT; forwards each SIGHUP to `reload`.
/// Returns once the token is cancelled (by a signal or by anyone else).
pub async fn watch_signals(
    token: CancellationToken,
    reload: Option<mpsc::Sender<()>>,
) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = term.recv() => { tracing::info!(signal = "SIGTERM", "shutting down"); token.cancel(); }
            _ = int.recv() => { tracing::info!(signal = "SIGINT", "shutting down"); token.cancel(); }
            _ = hup.recv() => {
                tracing::info!(signal = "SIGHUP", "reload requested");
                if let Some(tx) = &reload {
                    // A reload already queued covers this one.
                    let _ = tx.try_send(());
                }
            }
        }
    }
}
