//! One line from a client session: requests get a fresh upstream id (and progress token),
//! `initialize` is answered from the cache or joins the one in flight, cancels are mapped to
//! the session's own requests, answers to server requests are checked against the session
//! they went to. What cannot be read is answered with -32700 / -32600 and counted.

use tokio::time::Instant;

use super::state::{Init, InitWaiter, MuxState, Waiting};
use super::stats::MuxStats;
use super::{ClientMessage, Route, SessionId};
use crate::gateway::call_event::CallOutcome;
use crate::gateway::jsonrpc::{self, Call, ErrorCode, ErrorData, Message, ParseError, RequestId};
use serde_json::Value;

impl MuxState {
    pub fn on_client_line(&mut self, session: SessionId, line: &str, now: Instant) {
        if !self.sessions.contains_key(&session) {
            // Lines still queued from a session that has ended.
            return;
        }
        let message = match jsonrpc::parse(line) {
            Ok(message) => message,
            Err(problem) => {
                MuxStats::add(&self.stats.client_malformed);
                let (code, text) = match problem {
                    ParseError::NotJson => (ErrorCode::PARSE_ERROR, "not JSON"),
                    ParseError::NotJsonRpc => {
                        (ErrorCode::INVALID_REQUEST, "not a JSON-RPC 2.0 message")
                    }
                };
                let line = jsonrpc::to_line(&jsonrpc::error(None, code, text));
                let message = ClientMessage {
                    line,
                    route: Route::Standalone,
                };
                self.deliver(session, message, false);
                return;
            }
        };
        match message {
            Message::Request(request) => {
                self.on_client_request(session, request.id, request.request, now)
            }
            Message::Notification(notification) => {
                self.on_client_notification(session, notification.notification, now)
            }
            Message::Response(response) => {
                self.on_client_answer(session, response.id, Ok(response.result))
            }
            Message::Error(error) => match error.id {
                Some(id) => self.on_client_answer(session, id, Err(error.error)),
                // An error about a message the client could not read: nothing to route.
                None => MuxStats::add(&self.stats.client_unroutable),
            },
        }
    }

    fn on_client_request(
        &mut self,
        session: SessionId,
        id: RequestId,
        mut call: Call,
        now: Instant,
    ) {
        if call.method == "initialize" && matches!(self.init, Init::Ready(_)) {
            // Answered at once from the cache: it takes no in-flight slot, so no limit applies.
            self.on_client_initialize(session, id, call, now);
            return;
        }
        let Some(entry) = self.sessions.get(&session) else {
            return;
        };
        if entry.in_flight() >= self.config.max_in_flight_per_session
            || self.in_flight >= self.config.max_in_flight
        {
            MuxStats::add(&self.stats.client_refused);
            let text = "too many requests in flight; retry later";
            self.reply_error(session, id, jsonrpc::OVER_LIMIT, text);
            return;
        }
        if entry.requests.contains_key(&id) {
            MuxStats::add(&self.stats.client_refused);
            let text = "a request with this id is already in flight";
            self.reply_error(session, id, ErrorCode::INVALID_REQUEST, text);
            return;
        }
        if call.method == "initialize" {
            self.on_client_initialize(session, id, call, now);
            return;
        }
        let upstream = self.next_upstream_id();
        let progress = jsonrpc::request_progress_token(&call.params);
        if progress.is_some() {
            jsonrpc::set_request_progress_token(&mut call.params, jsonrpc::upstream_id(upstream));
        }
        let tool = match call.method.as_str() {
            "tools/call" => jsonrpc::tool_name(&call.params),
            _ => None,
        };
        let waiting = Waiting::Call {
            session,
            client_id: id,
            progress,
        };
        let deadline = now + self.config.request_timeout;
        self.request_upstream(upstream, waiting, call, tool, now, deadline);
    }

    fn on_client_initialize(
        &mut self,
        session: SessionId,
        id: RequestId,
        call: Call,
        now: Instant,
    ) {
        let waiter = InitWaiter {
            session,
            client_id: id,
            started: now,
        };
        match &self.init {
            Init::Ready(result) => {
                let answer = jsonrpc::response(waiter.client_id.clone(), result.clone());
                self.reply(session, waiter.client_id, &answer);
                self.record("initialize".to_owned(), None, CallOutcome::Ok, now, now);
            }
            Init::InFlight(_) | Init::Held(..) => self.add_init_waiter(waiter),
            Init::Idle => self.initialize_upstream(waiter, call, now),
        }
    }

    fn on_client_notification(&mut self, session: SessionId, call: Call, now: Instant) {
        match call.method.as_str() {
            // The gateway sends its own, once, when the upstream's initialize succeeds.
            "notifications/initialized" => {}
            "notifications/cancelled" => {
                let upstream = jsonrpc::param(&call.params, "requestId")
                    .and_then(jsonrpc::id_from_json)
                    .and_then(|id| self.sessions.get(&session)?.requests.get(&id).copied());
                // Not (or no longer) in flight for this session: nothing to cancel.
                let Some(upstream) = upstream else {
                    MuxStats::add(&self.stats.client_unroutable);
                    return;
                };
                let Some(pending) = self.settle(upstream) else {
                    return;
                };
                let outcome = CallOutcome::Cancelled;
                self.record(pending.method, pending.tool, outcome, pending.started, now);
                let mut params = call.params;
                let upstream_id = jsonrpc::upstream_id(upstream).into_json_value();
                jsonrpc::replace_param(&mut params, "requestId", upstream_id);
                let method = "notifications/cancelled";
                self.send_upstream(&jsonrpc::notification(method, params));
            }
            "notifications/progress" => {
                // Progress on a server request this session is answering; the token is the
                // server's own, so it goes up unchanged.
                let token =
                    jsonrpc::param(&call.params, "progressToken").and_then(jsonrpc::id_from_json);
                let known = token.is_some_and(|token| {
                    self.server_requests.values().any(|request| {
                        request.session == session && request.progress.as_ref() == Some(&token)
                    })
                });
                if known {
                    self.send_upstream(&Message::notification(call));
                } else {
                    MuxStats::add(&self.stats.client_unroutable);
                }
            }
            _ => self.send_upstream(&Message::notification(call)),
        }
    }

    fn on_client_answer(
        &mut self,
        session: SessionId,
        id: RequestId,
        answer: Result<Value, ErrorData>,
    ) {
        let owned = self
            .server_requests
            .get(&id)
            .is_some_and(|request| request.session == session);
        if !owned {
            MuxStats::add(&self.stats.client_unroutable);
            return;
        }
        self.server_requests.remove(&id);
        let message = match answer {
            Ok(result) => jsonrpc::response(id, result),
            Err(error) => jsonrpc::error_data(Some(id), error),
        };
        self.send_upstream(&message);
    }
}
