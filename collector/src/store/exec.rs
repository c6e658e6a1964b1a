//! Arbitrary small writes on the writer thread: `Store::exec` runs a closure against the
//! write connection inside the current group transaction (in its own savepoint, so an error
//! rolls back only its own changes) and answers once the group commits. The API's user,
//! token, session and audit writes go this way, and so do the requests of a plugged-in
//! runtime (see `hook`), keeping SQLite to one writer.

use rusqlite::{Connection, Transaction};
use tokio::sync::oneshot;

use super::group::in_savepoint;
use super::reply::Answer;
use super::request::WriteRequest;
use super::{Store, StoreError};

/// Runs on the writer: `Some(tx)` to run in a savepoint of the group transaction, `None`
/// when the group failed before reaching it. Returns the answer, and an SQLite error that
/// must abort the group.
pub(crate) type ExecFn =
    Box<dyn FnOnce(Option<&mut Transaction<'_>>) -> (Answer, Option<rusqlite::Error>) + Send>;

impl Store {
    /// Runs `f` on the write connection within the next group transaction; resolves once
    /// that transaction commits (or with the error that stopped it).
    pub async fn exec<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: ExecFn = Box::new(move |tx| match tx {
            None => (Answer::skipped(reply), None),
            Some(tx) => match in_savepoint(tx, f) {
                Ok(r) => (Answer::new(reply, r), None),
                Err(e) => (
                    Answer::new(reply, Err(StoreError::Aborted(e.to_string()))),
                    Some(e),
                ),
            },
        });
        self.tx
            .send(WriteRequest::Exec(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}
