//! Receivers defined through the API, as stored in `receivers` (a `ReceiverConfigRaw` as
//! JSON, each secret as `{"stored": true}`) and `receiver_secrets` (those secrets, sealed;
//! see `notify::api_secrets`). Changes go through the writer
//! ([`super::Alerting::put_receiver`], [`super::Alerting::delete_receiver`]), which also
//! routes to them; this module reads them: on read connections for the API, and once
//! before the store opens so the collector can build their senders alongside the
//! configured ones.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use crate::notify::{ReceiverConfigRaw, SealedSecret};
use crate::store::StoreError;

/// One stored receiver definition.
#[derive(Debug, Clone)]
pub struct StoredReceiver {
    pub name: String,
    /// The definition as stored (JSON of a `ReceiverConfigRaw`).
    pub definition: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Its secrets, sealed.
    pub secrets: Vec<SealedSecret>,
}

impl StoredReceiver {
    /// The definition, parsed. Errors never contain a secret (the definition holds none).
    pub fn raw(&self) -> Result<ReceiverConfigRaw, String> {
        serde_json::from_str::<ReceiverConfigRaw>(&self.definition)
            .map_err(|e| format!("unreadable stored definition: {e}"))
            .and_then(|raw| {
                if raw.name() == self.name {
                    Ok(raw)
                } else {
                    Err(format!(
                        "stored definition names another receiver ({:?})",
                        raw.name()
                    ))
                }
            })
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredReceiver> {
    Ok(StoredReceiver {
        name: r.get(0)?,
        definition: r.get(1)?,
        created_ms: r.get(2)?,
        updated_ms: r.get(3)?,
        secrets: Vec::new(),
    })
}

/// The sealed secrets of receiver `name`, by field.
pub fn secrets(c: &Connection, name: &str) -> Result<Vec<SealedSecret>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT field, destination, sealed FROM receiver_secrets WHERE receiver = ?1
         ORDER BY field",
    )?;
    let rows = stmt.query_map([name], |r| {
        Ok(SealedSecret {
            field: r.get(0)?,
            destination: r.get(1)?,
            sealed: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every receiver defined through the API, by name.
pub fn list(c: &Connection) -> Result<Vec<StoredReceiver>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT name, definition, created_ms, updated_ms FROM receivers ORDER BY name",
    )?;
    let mut out = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
    for s in &mut out {
        s.secrets = secrets(c, &s.name)?;
    }
    Ok(out)
}

/// One receiver defined through the API.
pub fn get(c: &Connection, name: &str) -> Result<Option<StoredReceiver>, StoreError> {
    let found = c
        .prepare_cached(
            "SELECT name, definition, created_ms, updated_ms FROM receivers WHERE name = ?1",
        )?
        .query_row([name], row)
        .optional()?;
    let Some(mut s) = found else { return Ok(None) };
    s.secrets = secrets(c, name)?;
    Ok(Some(s))
}

/// The stored API receivers of the database at `path`, read before the store opens (the
/// database is created and migrated if needed, as `Store::open` would).
pub fn load(path: &Path) -> Result<Vec<StoredReceiver>, StoreError> {
    let conn = crate::store::open_connection(path)?;
    let out = list(&conn)?;
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the database after reading receivers failed");
    }
    Ok(out)
}

impl super::Alerting {
    /// Every receiver stored through the API, by name (on a read connection).
    pub async fn stored_receivers(&self) -> Result<Vec<StoredReceiver>, StoreError> {
        self.store().read(list).await
    }

    /// One receiver stored through the API.
    pub async fn stored_receiver(
        &self,
        name: String,
    ) -> Result<Option<StoredReceiver>, StoreError> {
        self.store().read(move |c| get(c, &name)).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Instant;

    use mcpwatch_common::wire::{Sample, SeriesDef, SeriesKey};

    use super::super::{
        Alerting, AlertingSetup, OutboxShared, ReceiverDeleted, ReceiverPut, RECEIVER_DELETED,
    };
    use super::load;
    use crate::alert::route::GroupBy;
    use crate::alert::{parse_rules, validate_rules};
    use crate::notify::webhook::WebhookConfigRaw;
    use crate::notify::{ReceiverConfigRaw, SealedSecret, SecretRef};
    use crate::store::{IngestBatch, IngestOutcome, StoreConfig};

    const RULES: &str = r#"
[[rule]]
name = "test_high"
selector = "test_value"
window = "10m"
op = ">"
critical = 0.5
"#;

    fn setup(default_all: bool) -> AlertingSetup {
        let raw = parse_rules(Path::new("rules.toml"), RULES).expect("rules parse");
        let mut s = AlertingSetup::disabled();
        s.rules = validate_rules(raw, false).expect("rules valid");
        s.routing.default_receivers = vec!["r".into()];
        s.routing.all_receivers = vec!["r".into()];
        s.routing.default_opts.group_by = GroupBy::All;
        s.default_all = default_all;
        s
    }

    fn open(
        path: &Path,
        setup: AlertingSetup,
        names: &[&str],
    ) -> (Alerting, std::thread::JoinHandle<()>) {
        let cfg = StoreConfig::new(path);
        let outbox = OutboxShared::new(names.iter().copied());
        Alerting::open(cfg, setup, outbox).expect("open store")
    }

    fn hook(name: &str, url: &str) -> ReceiverConfigRaw {
        ReceiverConfigRaw::Webhook(WebhookConfigRaw {
            name: name.into(),
            owner: None,
            url: url.into(),
            secret: SecretRef::stored(),
            timeout_secs: None,
        })
    }

    /// Fires `test_high` for series `i` (a fresh connection and series each time).
    async fn fire(store: &Alerting, conn: u64, seq: u64, i: &str) {
        let s = store
            .register_agent(
                conn,
                "agent-1",
                "h",
                "v",
                "b",
                mcpwatch_common::time::now_ms(),
            )
            .await
            .expect("register");
        let b = IngestBatch {
            conn,
            host_id: s.host_id,
            seq,
            new_series: vec![SeriesDef {
                id: 0,
                key: SeriesKey::new("test_value", &[("i", i)]),
            }],
            samples: vec![Sample {
                series: 0,
                ts_ms: mcpwatch_common::time::now_ms(),
                value: 1.0,
            }],
            events: vec![],
            received: Instant::now(),
        };
        assert_eq!(
            store.ingest(b).await.expect("ingest").outcome,
            IngestOutcome::Committed
        );
    }

    fn count(path: &Path, sql: &str) -> i64 {
        let c = rusqlite::Connection::open(path).expect("open db");
        c.query_row(sql, [], |r| r.get(0)).expect("count")
    }

    #[tokio::test]
    async fn store_receivers_routed_live_deleted_to_dead_letters_and_kept_across_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        let (store, thread) = open(&path, setup(true), &["r"]);
        let now = mcpwatch_common::time::now_ms();
        let sealed = |byte: u8| {
            vec![SealedSecret {
                field: "secret".into(),
                destination: "http://a".into(),
                sealed: vec![byte; 40],
            }]
        };
        let put = |raw, create_only| store.put_receiver(raw, sealed(1), create_only, now);
        assert_eq!(
            put(hook("api", "http://a/"), true).await.expect("put"),
            ReceiverPut::Created
        );
        assert_eq!(
            put(hook("api", "http://a/"), true).await.expect("put"),
            ReceiverPut::Exists
        );
        assert_eq!(
            put(hook("r", "http://a/"), false).await.expect("put"),
            ReceiverPut::FromConfig
        );
        assert_eq!(
            store
                .put_receiver(hook("api", "http://b/"), sealed(2), false, now)
                .await
                .expect("put"),
            ReceiverPut::Replaced
        );
        let stored = load(&path).expect("read receivers");
        assert_eq!(stored.len(), 1);
        assert_eq!(
            stored[0].secrets,
            sealed(2),
            "the secrets replaced with the definition"
        );
        match stored[0].raw().expect("definition") {
            ReceiverConfigRaw::Webhook(w) => {
                assert_eq!(w.url, "http://b/");
                assert_eq!(w.secret, SecretRef::stored());
            }
            other => panic!("stored {other:?}"),
        }

        // Unrouted alerts go to every receiver, the new one included.
        fire(&store, 1, 1, "1").await;
        let rows = |r: &str| {
            count(
                &path,
                &format!("SELECT count(*) FROM outbox WHERE receiver = '{r}'"),
            )
        };
        assert_eq!((rows("r"), rows("api")), (1, 1));

        let del = store.delete_receiver("api", now).await.expect("delete");
        assert_eq!(del, ReceiverDeleted::Deleted { dead_lettered: 1 });
        assert_eq!(rows("api"), 0);
        assert_eq!(
            count(
                &path,
                "SELECT count(*) FROM receiver_secrets WHERE receiver = 'api'"
            ),
            0,
            "its secrets deleted with it"
        );
        assert_eq!(
            count(&path, &format!(
                "SELECT count(*) FROM dead_letters WHERE receiver = 'api' AND reason = '{RECEIVER_DELETED}'"
            )),
            1
        );
        assert_eq!(
            count(
                &path,
                "SELECT count(*) FROM notify_log WHERE receiver = 'api'"
            ),
            0
        );
        assert_eq!(
            store.delete_receiver("api", now).await.expect("delete"),
            ReceiverDeleted::Missing
        );
        assert_eq!(
            store.delete_receiver("r", now).await.expect("delete"),
            ReceiverDeleted::FromConfig
        );
        fire(&store, 2, 2, "2").await;
        assert_eq!((rows("r"), rows("api")), (2, 0));

        // Stored receivers come back after a restart (the collector loads them into the
        // outbox state); one that could not be loaded keeps its rows.
        assert_eq!(
            put(hook("api2", "http://c/"), true).await.expect("put"),
            ReceiverPut::Created
        );
        assert_eq!(
            put(hook("broken", "http://d/"), true).await.expect("put"),
            ReceiverPut::Created
        );
        fire(&store, 3, 3, "3").await;
        assert_eq!((rows("api2"), rows("broken")), (1, 1));
        drop(store);
        thread.join().expect("writer exits");
        let names: Vec<String> = load(&path)
            .expect("read")
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["api2", "broken"]);
        let (store, thread) = open(&path, setup(true), &["r", "api2"]);
        assert_eq!(
            (rows("api2"), rows("broken")),
            (1, 1),
            "kept across the restart"
        );
        fire(&store, 4, 4, "4").await;
        assert_eq!((rows("r"), rows("api2"), rows("broken")), (4, 2, 1));
        // Deleting the one that could not be loaded dead-letters its rows too.
        assert_eq!(
            store.delete_receiver("broken", now).await.expect("delete"),
            ReceiverDeleted::Deleted { dead_lettered: 1 }
        );
        drop(store);
        thread.join().expect("writer exits");

        // With `default_receivers` configured, API receivers are not on the default route.
        let (store, thread) = open(&path, setup(false), &["r", "api2"]);
        fire(&store, 5, 5, "5").await;
        assert_eq!((rows("r"), rows("api2")), (5, 2));
        drop(store);
        thread.join().expect("writer exits");

        // A receiver the configuration now defines is the configured one.
        let mut s = setup(true);
        s.routing.all_receivers.push("api2".into());
        let (store, thread) = open(&path, s, &["r", "api2"]);
        store.flush().await.expect("flush");
        assert!(load(&path).expect("read").is_empty());
        drop(store);
        thread.join().expect("writer exits");
    }
}
