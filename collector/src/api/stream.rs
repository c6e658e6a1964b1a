//! `GET /api/v1/stream`: the live feed (`crate::feed`) as server-sent events, filtered by
//! the caller's scope with the same checks as the list endpoints. Resumes after
//! `Last-Event-ID` (header, or `?last_event_id=` for clients that cannot set it) when the
//! feed still holds what followed; otherwise the first event is `reset` (reload
//! everything). A `heartbeat` every `[api] stream_heartbeat` keeps proxies and the idle
//! timeout from cutting a quiet stream, and re-checks the credential: after logout, expiry,
//! revocation or a disabled user the stream sends `session_ended` and closes; changed
//! grants apply from then on. At most `[api] stream_max_clients` streams are open at once.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::OwnedSemaphorePermit;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{recheck, Caller};
use super::error::{ApiError, ErrorBody};
use super::scope::{covers, host_only};
use super::ApiState;
use crate::auth::{Permission, Principal};
use crate::feed::{Change, ChangeScope};
use crate::notify::Secret;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(stream))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Resume after this event id (same as the `Last-Event-ID` header, which wins).
    pub last_event_id: Option<String>,
}

/// Live changes as server-sent events. Each is an invalidation hint; the client re-reads
/// the list it concerns. Events: `host` `{host, online, revoked}`; `event` `{id, host,
/// server, kind, ts_ms}` (server state changes, probe results, drift and every other
/// stored event); `alert` `{fingerprint, rule, from, to, at_ms}`; `change` `{topic}` with
/// topic `alerts` (acknowledged), `silences`, `rules`, `receivers` or `admin`; `heartbeat`;
/// `reset` (reload everything); `session_ended` (then the stream closes).
#[utoipa::path(get, path = "/stream",
    params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header,
         description = "Resume after this event id (EventSource sends it on reconnect); \
                        an id this process no longer holds gets `reset`")),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
         description = "Server-sent events; ids are `<process>-<seq>`"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "the caller holds stream_max_per_user streams"),
        (status = 503, body = ErrorBody, description = "stream_max_clients streams are open")),
    tag = "stream")]
async fn stream(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    caller.require(Permission::HostsRead)?;
    // One user (or user-less token) may not take every place: a leaked read-only token
    // must not lock every console out.
    let holder = match (caller.principal.user_id, caller.principal.token_id) {
        (Some(user), _) => format!("user:{user}"),
        (None, Some(token)) => format!("token:{token}"),
        (None, None) => caller.principal.actor.clone(),
    };
    {
        let mut holders = state
            .stream_holders
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let held = holders.entry(holder.clone()).or_insert(0);
        if *held >= state.settings.stream_max_per_user {
            state.metrics.stream_refused.inc();
            caller.note("live stream refused: stream_max_per_user");
            return Err(ApiError::LimitReached(
                "too many live streams open for this user; close one".into(),
            ));
        }
        *held += 1;
    }
    let holding = Holding {
        state: state.clone(),
        holder,
    };
    let Ok(permit) = state.stream_slots.clone().try_acquire_owned() else {
        state.metrics.stream_refused.inc();
        return Err(ApiError::Unavailable(
            "too many live streams open; retry later".into(),
        ));
    };
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(q.last_event_id.as_deref());
    let resume = state.feed.resume(last);
    if resume.reset {
        state.metrics.stream_resets.inc();
    }
    state.metrics.stream_clients.inc();
    let mut heartbeat = tokio::time::interval(state.settings.stream_heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.reset();
    let open = Open {
        principal: caller.principal.clone(),
        credential: caller.credential().clone(),
        state: state.clone(),
        replay: resume.replay.into(),
        live: resume.live,
        heartbeat,
        step: if resume.reset {
            Step::Reset
        } else {
            Step::Hello
        },
        failed_checks: 0,
        stop: state.streams_stop.clone(),
        _slot: Slot {
            _permit: permit,
            _holding: holding,
            state,
        },
    };
    Ok(Sse::new(events(open)).into_response())
}

/// Heartbeats in a row whose credential check failed (the store busy) before the stream
/// ends.
const MAX_FAILED_CHECKS: u32 = 3;

/// What the stream sends next, besides changes.
enum Step {
    /// The reconnect delay browsers should use.
    Hello,
    /// The client must reload everything.
    Reset,
    Changes,
    /// The credential no longer holds: the stream is over.
    Ended,
}

/// One open stream's state.
struct Open {
    principal: Principal,
    credential: Secret,
    state: ApiState,
    replay: VecDeque<Arc<Change>>,
    live: tokio::sync::broadcast::Receiver<Arc<Change>>,
    heartbeat: tokio::time::Interval,
    step: Step,
    /// Heartbeat credential checks in a row that could not be made.
    failed_checks: u32,
    stop: tokio_util::sync::CancellationToken,
    _slot: Slot,
}

/// Holds the stream's place under `stream_max_clients` and its count in the gauge.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _holding: Holding,
    state: ApiState,
}

/// One of a holder's places under `stream_max_per_user`, given back when dropped.
struct Holding {
    state: ApiState,
    holder: String,
}

impl Drop for Holding {
    fn drop(&mut self) {
        let mut holders = self
            .state
            .stream_holders
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(held) = holders.get_mut(&self.holder) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                holders.remove(&self.holder);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.metrics.stream_clients.dec();
    }
}

fn events(open: Open) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(open, |mut open| async move {
        let event = next_event(&mut open).await?;
        Some((Ok(event), open))
    })
}

async fn next_event(open: &mut Open) -> Option<Event> {
    match open.step {
        Step::Hello => {
            open.step = Step::Changes;
            return Some(
                Event::default()
                    .retry(std::time::Duration::from_secs(3))
                    .comment("mcpwatch"),
            );
        }
        Step::Reset => {
            open.step = Step::Changes;
            return Some(named("reset"));
        }
        Step::Ended => return None,
        Step::Changes => {}
    }
    while let Some(change) = open.replay.pop_front() {
        if visible(&open.principal, &change.scope) {
            return Some(change_event(open, &change));
        }
    }
    loop {
        tokio::select! {
            () = open.stop.cancelled() => return None,
            received = open.live.recv() => match received {
                Ok(change) if visible(&open.principal, &change.scope) => {
                    return Some(change_event(open, &change));
                }
                Ok(_) => {}
                // Too far behind the feed: the receiver has moved to the oldest change
                // still buffered; the client reloads and continues from there.
                Err(RecvError::Lagged(_)) => {
                    open.state.metrics.stream_resets.inc();
                    return Some(named("reset"));
                }
                Err(RecvError::Closed) => return None,
            },
            _ = open.heartbeat.tick() => {
                return Some(match recheck(&open.state, open.credential.expose()).await {
                    // A session that must first change its password or enrol a factor (its
                    // password aged out while streaming) streams nothing more.
                    Ok(principal) if principal.restriction.is_some() => {
                        open.step = Step::Ended;
                        named("session_ended")
                    }
                    Ok(principal) => {
                        open.failed_checks = 0;
                        open.principal = principal;
                        named("heartbeat")
                    }
                    Err(ApiError::Unauthenticated) => {
                        open.step = Step::Ended;
                        named("session_ended")
                    }
                    // The store is busy: keep the stream and its grants, but not for long
                    // (fail closed: a revoked credential must not stream on unchecked).
                    Err(_) => {
                        open.failed_checks += 1;
                        if open.failed_checks >= MAX_FAILED_CHECKS {
                            open.step = Step::Ended;
                            named("session_ended")
                        } else {
                            named("heartbeat")
                        }
                    }
                });
            }
        }
    }
}

fn named(name: &'static str) -> Event {
    Event::default().event(name).data("{}")
}

fn change_event(open: &Open, change: &Change) -> Event {
    Event::default()
        .id(open.state.feed.event_id(change.seq))
        .event(change.event)
        .data(&change.data)
}

/// Whether the caller may see a change: the list endpoints' checks.
fn visible(principal: &Principal, scope: &ChangeScope) -> bool {
    match scope {
        ChangeScope::Host {
            permission,
            agent_id,
            labels: Some(labels),
        } => covers(principal, *permission, agent_id, labels),
        ChangeScope::Host {
            permission,
            agent_id,
            labels: None,
        } => principal.has_for_host(*permission, &host_only(agent_id)),
        ChangeScope::Any(p) => principal.has(*p),
        ChangeScope::Global(p) => principal.has_global(*p),
    }
}
