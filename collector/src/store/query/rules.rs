//! Alert rules as stored (`alert_rules`: the effective definition and its origin), for the
//! API's rule listing. Changes go through the writer, which applies them live.

use rusqlite::{Connection, OptionalExtension};

use crate::store::{Store, StoreError};

/// One row of `alert_rules`: the effective definition of a rule and where it comes from.
#[derive(Debug, Clone)]
pub struct RuleRow {
    pub name: String,
    /// `config` (rules files and built-ins) or `api`.
    pub origin: String,
    /// The definition as stored (a `RawRule` as JSON).
    pub definition: serde_json::Value,
    pub updated_ms: i64,
}

fn rule_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RuleRow> {
    let text: String = r.get(2)?;
    Ok(RuleRow {
        name: r.get(0)?,
        origin: r.get(1)?,
        definition: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        updated_ms: r.get(3)?,
    })
}

/// Every stored rule, by name.
fn rules(c: &Connection) -> Result<Vec<RuleRow>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT name, origin, definition, updated_ms FROM alert_rules ORDER BY name",
    )?;
    let rows = stmt.query_map([], rule_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn rule(c: &Connection, name: &str) -> Result<Option<RuleRow>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT name, origin, definition, updated_ms FROM alert_rules WHERE name = ?1",
    )?
    .query_row([name], rule_row)
    .optional()?)
}

impl Store {
    /// Every stored rule, by name.
    pub async fn rules(&self) -> Result<Vec<RuleRow>, StoreError> {
        self.read(rules).await
    }

    /// One stored rule by name.
    pub async fn rule(&self, name: String) -> Result<Option<RuleRow>, StoreError> {
        self.read(move |c| rule(c, &name)).await
    }
}
