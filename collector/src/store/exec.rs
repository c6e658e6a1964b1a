//! Arbitrary small writes on the writer thread: `Store::exec` runs a closure against the
//! write connection inside the current group transaction (in its own savepoint, so an error
//! rolls back only its own changes) and answers once the group commits. The API's user,
//! token, session and audit writes go this way, keeping SQLite to one writer.

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::alert_request::Answer;
use super::writer::WriteRequest;
use super::{Store, StoreError};

/// Runs on the writer: `Some(conn)` inside a savepoint, `None` when the group failed before
/// reaching it. Returns the answer, an SQLite error that must abort the group, and whether
/// the savepoint should be kept.
pub(crate) type ExecFn =
    Box<dyn FnOnce(Option<&Connection>) -> (Answer, Option<rusqlite::Error>, bool) + Send>;

impl Store {
    /// Runs `f` on the write connection within the next group transaction; resolves once
    /// that transaction commits (or with the error that stopped it).
    pub async fn exec<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: ExecFn = Box::new(move |conn| {
            let r = match conn {
                None => Err(StoreError::Aborted(
                    "an earlier request in the group failed".into(),
                )),
                Some(c) => f(c),
            };
            let (r, fatal) = match r {
                Err(StoreError::Sqlite(e)) => {
                    let msg = e.to_string();
                    (Err(StoreError::Aborted(msg)), Some(e))
                }
                r => (r, None),
            };
            let keep = r.is_ok();
            let answer: Answer = Box::new(move |abort: Option<&str>| {
                let r = match abort {
                    Some(m) if r.is_ok() => Err(StoreError::Aborted(m.to_owned())),
                    _ => r,
                };
                // The caller may have gone; nothing to do then.
                let _ = reply.send(r);
            });
            (answer, fatal, keep)
        });
        self.tx
            .send(WriteRequest::Exec(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}
