//! Alerting requests to the writer thread (acknowledge, silences, active alerts, outbox
//! fetch and settle, rule and receiver changes through the API and dry runs) and the
//! [`Store`] methods that send them. Each runs inside the group transaction and is answered once it is
//! committed.

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::alerting::{
    Alerting, DryRunReply, OutboxBatch, OutboxOutcome, ReceiverDeleted, ReceiverPut, RuleDeleted,
};
use super::writer::WriteRequest;
use super::{Store, StoreError};
use crate::alert::policy::AlertRecord;
use crate::alert::route::SilenceSpec;
use crate::alert::{RawRule, Rule};
use crate::notify::ReceiverConfigRaw;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(crate) enum AlertRequest {
    Acknowledge {
        fingerprint: String,
        by: String,
        comment: String,
        now_ms: i64,
        reply: Reply<bool>,
    },
    AddSilence {
        spec: SilenceSpec,
        now_ms: i64,
        reply: Reply<i64>,
    },
    ExpireSilence {
        id: i64,
        now_ms: i64,
        reply: Reply<bool>,
    },
    Active {
        reply: Reply<Vec<AlertRecord>>,
    },
    Fetch {
        receiver: String,
        now_ms: i64,
        limit: usize,
        reply: Reply<OutboxBatch>,
    },
    Settle {
        receiver: String,
        group_key: String,
        ids: Vec<i64>,
        outcome: OutboxOutcome,
        now_ms: i64,
        reply: Reply<()>,
    },
    PutRule {
        raw: Box<RawRule>,
        now_ms: i64,
        reply: Reply<()>,
    },
    DeleteRule {
        name: String,
        now_ms: i64,
        reply: Reply<RuleDeleted>,
    },
    DryRun {
        rule: Box<Rule>,
        now_ms: i64,
        reply: Reply<DryRunReply>,
    },
    PutReceiver {
        raw: Box<ReceiverConfigRaw>,
        create_only: bool,
        now_ms: i64,
        reply: Reply<ReceiverPut>,
    },
    DeleteReceiver {
        name: String,
        now_ms: i64,
        reply: Reply<ReceiverDeleted>,
    },
}

/// A processed request: answers its caller once the group's fate is known.
pub(crate) type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

fn answer<T: Send + 'static>(reply: Reply<T>, r: Result<T, StoreError>) -> Answer {
    Box::new(move |abort: Option<&str>| {
        let r = match abort {
            Some(m) if r.is_ok() => Err(StoreError::Aborted(m.to_owned())),
            _ => r,
        };
        // The caller may have stopped waiting; nothing to do then.
        let _ = reply.send(r);
    })
}

impl AlertRequest {
    /// Runs the request on the open transaction. An SQLite error is returned separately:
    /// it aborts the whole group.
    pub(crate) fn run(self, a: &mut Alerting, c: &Connection) -> (Answer, Option<rusqlite::Error>) {
        fn split<T: Send + 'static>(
            reply: Reply<T>,
            r: Result<T, StoreError>,
        ) -> (Answer, Option<rusqlite::Error>) {
            match r {
                Err(StoreError::Sqlite(e)) => {
                    let msg = e.to_string();
                    (answer(reply, Err(StoreError::Aborted(msg))), Some(e))
                }
                r => (answer(reply, r), None),
            }
        }
        match self {
            AlertRequest::Acknowledge {
                fingerprint,
                by,
                comment,
                now_ms,
                reply,
            } => split(reply, a.acknowledge(c, &fingerprint, &by, &comment, now_ms)),
            AlertRequest::AddSilence {
                spec,
                now_ms,
                reply,
            } => split(reply, a.add_silence(c, &spec, now_ms)),
            AlertRequest::ExpireSilence { id, now_ms, reply } => {
                split(reply, a.expire_silence(c, id, now_ms))
            }
            AlertRequest::Active { reply } => split(reply, Ok(a.active_alerts())),
            AlertRequest::Fetch {
                receiver,
                now_ms,
                limit,
                reply,
            } => split(reply, a.outbox_fetch(c, &receiver, now_ms, limit)),
            AlertRequest::Settle {
                receiver,
                group_key,
                ids,
                outcome,
                now_ms,
                reply,
            } => split(
                reply,
                a.outbox_settle(c, &receiver, &group_key, &ids, &outcome, now_ms),
            ),
            AlertRequest::PutRule { raw, now_ms, reply } => {
                split(reply, a.put_rule(c, &raw, now_ms))
            }
            AlertRequest::DeleteRule {
                name,
                now_ms,
                reply,
            } => split(reply, a.delete_rule(c, &name, now_ms)),
            AlertRequest::DryRun {
                rule,
                now_ms,
                reply,
            } => split(reply, Ok(a.dry_run(*rule, now_ms))),
            AlertRequest::PutReceiver {
                raw,
                create_only,
                now_ms,
                reply,
            } => split(reply, a.put_receiver(c, &raw, create_only, now_ms)),
            AlertRequest::DeleteReceiver {
                name,
                now_ms,
                reply,
            } => split(reply, a.delete_receiver(c, &name, now_ms)),
        }
    }

    /// Answers a request the group never ran.
    pub(crate) fn skipped(self) -> Answer {
        let e = || StoreError::Aborted("an earlier request in the group failed".into());
        match self {
            AlertRequest::Acknowledge { reply, .. } => answer(reply, Err(e())),
            AlertRequest::AddSilence { reply, .. } => answer(reply, Err(e())),
            AlertRequest::ExpireSilence { reply, .. } => answer(reply, Err(e())),
            AlertRequest::Active { reply } => answer(reply, Err(e())),
            AlertRequest::Fetch { reply, .. } => answer(reply, Err(e())),
            AlertRequest::Settle { reply, .. } => answer(reply, Err(e())),
            AlertRequest::PutRule { reply, .. } => answer(reply, Err(e())),
            AlertRequest::DeleteRule { reply, .. } => answer(reply, Err(e())),
            AlertRequest::DryRun { reply, .. } => answer(reply, Err(e())),
            AlertRequest::PutReceiver { reply, .. } => answer(reply, Err(e())),
            AlertRequest::DeleteReceiver { reply, .. } => answer(reply, Err(e())),
        }
    }
}

impl Store {
    async fn alert_call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> AlertRequest,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WriteRequest::Alert(make(reply)))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Acknowledges an active alert (repeats stop; receivers told it fired hear of the
    /// acknowledgement). `false` if no such alert is active.
    pub async fn acknowledge(
        &self,
        fingerprint: &str,
        by: &str,
        comment: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.alert_call(|reply| AlertRequest::Acknowledge {
            fingerprint: fingerprint.to_owned(),
            by: by.to_owned(),
            comment: comment.to_owned(),
            now_ms,
            reply,
        })
        .await
    }

    /// Adds a silence; returns its id. Invalid specs are refused with the reason.
    pub async fn add_silence(&self, spec: SilenceSpec, now_ms: i64) -> Result<i64, StoreError> {
        self.alert_call(|reply| AlertRequest::AddSilence {
            spec,
            now_ms,
            reply,
        })
        .await
    }

    /// Ends a silence now. `false` if it does not exist or has already ended.
    pub async fn expire_silence(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        self.alert_call(|reply| AlertRequest::ExpireSilence { id, now_ms, reply })
            .await
    }

    /// Firing and flapping alerts, oldest first.
    pub async fn active_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.alert_call(|reply| AlertRequest::Active { reply })
            .await
    }

    /// The oldest due notification group of `receiver` (at most `limit` rows).
    pub async fn outbox_fetch(
        &self,
        receiver: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<OutboxBatch, StoreError> {
        self.alert_call(|reply| AlertRequest::Fetch {
            receiver: receiver.to_owned(),
            now_ms,
            limit,
            reply,
        })
        .await
    }

    /// Records how sending outbox rows ended.
    pub async fn outbox_settle(
        &self,
        receiver: &str,
        group_key: &str,
        ids: Vec<i64>,
        outcome: OutboxOutcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.alert_call(|reply| AlertRequest::Settle {
            receiver: receiver.to_owned(),
            group_key: group_key.to_owned(),
            ids,
            outcome,
            now_ms,
            reply,
        })
        .await
    }

    /// Stores a rule definition with origin `api` (replacing any configured rule of that
    /// name) and runs it from now on. Invalid definitions are refused with the reason.
    pub async fn put_rule(&self, raw: RawRule, now_ms: i64) -> Result<(), StoreError> {
        self.alert_call(|reply| AlertRequest::PutRule {
            raw: Box::new(raw),
            now_ms,
            reply,
        })
        .await
    }

    /// Deletes a rule stored through the API; a configured rule of the same name applies
    /// again. Configured rules are not deleted ([`RuleDeleted::FromConfig`]).
    pub async fn delete_rule(&self, name: &str, now_ms: i64) -> Result<RuleDeleted, StoreError> {
        self.alert_call(|reply| AlertRequest::DeleteRule {
            name: name.to_owned(),
            now_ms,
            reply,
        })
        .await
    }

    /// Evaluates `rule` alone over the writer's in-memory window at `now_ms` (nothing is
    /// stored), or says the window does not cover it.
    pub async fn dry_run_rule(&self, rule: Rule, now_ms: i64) -> Result<DryRunReply, StoreError> {
        self.alert_call(|reply| AlertRequest::DryRun {
            rule: Box::new(rule),
            now_ms,
            reply,
        })
        .await
    }

    /// Stores a receiver defined through the API (`create_only`: only if none of that name
    /// is stored) and routes to it from now on. The caller validates the definition
    /// (secrets resolvable) and starts its dispatcher worker once this returns
    /// [`ReceiverPut::Created`] or [`ReceiverPut::Replaced`].
    pub async fn put_receiver(
        &self,
        raw: ReceiverConfigRaw,
        create_only: bool,
        now_ms: i64,
    ) -> Result<ReceiverPut, StoreError> {
        self.alert_call(|reply| AlertRequest::PutReceiver {
            raw: Box::new(raw),
            create_only,
            now_ms,
            reply,
        })
        .await
    }

    /// Deletes a receiver defined through the API; its queued notifications go to the
    /// dead-letter list. Configured receivers are not deleted.
    pub async fn delete_receiver(
        &self,
        name: &str,
        now_ms: i64,
    ) -> Result<ReceiverDeleted, StoreError> {
        self.alert_call(|reply| AlertRequest::DeleteReceiver {
            name: name.to_owned(),
            now_ms,
            reply,
        })
        .await
    }
}
