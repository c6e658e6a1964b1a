//! Retention: bounded deletion of expired raw rows, rollups, events, gaps, alert history and
//! audit rows (the oldest first, through `audit_chain::prune`, so the chain stays whole).
//!
//! Every delete is capped per pass so a pass never holds the writer for long; leftover work
//! sets `more` and the next tick continues. Raw rows are deleted only once their host's
//! rollup watermark has passed them, so expiring raw data never loses its rollups. Rollup tables
//! are keyed (series, ts) without a time index, so they are pruned series by series with a
//! cursor that walks all series over successive passes.

use rusqlite::{params, Connection, TransactionBehavior};

use super::{retention_ms, StoreConfig, StoreError};

/// Rows deleted per table per pass at most.
const DELETE_LIMIT: i64 = 10_000;
/// Series visited per pass by the rollup pruning cursor.
const SERIES_PER_PASS: i64 = 2_000;

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RetentionStep {
    pub raw: u64,
    pub rollup_1m: u64,
    pub rollup_1h: u64,
    pub events: u64,
    pub gaps: u64,
    /// A limit was hit: expired rows remain.
    pub more: bool,
}

/// One bounded pass relative to `now_ms`. `cursor` is the last series id visited.
pub(crate) fn step(
    conn: &mut Connection,
    cfg: &StoreConfig,
    now_ms: i64,
    cursor: &mut i64,
) -> Result<RetentionStep, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut out = RetentionStep::default();
    let cutoff = |d| retention_ms(d).map(|ms| now_ms.saturating_sub(ms));

    if let Some(cut) = cutoff(cfg.retention_raw) {
        out.raw = tx.execute(
            "DELETE FROM raw WHERE id IN
                 (SELECT r.id FROM raw r JOIN rollup_wm w ON w.host_id = r.host_id
                  WHERE r.ts_max < ?1 AND r.id <= w.raw_id LIMIT ?2)",
            params![cut, DELETE_LIMIT],
        )? as u64;
    }
    if let Some(cut) = cutoff(cfg.retention_events) {
        out.events = tx.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts_ms < ?1 LIMIT ?2)",
            params![cut, DELETE_LIMIT],
        )? as u64;
        out.gaps = tx.execute(
            "DELETE FROM gaps WHERE rowid IN (SELECT rowid FROM gaps WHERE to_ts < ?1 LIMIT ?2)",
            params![cut, DELETE_LIMIT],
        )? as u64;
        // Alert history, resolved alerts, dead letters and ended silences share the
        // events' retention; firing alerts and the outbox are never expired here.
        for sql in [
            "DELETE FROM alert_history WHERE id IN
                 (SELECT id FROM alert_history WHERE at_ms < ?1 LIMIT ?2)",
            "DELETE FROM alerts WHERE fingerprint IN (SELECT fingerprint FROM alerts
                 WHERE status = 'resolved' AND updated_ms < ?1 LIMIT ?2)",
            "DELETE FROM dead_letters WHERE id IN
                 (SELECT id FROM dead_letters WHERE failed_ms < ?1 LIMIT ?2)",
            "DELETE FROM silences WHERE id IN
                 (SELECT id FROM silences WHERE ends_ms < ?1 LIMIT ?2)",
        ] {
            let n = tx
                .prepare_cached(sql)?
                .execute(params![cut, DELETE_LIMIT])? as u64;
            out.events += n;
        }
    }
    if let Some(cut) = cutoff(cfg.retention_audit) {
        let n = super::audit_chain::prune(&tx, cut, DELETE_LIMIT, now_ms)? as u64;
        out.events += n;
        out.more |= n >= DELETE_LIMIT as u64;
    }
    prune_rollups(
        &tx,
        cutoff(cfg.retention_1m),
        cutoff(cfg.retention_1h),
        cursor,
        &mut out,
    )?;
    out.more |= [out.raw, out.events, out.gaps]
        .iter()
        .any(|&n| n >= DELETE_LIMIT as u64);
    tx.commit()?;
    Ok(out)
}

/// Prunes expired rollup rows series by series, from `cursor` on, within one pass's
/// budget; moves `cursor` for the next pass.
fn prune_rollups(
    tx: &Connection,
    cut_1m: Option<i64>,
    cut_1h: Option<i64>,
    cursor: &mut i64,
    out: &mut RetentionStep,
) -> Result<(), StoreError> {
    if cut_1m.is_some() || cut_1h.is_some() {
        let ids: Vec<i64> = tx
            .prepare_cached("SELECT id FROM series WHERE id > ?1 ORDER BY id LIMIT ?2")?
            .query_map(params![*cursor, SERIES_PER_PASS], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut budget = DELETE_LIMIT;
        let mut next_cursor = if (ids.len() as i64) < SERIES_PER_PASS {
            0 // reached the end: wrap around next pass
        } else {
            ids.last().copied().unwrap_or(0)
        };
        for &id in &ids {
            let mut exhausted = false;
            for (table, cut, counter) in [
                ("rollup_1m", cut_1m, &mut out.rollup_1m),
                ("rollup_1h", cut_1h, &mut out.rollup_1h),
            ] {
                let Some(cut) = cut else { continue };
                let n = delete_rollup(tx, table, id, cut, budget)?;
                *counter += n as u64;
                budget -= n as i64;
                exhausted |= budget <= 0;
            }
            if exhausted {
                // This series may hold more: resume at it next pass.
                next_cursor = id - 1;
                out.more = true;
                break;
            }
        }
        *cursor = next_cursor;
    }
    Ok(())
}

/// Deletes up to `limit` expired rows of one series. `table` is one of two constants.
fn delete_rollup(
    c: &Connection,
    table: &str,
    series: i64,
    cut: i64,
    limit: i64,
) -> Result<usize, StoreError> {
    let sql = format!(
        "DELETE FROM {table} WHERE series_id = ?1 AND ts IN
             (SELECT ts FROM {table} WHERE series_id = ?1 AND ts < ?2 ORDER BY ts LIMIT ?3)"
    );
    Ok(c.prepare_cached(&sql)?
        .execute(params![series, cut, limit])?)
}
