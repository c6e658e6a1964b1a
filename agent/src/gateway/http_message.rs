//! What a POST body to the gateway is: one JSON-RPC message, read without its params (only
//! the id, the method and, for `tools/call`, the tool name), flattened to one line for the
//! stdio framing; and the JSON-RPC error answers the front sends itself.

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::jsonrpc::{self, ErrorCode, RequestId};

/// A JSON-RPC error as an HTTP answer with `status`.
pub(super) fn rpc_error(
    status: StatusCode,
    id: Option<RequestId>,
    code: ErrorCode,
    text: &'static str,
) -> Response {
    let line = jsonrpc::to_line(&jsonrpc::error(id, code, text));
    (status, [(header::CONTENT_TYPE, "application/json")], line).into_response()
}

/// What a POST body is, read without its params.
#[derive(Deserialize)]
struct Envelope {
    /// Must be `"2.0"`: the mux refuses anything else, and a request it refuses without an
    /// id could never be answered.
    jsonrpc: Option<String>,
    /// `Some(Null)` for `"id": null`, which is no valid request id.
    #[serde(default, deserialize_with = "present")]
    id: Option<serde_json::Value>,
    method: Option<String>,
    params: Option<EnvelopeParams>,
}

/// The one param the gateway reads: the tool a `tools/call` names.
#[derive(Deserialize)]
struct EnvelopeParams {
    name: Option<serde_json::Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

pub(super) enum Kind {
    Request {
        id: RequestId,
        method: String,
        /// The tool of a `tools/call`.
        tool: Option<String>,
    },
    /// A notification, or a response to a server request.
    Other,
}

/// Why a body is not one JSON-RPC message: the JSON-RPC error code and text of the 400.
#[derive(Debug)]
pub(super) struct BadBody(ErrorCode, &'static str);

impl BadBody {
    pub(super) fn into_response(self) -> Response {
        rpc_error(StatusCode::BAD_REQUEST, None, self.0, self.1)
    }
}

/// The body as one line (stdio framing) and what kind of message it is.
pub(super) fn classify(body: &Bytes) -> Result<(String, Kind), BadBody> {
    let invalid = |text| Err(BadBody(ErrorCode::INVALID_REQUEST, text));
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(BadBody(ErrorCode::PARSE_ERROR, "body is not UTF-8"));
    };
    if text.trim_start().starts_with('[') {
        return invalid("JSON-RPC batches are not supported by MCP");
    }
    let Ok(envelope) = serde_json::from_str::<Envelope>(text) else {
        return Err(BadBody(
            ErrorCode::PARSE_ERROR,
            "body is not one JSON-RPC message",
        ));
    };
    if envelope.jsonrpc.as_deref() != Some("2.0") {
        return invalid("\"jsonrpc\": \"2.0\" is required");
    }
    // A pretty-printed body would break the newline framing upstream: re-encode it.
    let line = if text.contains(['\n', '\r']) {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => v.to_string(),
            Err(_) => return invalid("body is not JSON"),
        }
    } else {
        text.to_owned()
    };
    let kind = match (envelope.method, envelope.id) {
        (Some(method), Some(id)) => match jsonrpc::id_from_json(&id) {
            Some(id) => Kind::Request {
                id,
                tool: envelope
                    .params
                    .and_then(|p| p.name)
                    .and_then(|n| n.as_str().map(str::to_owned))
                    .filter(|_| method == "tools/call"),
                method,
            },
            None => return invalid("a request id must be a string or an integer"),
        },
        (Some(_), None) => Kind::Other,
        // A response to a server request; `"id": null` only on an error answer.
        (None, Some(_)) => Kind::Other,
        (None, None) => return invalid("neither a request, a notification nor a response"),
    };
    Ok((line, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_classified_and_flattened() {
        let (line, kind) = classify(&Bytes::from(
            "{\n \"jsonrpc\": \"2.0\", \"id\": 7,\n \"method\": \"initialize\"}",
        ))
        .ok()
        .unwrap();
        assert!(!line.contains('\n'));
        assert!(matches!(kind, Kind::Request { ref method, .. } if method == "initialize"));
        let (_, kind) = classify(&Bytes::from(
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"echo"}}"#,
        ))
        .ok()
        .unwrap();
        assert!(matches!(kind, Kind::Request { ref tool, .. } if tool.as_deref() == Some("echo")));
        let (_, kind) = classify(&Bytes::from(
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ))
        .ok()
        .unwrap();
        assert!(matches!(kind, Kind::Other));
        for bad in [
            r#"{"id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#,
            "[{}]",
            "{}",
            "not json",
            r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
        ] {
            let r = classify(&Bytes::from(bad)).err().unwrap().into_response();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
