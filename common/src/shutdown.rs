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

/// Which runtime a `main` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeThreads {
    /// Everything on the main thread (blocking work still goes to tokio's blocking pool).
    Current,
    /// A work-stealing pool of this many workers (`None`: one per core).
    Workers(Option<usize>),
}

/// The body of both `main`s: builds the runtime, runs `f` with a token that SIGTERM/SIGINT
/// cancel, and maps the outcome to an exit code (1 on error, logged and printed).
pub fn run_until_signal<F, Fut, E>(
    program: &str,
    threads: RuntimeThreads,
    f: F,
) -> std::process::ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut builder = match threads {
        RuntimeThreads::Current => tokio::runtime::Builder::new_current_thread(),
        RuntimeThreads::Workers(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = n {
                builder.worker_threads(n);
            }
            builder
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("{program}: cannot start runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let token = CancellationToken::new();
        let signals = tokio::spawn(watch_signals(token.clone(), None));
        let result = f(token.clone()).await;
        token.cancel();
        let _ = signals.await;
        match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = %err, "{program} failed");
                eprintln!("{program}: {err}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}
