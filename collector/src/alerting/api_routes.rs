//! Routes defined through the API: stored in `routes` (the definition as a `[[route]]`
//! table's JSON, without `continue`), loaded with the runtime and after a rollback, changed
//! on the writer with the owner check against the stored route. They come after the
//! configured routes and only ever add receivers (see `Routing::extra`).

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::administration::OwnerCheck;
use super::config::{api_route, RawRoute};
use super::runtime::Runtime;
use super::Alerting;
use crate::alert::route::Route;
use crate::store::StoreError;

/// Routes defined through the API at most: every alert is matched against each of them on
/// every tick, so their number is what a team could otherwise spend collector CPU with.
pub const MAX_API_ROUTES: i64 = 500;

/// A route as stored.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoredRoute {
    pub name: String,
    /// The definition as given (a `[[route]]` table as JSON).
    #[schema(value_type = Object)]
    pub definition: serde_json::Value,
    pub updated_ms: i64,
}

/// What a change of a stored route found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    Created,
    Replaced,
    Deleted,
    Missing,
    /// The caller's check refused the stored route's owner (nothing changed).
    Refused,
}

/// The owner scope text of a stored definition (`None`: fleet-wide; unreadable counts as
/// fleet-wide).
fn stored_owner(definition: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(definition)
        .ok()
        .and_then(|v| v.get("owner").and_then(|o| o.as_str()).map(str::to_owned))
}

fn list(c: &Connection) -> Result<Vec<StoredRoute>, StoreError> {
    let mut stmt =
        c.prepare_cached("SELECT name, definition, updated_ms FROM routes ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, definition, updated_ms) = row?;
        out.push(StoredRoute {
            name,
            definition: serde_json::from_str(&definition).unwrap_or(serde_json::Value::Null),
            updated_ms,
        });
    }
    Ok(out)
}

impl Runtime {
    /// The routing's API routes from the database, in name order; one that no longer
    /// validates (its policy was removed from the configuration) is left out, logged.
    pub(super) fn load_api_routes(&mut self, c: &Connection) -> Result<(), StoreError> {
        let mut routes: Vec<Route> = Vec::new();
        for stored in list(c)? {
            let parsed = serde_json::from_value::<RawRoute>(stored.definition)
                .map_err(|e| e.to_string())
                .and_then(|raw| {
                    api_route(
                        raw,
                        &self.setup.routing.default_opts,
                        &self.setup.escalations,
                    )
                });
            match parsed {
                Ok(r) => routes.push(r),
                Err(e) => tracing::error!(route = %stored.name, error = %e,
                    "a route defined through the API no longer validates; it is not used"),
            }
        }
        self.setup.routing.extra = routes;
        Ok(())
    }

    fn put_route(
        &mut self,
        c: &Connection,
        name: &str,
        definition: &serde_json::Value,
        may_replace: OwnerCheck,
        now_ms: i64,
    ) -> Result<RouteChange, StoreError> {
        let raw: RawRoute = serde_json::from_value(definition.clone())
            .map_err(|e| StoreError::Invalid(format!("invalid route: {e}")))?;
        api_route(
            raw,
            &self.setup.routing.default_opts,
            &self.setup.escalations,
        )
        .map_err(StoreError::Invalid)?;
        let stored: Option<String> = c
            .prepare_cached("SELECT definition FROM routes WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        if let Some(d) = &stored {
            if !may_replace(stored_owner(d).as_deref()) {
                return Ok(RouteChange::Refused);
            }
        } else {
            let n: i64 = c
                .prepare_cached("SELECT count(*) FROM routes")?
                .query_row([], |r| r.get(0))?;
            if n >= MAX_API_ROUTES {
                return Err(StoreError::Limit(format!(
                    "at most {MAX_API_ROUTES} routes may be defined through the API"
                )));
            }
        }
        c.prepare_cached(
            "INSERT INTO routes (name, definition, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,
                 updated_ms = excluded.updated_ms",
        )?
        .execute(params![name, definition.to_string(), now_ms])?;
        self.load_api_routes(c)?;
        Ok(if stored.is_some() {
            RouteChange::Replaced
        } else {
            RouteChange::Created
        })
    }

    fn delete_route(
        &mut self,
        c: &Connection,
        name: &str,
        may_delete: OwnerCheck,
    ) -> Result<RouteChange, StoreError> {
        let stored: Option<String> = c
            .prepare_cached("SELECT definition FROM routes WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        let Some(d) = stored else {
            return Ok(RouteChange::Missing);
        };
        if !may_delete(stored_owner(&d).as_deref()) {
            return Ok(RouteChange::Refused);
        }
        c.prepare_cached("DELETE FROM routes WHERE name = ?1")?
            .execute([name])?;
        self.load_api_routes(c)?;
        Ok(RouteChange::Deleted)
    }
}

impl Alerting {
    /// The configured escalation policy `name`.
    pub fn escalation(
        &self,
        name: &str,
    ) -> Option<std::sync::Arc<crate::alert::escalation::EscalationPolicy>> {
        self.escalations.get(name).cloned()
    }

    /// The routes defined through the API, by name (on a read connection).
    pub async fn stored_routes(&self) -> Result<Vec<StoredRoute>, StoreError> {
        self.store().read(list).await
    }

    /// Creates or replaces a route, in effect from the next evaluation; `may_replace` is
    /// asked about the owner of a route stored under the name. Invalid definitions are
    /// refused with the reason ([`StoreError::Invalid`]).
    pub async fn put_route(
        &self,
        name: String,
        definition: serde_json::Value,
        may_replace: OwnerCheck,
        now_ms: i64,
    ) -> Result<RouteChange, StoreError> {
        self.call(move |rt, c| rt.put_route(c, &name, &definition, may_replace, now_ms))
            .await
    }

    pub async fn delete_route(
        &self,
        name: String,
        may_delete: OwnerCheck,
    ) -> Result<RouteChange, StoreError> {
        self.call(move |rt, c| rt.delete_route(c, &name, may_delete))
            .await
    }
}
