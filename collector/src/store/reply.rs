//! Answers to writer requests. Every request is answered once its group's fate is known, and
//! a success becomes the group's failure when the transaction rolled back: that rule lives
//! here, once, for every request kind (the store's own, `Store::exec` jobs, hook requests).

use tokio::sync::oneshot;

use super::StoreError;

/// Where a request's result goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Why a request the group never ran is refused.
pub(crate) const SKIPPED: &str = "an earlier request in the group failed";

/// Sends a request's result, given the group's failure if it rolled back.
type SendFn = Box<dyn FnOnce(Option<&str>) + Send>;

/// A processed request waiting for its group's commit or rollback to be answered.
pub(crate) struct Answer(SendFn);

impl Answer {
    /// Sends `result` once the group commits; if it rolls back, a success becomes
    /// [`StoreError::Aborted`] with the group's failure.
    pub(crate) fn new<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Answer {
        Answer::observed(reply, result, |_| {})
    }

    /// As [`Answer::new`], with `seen` given what is finally sent (for counters).
    pub(crate) fn observed<T, F>(reply: Reply<T>, result: Result<T, StoreError>, seen: F) -> Answer
    where
        T: Send + 'static,
        F: FnOnce(&Result<T, StoreError>) + Send + 'static,
    {
        Answer(Box::new(move |abort: Option<&str>| {
            let r = match abort {
                Some(m) if result.is_ok() => Err(StoreError::Aborted(m.to_owned())),
                _ => result,
            };
            seen(&r);
            // The caller may have stopped waiting; nothing to do then.
            let _ = reply.send(r);
        }))
    }

    /// A request the group never ran because an earlier one failed.
    pub(crate) fn skipped<T: Send + 'static>(reply: Reply<T>) -> Answer {
        Answer::new(reply, Err(StoreError::Aborted(SKIPPED.into())))
    }

    /// Answers; `abort` is the group's failure, if it rolled back.
    pub(crate) fn send(self, abort: Option<&str>) {
        (self.0)(abort)
    }
}
