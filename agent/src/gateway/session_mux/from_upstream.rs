//! One line from the upstream server: answers go back to the session that asked under its
//! own id, the first initialize result is cached and shared, notifications are routed (by
//! progress token, by server request, or to every session), server requests go to one
//! session (the rule is in the module documentation). What cannot be routed is counted.

use serde_json::Value;
use tokio::time::Instant;
use tracing::debug;

use super::state::{Init, MuxState, Waiting};
use super::stats::MuxStats;
use super::{ClientMessage, Route, SessionId};
use crate::gateway::call_event::CallOutcome;
use crate::gateway::jsonrpc::{self, Call, ErrorCode, ErrorData, Message, RequestId};

impl MuxState {
    pub fn on_upstream_line(&mut self, line: &str, now: Instant) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let message = match jsonrpc::parse(line) {
            Ok(message) => message,
            Err(problem) => {
                MuxStats::add(&self.stats.upstream_malformed);
                debug!(
                    len = line.len(),
                    ?problem,
                    "upstream line is not a JSON-RPC message"
                );
                return;
            }
        };
        match message {
            Message::Response(response) => {
                self.on_upstream_answer(response.id, Ok(response.result), now)
            }
            Message::Error(error) => match error.id {
                Some(id) => self.on_upstream_answer(id, Err(error.error), now),
                None => MuxStats::add(&self.stats.upstream_unknown),
            },
            Message::Notification(notification) => {
                self.on_upstream_notification(notification.notification, line)
            }
            Message::Request(request) => {
                self.on_server_request(request.id, request.request, line, now)
            }
        }
    }

    fn on_upstream_answer(
        &mut self,
        id: RequestId,
        answer: Result<Value, ErrorData>,
        now: Instant,
    ) {
        let Some(upstream) = jsonrpc::as_upstream_id(&id) else {
            MuxStats::add(&self.stats.upstream_unknown);
            return;
        };
        let Some(pending) = self.settle(upstream) else {
            if self.was_issued(upstream) {
                MuxStats::add(&self.stats.upstream_late);
            } else {
                MuxStats::add(&self.stats.upstream_unknown);
            }
            return;
        };
        let (session, client_id) = match pending.waiting {
            Waiting::Call {
                session, client_id, ..
            } => (session, client_id),
            Waiting::Initialize => return self.on_initialize_answer(answer, now),
            Waiting::Discover => return self.on_discover_answer(Some(answer), now),
        };
        let outcome = match &answer {
            Err(_) => CallOutcome::JsonRpcError,
            Ok(result) if pending.method == "tools/call" && jsonrpc::is_tool_error(result) => {
                CallOutcome::ToolError
            }
            Ok(_) => CallOutcome::Ok,
        };
        self.record(pending.method, pending.tool, outcome, pending.started, now);
        let message = match answer {
            Ok(result) => jsonrpc::response(client_id.clone(), result),
            Err(error) => jsonrpc::error_data(Some(client_id.clone()), error),
        };
        self.reply(session, client_id, &message);
    }

    fn on_initialize_answer(&mut self, answer: Result<Value, ErrorData>, now: Instant) {
        let waiters = self.take_init_waiters();
        let outcome = match &answer {
            Ok(result) => {
                self.init = Init::Ready(result.clone());
                self.send_upstream(&jsonrpc::notification("notifications/initialized", None));
                CallOutcome::Ok
            }
            // Not cached: the next initialize asks again (or is refused by the gateway, when
            // this refusal says the server is discover-only).
            Err(error) => {
                self.learn_from_initialize_error(error);
                CallOutcome::JsonRpcError
            }
        };
        for waiter in waiters {
            let message = match &answer {
                Ok(result) => jsonrpc::response(waiter.client_id.clone(), result.clone()),
                Err(error) => jsonrpc::error_data(Some(waiter.client_id.clone()), error.clone()),
            };
            self.reply(waiter.session, waiter.client_id, &message);
            self.record("initialize".to_owned(), None, outcome, waiter.started, now);
        }
    }

    fn on_upstream_notification(&mut self, call: Call, line: &str) {
        match call.method.as_str() {
            "notifications/progress" => self.on_upstream_progress(call),
            "notifications/cancelled" => {
                // The server gives up on one of its own requests to a client.
                let request = jsonrpc::param(&call.params, "requestId")
                    .and_then(jsonrpc::id_from_json)
                    .and_then(|id| self.server_requests.remove(&id));
                match request {
                    Some(request) => {
                        let message = ClientMessage {
                            line: line.to_owned(),
                            route: Route::Standalone,
                        };
                        self.deliver(request.session, message, false);
                    }
                    None => MuxStats::add(&self.stats.upstream_unroutable),
                }
            }
            _ => {
                let sessions: Vec<SessionId> = self.sessions.keys().copied().collect();
                for session in sessions {
                    let message = ClientMessage {
                        line: line.to_owned(),
                        route: Route::Standalone,
                    };
                    self.deliver(session, message, false);
                }
            }
        }
    }

    fn on_upstream_progress(&mut self, mut call: Call) {
        let target = jsonrpc::param(&call.params, "progressToken")
            .and_then(jsonrpc::id_from_json)
            .and_then(|token| jsonrpc::as_upstream_id(&token))
            .and_then(|upstream| match &self.pending.get(&upstream)?.waiting {
                Waiting::Call {
                    session,
                    client_id,
                    progress: Some(token),
                } => Some((*session, client_id.clone(), token.clone())),
                _ => None,
            });
        let Some((session, client_id, token)) = target else {
            MuxStats::add(&self.stats.upstream_unroutable);
            return;
        };
        jsonrpc::replace_param(&mut call.params, "progressToken", token.into_json_value());
        let message = ClientMessage {
            line: jsonrpc::to_line(&Message::notification(call)),
            route: Route::Related(client_id),
        };
        self.deliver(session, message, true);
    }

    fn on_server_request(&mut self, id: RequestId, call: Call, line: &str, now: Instant) {
        if call.method == "ping" {
            // The server's peer is the gateway; it is alive.
            self.send_upstream(&jsonrpc::response(id, Value::Object(Default::default())));
            return;
        }
        let target = if self.server_requests.contains(&id) {
            Err((
                ErrorCode::INVALID_REQUEST,
                "a request with this id is already open",
            ))
        } else if self.server_requests.len() >= self.config.max_in_flight {
            Err((jsonrpc::OVER_LIMIT, "too many server requests open"))
        } else {
            self.session_for_server_request()
                .ok_or((ErrorCode::INTERNAL_ERROR, "no client is connected"))
        };
        let (session, related) = match target {
            Ok(target) => target,
            Err((code, text)) => {
                MuxStats::add(&self.stats.server_requests_refused);
                self.send_upstream(&jsonrpc::error(Some(id), code, text));
                return;
            }
        };
        let progress = jsonrpc::request_progress_token(&call.params);
        let deadline = now + self.config.request_timeout;
        self.server_requests.open(id, session, progress, deadline);
        let route = related.map_or(Route::Standalone, Route::Related);
        let message = ClientMessage {
            line: line.to_owned(),
            route,
        };
        self.deliver(session, message, false);
    }

    /// The session a server request goes to, and the client request it is taken to belong
    /// to (see the module documentation for the rule and why it is a guess).
    fn session_for_server_request(&self) -> Option<(SessionId, Option<RequestId>)> {
        let newest = |tools_only: bool| {
            self.pending
                .iter()
                .filter_map(|(upstream, pending)| match &pending.waiting {
                    Waiting::Call {
                        session, client_id, ..
                    } if !tools_only || pending.method == "tools/call" => {
                        Some((*upstream, *session, client_id))
                    }
                    _ => None,
                })
                .max_by_key(|(upstream, _, _)| *upstream)
                .map(|(_, session, client_id)| (session, Some(client_id.clone())))
        };
        newest(true)
            .or_else(|| newest(false))
            .or_else(|| self.last_requester.map(|session| (session, None)))
            .or_else(|| self.sessions.keys().next().map(|session| (*session, None)))
    }
}
