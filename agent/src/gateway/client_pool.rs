//! Per-client containers (`[mcp_server.gateway] sessions = "per_client"`): each MCP client
//! session of such a server gets a container of its own (started on the client's
//! `initialize`, or taken from a warm pool), attached and served by a mux of its own, and
//! removed when the session ends, idles out, or the container exits. At most
//! `max_sessions` live at once; beyond, the client gets "too many sessions". The pool keeps
//! `warm_pool` containers started ahead, refilled in the background.
//!
//! A [`Lease`] is a session's hold on its container: dropping it stops the mux and removes
//! the container (in a task, so `Drop` never waits). Containers left by a killed agent carry
//! the client-session label and are removed at the next start
//! (`DockerApi::remove_client_containers`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::call_event::CallSink;
use super::session_mux::{
    ClientSession, MuxConfig, MuxError, MuxHandle, SessionMux, UpstreamLifecycle,
};
use super::stdio_attach;
use crate::supervisor::{DockerApi, McpServerSpec};

/// Lines waiting in each direction of a client container's attach.
/// Few: a line may be 4 MiB, and the mux reads as fast as it routes.
const ATTACH_QUEUE: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("too many client sessions (limit {0})")]
    Full(usize),
    #[error("starting a client container failed: {0}")]
    Start(String),
}

/// A started, attached container waiting for (or serving) one client.
struct Ready {
    id: String,
    mux: MuxHandle,
    stop: CancellationToken,
}

/// Figures of one pool, for the gateway's metrics.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub starts_total: AtomicU64,
    pub start_failures_total: AtomicU64,
}

pub struct ClientPool {
    docker: DockerApi,
    spec: McpServerSpec,
    limits: MuxConfig,
    sink: Arc<dyn CallSink>,
    /// Learned from the first container, used by every later one (same image).
    lifecycle: UpstreamLifecycle,
    max_sessions: usize,
    slots: Arc<Semaphore>,
    warm_target: usize,
    warm: Mutex<Warm>,
    /// This agent run's label on its containers: the orphan sweep at start spares them.
    run: String,
    pub stats: PoolStats,
    shutdown: CancellationToken,
}

/// The warm pool, and the starts under way that will fill it.
#[derive(Default)]
struct Warm {
    ready: Vec<Ready>,
    starting: usize,
}

/// A client session's container; dropping it removes the container.
pub struct Lease {
    id: String,
    stop: CancellationToken,
    docker: DockerApi,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.cancel();
        remove_later(&self.docker, std::mem::take(&mut self.id));
    }
}

fn remove_later(docker: &DockerApi, id: String) {
    let docker = docker.clone();
    // Outside a runtime (the agent is going away) the next start removes it as an orphan.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if let Err(e) = docker.remove(&id).await {
                tracing::warn!(container = %id, error = %e, "removing a client container failed");
            }
        });
    }
}

impl ClientPool {
    #[allow(clippy::too_many_arguments)] // Each is a distinct part of the pool; no natural group.
    pub fn new(
        docker: DockerApi,
        spec: McpServerSpec,
        limits: MuxConfig,
        sink: Arc<dyn CallSink>,
        max_sessions: usize,
        warm_pool: usize,
        run: String,
        shutdown: CancellationToken,
    ) -> Arc<ClientPool> {
        let pool = Arc::new(ClientPool {
            docker,
            limits: MuxConfig {
                server: spec.name.as_str().into(),
                ..limits
            },
            spec,
            sink,
            lifecycle: UpstreamLifecycle::default(),
            max_sessions,
            slots: Arc::new(Semaphore::new(max_sessions)),
            warm_target: warm_pool,
            warm: Mutex::default(),
            run,
            stats: PoolStats::default(),
            shutdown,
        });
        pool.refill();
        pool
    }

    pub fn spec(&self) -> &McpServerSpec {
        &self.spec
    }

    /// Client containers serving a session now.
    pub fn in_use(&self) -> usize {
        self.max_sessions - self.slots.available_permits()
    }

    fn warm(&self) -> std::sync::MutexGuard<'_, Warm> {
        // Plain bookkeeping; a panic mid-update leaves it usable.
        self.warm.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session on a container of its own.
    pub async fn open(self: &Arc<Self>) -> Result<(ClientSession, Lease), PoolError> {
        let slot = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| PoolError::Full(self.max_sessions))?;
        let warm = self.warm().ready.pop();
        let ready = match warm {
            Some(r) => r,
            None => self.start_detached().await?,
        };
        // From here on the lease owns the container: dropped on any path, it is removed.
        let lease = Lease {
            id: ready.id.clone(),
            stop: ready.stop.clone(),
            docker: self.docker.clone(),
            _slot: slot,
        };
        self.refill();
        match ready.mux.open_session().await {
            Ok(session) => Ok((session, lease)),
            Err(MuxError::Closed | MuxError::TooManySessions(_) | MuxError::InvalidConfig(_)) => {
                Err(PoolError::Start(
                    "the client container ended at once".into(),
                ))
            }
        }
    }

    /// Starts a container in a task of its own, so a client that hangs up during the start
    /// cannot leave it behind: an orphaned start goes to the warm pool or is removed.
    async fn start_detached(self: &Arc<Self>) -> Result<Ready, PoolError> {
        let (tx, rx) = oneshot::channel();
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            let started = pool.start_one().await;
            if let Err(Ok(ready)) = tx.send(started) {
                pool.keep_or_remove(ready);
            }
        });
        rx.await
            .unwrap_or_else(|_| Err(PoolError::Start("the start task ended".into())))
    }

    /// A started container nobody waits for: into the warm pool if it has room.
    fn keep_or_remove(&self, ready: Ready) {
        let mut warm = self.warm();
        if warm.ready.len() < self.warm_target && !self.shutdown.is_cancelled() {
            warm.ready.push(ready);
            return;
        }
        drop(warm);
        ready.stop.cancel();
        remove_later(&self.docker, ready.id);
    }

    async fn start_one(&self) -> Result<Ready, PoolError> {
        self.stats.starts_total.fetch_add(1, Ordering::Relaxed);
        let result = self.try_start().await;
        if let Err(e) = &result {
            self.stats
                .start_failures_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(server = %self.spec.name, error = %e, "client container did not start");
        }
        result
    }

    async fn try_start(&self) -> Result<Ready, PoolError> {
        let start = |e: String| PoolError::Start(e);
        let id = self
            .docker
            .start_client_container(&self.spec, &self.run)
            .await
            .map_err(|e| start(e.to_string()))?;
        let attached = match self.docker.client() {
            Ok(docker) => stdio_attach::attach(&docker, &id, ATTACH_QUEUE)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let attachment = match attached {
            Ok(a) => a,
            Err(e) => {
                remove_later(&self.docker, id);
                return Err(start(e));
            }
        };
        let stop = self.shutdown.child_token();
        // One session per container: the mux allows exactly one.
        let limits = MuxConfig {
            max_sessions: 1,
            ..self.limits.clone()
        };
        match SessionMux::spawn(
            limits,
            attachment.upstream,
            Arc::clone(&self.sink),
            self.lifecycle.clone(),
            stop.clone(),
        ) {
            Ok(mux) => Ok(Ready { id, mux, stop }),
            Err(e) => {
                remove_later(&self.docker, id);
                Err(start(e.to_string()))
            }
        }
    }

    /// Starts containers in the background until the warm pool is full again, counting the
    /// starts already under way (so a burst of sessions cannot start more than the target).
    fn refill(self: &Arc<Self>) {
        let missing = {
            let mut warm = self.warm();
            let missing = self
                .warm_target
                .saturating_sub(warm.ready.len() + warm.starting);
            warm.starting += missing;
            missing
        };
        for _ in 0..missing {
            let pool = Arc::clone(self);
            tokio::spawn(async move {
                let started = pool.start_one().await;
                pool.warm().starting -= 1;
                if let Ok(ready) = started {
                    pool.keep_or_remove(ready);
                }
            });
        }
    }
}

impl Drop for ClientPool {
    fn drop(&mut self) {
        let warm = std::mem::take(self.warm.get_mut().unwrap_or_else(|p| p.into_inner()));
        for ready in warm.ready {
            ready.stop.cancel();
            remove_later(&self.docker, ready.id);
        }
    }
}
