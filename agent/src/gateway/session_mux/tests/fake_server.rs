//! A fake stdio MCP server: reads the mux's upstream lines, answers them as a server would
//! and records what it saw. Tools (`tools/call` by name): `echo` answers `arguments.text`
//! after a random 0–3 ms (so answers come back out of order), `fail` answers `isError: true`,
//! `rpc_error` a JSON-RPC error, `hang` never, `progress` sends two progress notifications
//! first, `sample` asks the client `sampling/createMessage` and answers with its reply.
//! Methods starting with `hang` are never answered either; other methods answer `{}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

#[derive(Default, Clone)]
pub(crate) struct FakeOptions {
    /// How long the server takes to answer initialize.
    pub init_delay: Duration,
    /// The first initialize is answered with an error.
    pub init_fails_first: bool,
    /// How `server/discover` is answered.
    pub discover: Discover,
}

/// What the fake server does with `server/discover`.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discover {
    /// `{}`, as it answers every method it does not know.
    #[default]
    Empty,
    /// -32601, as a server written before the method existed.
    Unknown,
    /// Never answers.
    Hang,
    /// It speaks only 2026-07-28: discover lists it, `initialize` is refused with -32022.
    Only2026,
}

#[derive(Default)]
pub(crate) struct ServerLog {
    pub initializes: usize,
    pub initialized: usize,
    pub discovers: usize,
    /// Every request's id, in arrival order.
    pub request_ids: Vec<Value>,
    /// Ids of `hang` calls.
    pub hanging: Vec<Value>,
    /// Progress tokens of `progress` calls as the server saw them.
    pub progress_tokens: Vec<Value>,
    /// `requestId` of every `notifications/cancelled`.
    pub cancelled: Vec<Value>,
    /// Client answers to the server's own requests.
    pub client_answers: Vec<Value>,
    /// Other notifications, by method.
    pub notifications: Vec<String>,
}

pub(crate) struct FakeServer;

impl FakeServer {
    pub fn spawn(
        options: FakeOptions,
        mut input: mpsc::Receiver<String>,
        output: mpsc::Sender<String>,
    ) -> Arc<Mutex<ServerLog>> {
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let shared = Arc::clone(&log);
        tokio::spawn(async move {
            // Server request id → the tools/call it is part of.
            let mut sampling: HashMap<String, Value> = HashMap::new();
            while let Some(line) = input.recv().await {
                let message: Value = serde_json::from_str(&line).expect("the mux writes JSON");
                assert!(!line.ends_with('\n'), "lines carry no newline");
                let method = message["method"].as_str().map(str::to_owned);
                match (method, message.get("id")) {
                    (Some(method), Some(id)) => {
                        shared.lock().unwrap().request_ids.push(id.clone());
                        let request = Request {
                            id: id.clone(),
                            params: message["params"].clone(),
                        };
                        handle(&options, &shared, &output, &mut sampling, &method, request).await;
                    }
                    (Some(method), None) => note(&shared, &method, &message["params"]),
                    (None, Some(id)) => {
                        shared.lock().unwrap().client_answers.push(message.clone());
                        let key = id.as_str().unwrap_or_default().to_owned();
                        if let Some(call_id) = sampling.remove(&key) {
                            let text = message["result"]["content"]["text"].clone();
                            send(
                                &output,
                                answer(
                                    &call_id,
                                    json!({"content": [{"type": "text", "text": text}]}),
                                ),
                            )
                            .await;
                        }
                    }
                    (None, None) => panic!("the mux wrote a message that is neither: {line}"),
                }
            }
        });
        log
    }
}

struct Request {
    id: Value,
    params: Value,
}

async fn handle(
    options: &FakeOptions,
    log: &Mutex<ServerLog>,
    output: &mpsc::Sender<String>,
    sampling: &mut HashMap<String, Value>,
    method: &str,
    request: Request,
) {
    let Request { id, params } = request;
    if method == "server/discover" {
        log.lock().unwrap().discovers += 1;
        let versions = json!({"supportedVersions": ["2026-07-28"]});
        match options.discover {
            Discover::Empty => send(output, answer(&id, json!({}))).await,
            Discover::Unknown => {
                let error = json!({"code": -32601, "message": "Method not found"});
                send(output, json!({"jsonrpc": "2.0", "id": id, "error": error})).await;
            }
            Discover::Hang => {}
            Discover::Only2026 => send(output, answer(&id, versions)).await,
        }
        return;
    }
    if method == "initialize" && options.discover == Discover::Only2026 {
        log.lock().unwrap().initializes += 1;
        let data = json!({"requested": params["protocolVersion"], "supported": ["2026-07-28"]});
        let error =
            json!({"code": -32022, "message": "Unsupported protocol version", "data": data});
        send(output, json!({"jsonrpc": "2.0", "id": id, "error": error})).await;
        return;
    }
    if method == "initialize" {
        let first = {
            let mut log = log.lock().unwrap();
            log.initializes += 1;
            log.initializes == 1
        };
        tokio::time::sleep(options.init_delay).await;
        if first && options.init_fails_first {
            send(output, json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": "not yet"}})).await;
        } else {
            let result = json!({
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {"listChanged": true}},
                "serverInfo": {"name": "fake", "version": "1"},
            });
            send(output, answer(&id, result)).await;
        }
        return;
    }
    if method.starts_with("hang") {
        log.lock().unwrap().hanging.push(id);
        return;
    }
    if method != "tools/call" {
        send(output, answer(&id, json!({}))).await;
        return;
    }
    let text = params["arguments"]["text"].clone();
    match params["name"].as_str().unwrap_or_default() {
        "echo" => {
            let output = output.clone();
            let delay = Duration::from_micros(fastrand::u64(0..3_000));
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let result = json!({"content": [{"type": "text", "text": text}], "isError": false});
                send(&output, answer(&id, result)).await;
            });
        }
        "fail" => send(output, answer(&id, json!({"content": [], "isError": true}))).await,
        "rpc_error" => {
            let error = json!({"code": -32602, "message": "bad arguments"});
            send(output, json!({"jsonrpc": "2.0", "id": id, "error": error})).await;
        }
        "hang" => log.lock().unwrap().hanging.push(id),
        "progress" => {
            let token = params["_meta"]["progressToken"].clone();
            log.lock().unwrap().progress_tokens.push(token.clone());
            for progress in [1, 2] {
                let params = json!({"progressToken": token, "progress": progress, "total": 2});
                let line = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": params});
                send(output, line).await;
            }
            send(output, answer(&id, json!({"content": [], "isError": false}))).await;
        }
        "sample" => {
            let server_id = format!("srv-{id}");
            sampling.insert(server_id.clone(), id);
            let params = json!({"messages": [], "maxTokens": 10, "_meta": {"progressToken": server_id}});
            let line = json!({"jsonrpc": "2.0", "id": server_id, "method": "sampling/createMessage", "params": params});
            send(output, line).await;
        }
        _ => send(output, json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no such tool"}})).await,
    }
}

fn note(log: &Mutex<ServerLog>, method: &str, params: &Value) {
    let mut log = log.lock().unwrap();
    match method {
        "notifications/initialized" => log.initialized += 1,
        "notifications/cancelled" => log.cancelled.push(params["requestId"].clone()),
        _ => log.notifications.push(method.to_owned()),
    }
}

fn answer(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

async fn send(output: &mpsc::Sender<String>, message: Value) {
    // The mux may be gone at the end of a test; the server then just stops answering.
    let _ = output.send(message.to_string()).await;
}
