//! Prometheus remote write 1.0 from the collector's store to distributed time-series
//! databases (Mimir, Thanos receive, Cortex, VictoriaMetrics, Prometheus's receiver):
//! every committed sample of every host, labelled with its host and the host's operator
//! labels, filtered per endpoint by `write_relabel`, delivered at least once and in commit
//! order through a cursor kept in the database.
//!
//! `config` (`[[remote_write]]`), `relabel` (keep/drop rules), `series` (the labels a
//! series carries), `encode` (protobuf + snappy), `sender` (one task per endpoint: read,
//! shard, send, retry, advance the cursor).

pub mod config;
pub mod encode;
pub mod relabel;
pub mod sender;
pub mod series;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Endpoint, RawRemoteWrite};
pub use sender::LAG_METRIC;

use crate::alerting::OwnSeries;
use crate::metrics::CollectorMetrics;
use crate::notify::{Destinations, NotifyConfigError};
use crate::store::Store;

/// Starts one sender per endpoint on `tracker`; they stop on `stop` (a batch in flight is
/// resent by the next run).
pub fn spawn(
    endpoints: &[Endpoint],
    store: &Store,
    metrics: &Arc<CollectorMetrics>,
    own: &OwnSeries,
    tracker: &TaskTracker,
    stop: &CancellationToken,
) -> Result<(), NotifyConfigError> {
    for e in endpoints {
        // Operator-configured destinations: any address (as for configured receivers).
        let client = crate::notify::http::client(&e.name, e.timeout, &Destinations::Any)?;
        metrics.durability.remote_write_endpoint(&e.name);
        let sender = sender::Sender::new(
            e.clone(),
            store.clone(),
            client,
            metrics.clone(),
            own.clone(),
        );
        tracker.spawn(sender.run(stop.clone()));
    }
    Ok(())
}
