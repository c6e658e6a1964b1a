//! The stdio bridges: for every supervised stdio server, one task that keeps a session mux
//! attached to the server's running container. It waits until the supervisor reports the
//! server running, attaches (Docker attach, stdin and stdout), starts a mux on the attach and
//! publishes it in [`Backends`]; when the attach ends (the container stopped, restarted, was
//! replaced, or the stream broke) it withdraws the mux, whose clients see their session end,
//! and attaches again to whatever container runs next. An agent restart finds the adopted
//! container the same way.
//!
//! A re-attach to the same container (the stream broke but the server kept running) opens a
//! new mux on a server that has seen an `initialize` already (the server's lifecycle, learned
//! by the first mux, is kept for the next: `UpstreamLifecycle`); the first client's
//! `initialize` goes upstream again, which MCP servers answer or refuse as they do; clients
//! reconnect either way. Attaching again to the same container waits a backoff delay, so a
//! container whose output closes at once cannot spin the loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_common::backoff::ExponentialBackoff;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backends::Backends;
use super::call_event::CallSink;
use super::session_mux::{MuxConfig, SessionMux, UpstreamLifecycle};
use super::stdio_attach::{self, AttachEnd};
use crate::supervisor::{DockerApi, McpServerSpec, ServerPhase, SupervisorHandle, Transport};

/// Lines waiting in each direction of an attach.
/// Few: a line may be 4 MiB, and the mux reads as fast as it routes.
const ATTACH_QUEUE: usize = 32;

/// An attach that lasted this long was healthy: the next one starts from the shortest delay.
const HEALTHY_ATTACH: Duration = Duration::from_secs(10);

/// What every bridge shares.
#[derive(Clone)]
pub struct BridgeContext {
    pub docker: DockerApi,
    pub supervisor: SupervisorHandle,
    pub backends: Backends,
    pub sink: Arc<dyn CallSink>,
    /// Limits of every mux; `server` is set per bridge.
    pub limits: MuxConfig,
}

/// The running bridges, one per stdio server; owned by the agent's supervision loop.
pub struct StdioBridges {
    context: BridgeContext,
    tasks: HashMap<String, CancellationToken>,
    shutdown: CancellationToken,
}

impl StdioBridges {
    pub fn new(context: BridgeContext, shutdown: CancellationToken) -> StdioBridges {
        StdioBridges {
            context,
            tasks: HashMap::new(),
            shutdown,
        }
    }

    /// Starts bridges for new stdio servers and stops those of servers that left (or are no
    /// longer stdio). The caller keeps [`Backends`] to the configured servers. A changed spec keeps its bridge: the supervisor replaces the container,
    /// and the bridge follows it.
    pub fn apply(&mut self, specs: &[McpServerSpec]) {
        let stdio: HashMap<&str, &McpServerSpec> = specs
            .iter()
            .filter(|s| s.transport == Transport::Stdio)
            .map(|s| (s.name.as_str(), s))
            .collect();
        self.tasks.retain(|name, token| {
            let keep = stdio.contains_key(name.as_str());
            if !keep {
                token.cancel();
            }
            keep
        });
        for name in stdio.keys() {
            if self.tasks.contains_key(*name) {
                continue;
            }
            self.context.backends.register(name);
            let token = self.shutdown.child_token();
            tokio::spawn(bridge(
                (*name).to_owned(),
                self.context.clone(),
                token.clone(),
            ));
            self.tasks.insert((*name).to_owned(), token);
        }
    }
}

impl Drop for StdioBridges {
    fn drop(&mut self) {
        for token in self.tasks.values() {
            token.cancel();
        }
    }
}

/// The container the supervisor runs for `server` now, if it is running.
fn running_container(ctx: &BridgeContext, server: &str) -> Option<String> {
    ctx.supervisor
        .snapshot()
        .into_iter()
        .find(|s| s.server == server && s.phase == ServerPhase::Running)
        .and_then(|s| s.container_id)
}

async fn bridge(server: String, ctx: BridgeContext, stop: CancellationToken) {
    let mut status = ctx.supervisor.subscribe();
    // Invariant: constant arguments (100 ms ≤ 5 s), so the constructor cannot fail.
    let backoff = ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(5))
        .expect("valid constant backoff");
    let mut attempt = 0u32;
    let mut last: Option<(String, Instant)> = None;
    // Outlives each attach: a re-attached server is not asked `server/discover` again.
    let lifecycle = UpstreamLifecycle::default();
    loop {
        let Some(container) = running_container(&ctx, &server) else {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = status.changed() => if changed.is_err() { return },
            }
            continue;
        };
        // The same container again: its attach ended a moment ago, so wait a little (or for
        // the supervisor to report a change) instead of attaching in a tight loop.
        if let Some((previous, ended_at)) = &last {
            if *previous == container {
                let delay = backoff.delay(attempt);
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(*ended_at + delay) => {}
                    changed = status.changed() => if changed.is_err() { return },
                }
                if running_container(&ctx, &server).as_deref() != Some(container.as_str()) {
                    continue;
                }
            }
        }
        let attached_at = Instant::now();
        let end = attach_once(&server, &container, &ctx, &lifecycle, &stop).await;
        if stop.is_cancelled() {
            return;
        }
        if attached_at.elapsed() >= HEALTHY_ATTACH {
            attempt = 0;
        }
        tracing::info!(server = %server, container = %container, reason = ?end,
            "gateway detached from the stdio server");
        last = Some((container, Instant::now()));
    }
}

/// One attach with its mux, until it ends. `None` when the attach itself failed.
async fn attach_once(
    server: &str,
    container: &str,
    ctx: &BridgeContext,
    lifecycle: &UpstreamLifecycle,
    stop: &CancellationToken,
) -> Option<AttachEnd> {
    let attached = match ctx.docker.client() {
        Ok(docker) => stdio_attach::attach(&docker, container, ATTACH_QUEUE)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let attachment = match attached {
        Ok(a) => a,
        Err(error) => {
            ctx.backends.attach_failed(server);
            tracing::warn!(server, container, error = %error, "gateway attach failed");
            return None;
        }
    };
    let mux_stop = stop.child_token();
    let config = MuxConfig {
        server: server.into(),
        ..ctx.limits.clone()
    };
    let mux = match SessionMux::spawn(
        config,
        attachment.upstream,
        Arc::clone(&ctx.sink),
        lifecycle.clone(),
        mux_stop.clone(),
    ) {
        Ok(mux) => mux,
        Err(error) => {
            // The limits were validated with the configuration; this is a bug, not input.
            tracing::error!(server, error = %error, "gateway mux refused its limits");
            ctx.backends.attach_failed(server);
            return None;
        }
    };
    ctx.backends
        .publish(server, mux, Arc::clone(&attachment.stats));
    tracing::info!(server, container, "gateway attached to the stdio server");
    // Docker normally ends the attach when the container stops; the supervisor's view is
    // the safety net (an attach that raced a container's exit can stay open on a dead one).
    let mut status = ctx.supervisor.subscribe();
    let replaced = async {
        loop {
            if status.changed().await.is_err() {
                return;
            }
            if running_container(ctx, server).as_deref() != Some(container) {
                return;
            }
        }
    };
    let end = tokio::select! {
        end = attachment.ended.wait() => end,
        _ = replaced => AttachEnd::OutputClosed,
        _ = stop.cancelled() => AttachEnd::MuxGone,
    };
    ctx.backends.withdraw(server);
    // Ends the mux (and with it every client session) even if some handle is still held.
    mux_stop.cancel();
    Some(end)
}
