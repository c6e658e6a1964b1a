//! The pause between polls of the tasks that follow committed rows (the live feed, the
//! fleet summary): at once after a step that read a full page (more may be waiting),
//! else after `poll`; never once `stop` is cancelled.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Waits `poll`; `false` when `stop` came first.
pub async fn pause(poll: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(poll) => true,
    }
}

/// Before the next step: none when the last one read a full page (`more`), else `poll`.
/// `false` when the task should end.
pub async fn next(more: bool, poll: Duration, stop: &CancellationToken) -> bool {
    if more {
        !stop.is_cancelled()
    } else {
        pause(poll, stop).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn full_pages_go_on_at_once_others_wait_and_stop_ends_both() {
        let stop = CancellationToken::new();
        let poll = Duration::from_secs(1);
        let begun = tokio::time::Instant::now();
        assert!(next(true, poll, &stop).await);
        assert_eq!(begun.elapsed(), Duration::ZERO);
        assert!(next(false, poll, &stop).await);
        assert_eq!(begun.elapsed(), poll);
        stop.cancel();
        assert!(!next(true, poll, &stop).await);
        assert!(!next(false, poll, &stop).await);
        assert!(!pause(poll, &stop).await);
        assert_eq!(begun.elapsed(), poll, "a cancelled pause does not wait");
    }
}
