//! JSON-RPC 2.0 as the gateway reads and writes it: rmcp's envelope (`JsonRpcMessage`,
//! `RequestId`, `ErrorData`) around [`Call`], a method with its params kept as raw JSON.
//!
//! rmcp's own `Request` / `Notification` bodies are not used on purpose: they move `_meta` into
//! typed extensions and back, while the gateway must forward what it does not rewrite exactly
//! as it came. What it does rewrite — request ids, `progressToken`, the `requestId` of
//! `notifications/cancelled` — is read and written through the helpers here. Object keys may
//! come out in another order than they went in (serde_json's map is sorted); JSON does not
//! give key order a meaning.

pub use rmcp::model::{ErrorCode, ErrorData, NumberOrString, RequestId};
use rmcp::model::{JsonRpcMessage, JsonRpcRequest};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The body of a request or notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

/// Any message on an MCP stream: request, response, notification or error.
pub type Message = JsonRpcMessage<Call, Value, Call>;

/// -32000 and -32001 are the MCP TypeScript SDK's "connection closed" and "request timeout",
/// so clients built on it recognise them.
pub const CONNECTION_CLOSED: ErrorCode = ErrorCode(-32000);
pub const REQUEST_TIMEOUT: ErrorCode = ErrorCode(-32001);
/// A per-session or gateway-wide in-flight limit was reached; a later retry can succeed.
/// Chosen inside JSON-RPC's implementation-defined range and clear of the codes MCP defines.
pub const OVER_LIMIT: ErrorCode = ErrorCode(-32030);

/// Why a line is not a message. Neither variant carries the line: it may hold arguments or
/// results, which are never logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON at all (JSON-RPC "parse error").
    NotJson,
    /// JSON, but not a JSON-RPC 2.0 message ("invalid request"); batches are refused here too
    /// (MCP removed them in 2025-06-18).
    NotJsonRpc,
}

pub fn parse(line: &str) -> Result<Message, ParseError> {
    serde_json::from_str(line).map_err(|err| {
        if err.is_data() {
            ParseError::NotJsonRpc
        } else {
            ParseError::NotJson
        }
    })
}

/// The message as one line of JSON, without the trailing newline (the transport adds it).
pub fn to_line(message: &Message) -> String {
    // serde_json fails only on a map key that is not a string or on a Serialize impl that
    // errors; `Value`, `String`, `ErrorData` and `NumberOrString` have neither.
    serde_json::to_string(message).expect("a JSON-RPC message always serialises")
}

pub fn request(id: RequestId, call: Call) -> Message {
    JsonRpcMessage::Request(JsonRpcRequest::new(id, call))
}

pub fn response(id: RequestId, result: Value) -> Message {
    JsonRpcMessage::response(result, id)
}

pub fn error(id: Option<RequestId>, code: ErrorCode, message: &'static str) -> Message {
    JsonRpcMessage::error(ErrorData::new(code, message, None), id)
}

pub fn error_data(id: Option<RequestId>, data: ErrorData) -> Message {
    JsonRpcMessage::error(data, id)
}

pub fn notification(method: &str, params: Option<Value>) -> Message {
    JsonRpcMessage::notification(Call {
        method: method.to_owned(),
        params,
    })
}

/// `notifications/cancelled` for `request_id`, with the sender's reason.
pub fn cancelled(request_id: RequestId, reason: &str) -> Message {
    let mut params = Map::new();
    params.insert("requestId".into(), request_id.into_json_value());
    params.insert("reason".into(), Value::String(reason.to_owned()));
    notification("notifications/cancelled", Some(Value::Object(params)))
}

/// The id the gateway gives its `n`-th upstream request.
pub fn upstream_id(n: u64) -> RequestId {
    // The counter starts at 1 and counts one per request: it cannot reach 2^63.
    NumberOrString::Number(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The gateway's counter value behind an id the upstream sent back, if it can be one.
pub fn as_upstream_id(id: &RequestId) -> Option<u64> {
    match id {
        NumberOrString::Number(n) => u64::try_from(*n).ok().filter(|n| *n > 0),
        NumberOrString::String(_) => None,
    }
}

/// A JSON value read as a request id or progress token (a string or an integer).
pub fn id_from_json(value: &Value) -> Option<RequestId> {
    match value {
        Value::String(s) => Some(NumberOrString::String(s.as_str().into())),
        Value::Number(n) => n.as_i64().map(NumberOrString::Number),
        _ => None,
    }
}

/// `params[key]`, when params is an object holding it.
pub fn param<'a>(params: &'a Option<Value>, key: &str) -> Option<&'a Value> {
    params.as_ref()?.as_object()?.get(key)
}

/// Replaces `params[key]` when params is an object that holds it.
pub fn replace_param(params: &mut Option<Value>, key: &str, value: Value) {
    if let Some(slot) = params
        .as_mut()
        .and_then(Value::as_object_mut)
        .and_then(|object| object.get_mut(key))
    {
        *slot = value;
    }
}

/// A request's `params._meta.progressToken`, when it is a string or an integer.
pub fn request_progress_token(params: &Option<Value>) -> Option<RequestId> {
    id_from_json(param(params, "_meta")?.get("progressToken")?)
}

/// Replaces a request's `params._meta.progressToken` (which must be there).
pub fn set_request_progress_token(params: &mut Option<Value>, token: RequestId) {
    if let Some(slot) = params
        .as_mut()
        .and_then(Value::as_object_mut)
        .and_then(|object| object.get_mut("_meta"))
        .and_then(Value::as_object_mut)
        .and_then(|meta| meta.get_mut("progressToken"))
    {
        *slot = token.into_json_value();
    }
}

/// The tool a `tools/call` names.
pub fn tool_name(params: &Option<Value>) -> Option<String> {
    param(params, "name")?.as_str().map(str::to_owned)
}

/// A tool result that reports a failure of the tool (`isError: true`), as opposed to a
/// JSON-RPC error.
pub fn is_tool_error(result: &Value) -> bool {
    result.get("isError").and_then(Value::as_bool) == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_are_classified() {
        assert_eq!(parse("nope").err(), Some(ParseError::NotJson));
        assert_eq!(parse("{\"jsonrpc\":").err(), Some(ParseError::NotJson));
        assert_eq!(parse("[1,2]").err(), Some(ParseError::NotJsonRpc));
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0"}"#).err(),
            Some(ParseError::NotJsonRpc)
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#).err(),
            Some(ParseError::NotJsonRpc)
        );
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":"a","method":"x"}"#),
            Ok(Message::Request(_))
        ));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"p"}}"#),
            Ok(Message::Error(e)) if e.id.is_none()
        ));
    }

    #[test]
    fn params_pass_through_unchanged() {
        let line = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"_meta":{"progressToken":"t","x-vendor":1},"name":"echo","arguments":{"v":[1,{"a":null}]}}}"#;
        let Ok(Message::Request(request)) = parse(line) else {
            panic!("a request")
        };
        let again: Value = serde_json::from_str(&to_line(&Message::Request(request))).unwrap();
        assert_eq!(again, serde_json::from_str::<Value>(line).unwrap());
    }

    #[test]
    fn progress_tokens_and_ids_are_read_and_rewritten() {
        let mut params = Some(json!({"_meta": {"progressToken": "tok"}, "name": "echo"}));
        assert_eq!(
            request_progress_token(&params),
            Some(NumberOrString::String("tok".into()))
        );
        set_request_progress_token(&mut params, upstream_id(42));
        assert_eq!(
            params.as_ref().unwrap()["_meta"]["progressToken"],
            json!(42)
        );
        assert_eq!(tool_name(&params).as_deref(), Some("echo"));
        assert_eq!(
            request_progress_token(&Some(json!({"_meta": {"progressToken": {}}}))),
            None
        );
        assert_eq!(as_upstream_id(&upstream_id(5)), Some(5));
        assert_eq!(as_upstream_id(&NumberOrString::Number(0)), None);
        assert_eq!(as_upstream_id(&NumberOrString::Number(-3)), None);
        assert_eq!(as_upstream_id(&NumberOrString::String("5".into())), None);
        assert!(is_tool_error(&json!({"isError": true})));
        assert!(!is_tool_error(&json!({"isError": "true"})));
    }
}
