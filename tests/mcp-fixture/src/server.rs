//! The MCP server proper: its tools (variants A and B) and the rmcp `ServerHandler` that lists
//! and runs them, passing every answer through the switches' gate first.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, DiscoverResult,
    Implementation, InitializeRequestParams, InitializeResult, JsonObject, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};

use crate::switches::{Clock, ToolsVariant};

/// Upper bound for the `sleep` tool, so a stray call cannot park a request for hours.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// One server instance per MCP session; all share the clock.
#[derive(Debug, Clone)]
pub struct FixtureServer {
    clock: Arc<Clock>,
}

impl FixtureServer {
    pub fn new(clock: Arc<Clock>) -> FixtureServer {
        FixtureServer { clock }
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        let v = self.clock.switches.protocol_version.as_deref()?;
        // rmcp has no constructor from a string; its Deserialize accepts any version string.
        serde_json::from_value(Value::from(v)).ok()
    }
}

/// The tools of `variant`, in a stable order.
pub fn tools(variant: ToolsVariant) -> Vec<Tool> {
    let echo_description = match variant {
        ToolsVariant::A | ToolsVariant::Stateful => "Returns the given text unchanged.",
        ToolsVariant::B => "Echoes the text back (variant b wording).",
    };
    if variant == ToolsVariant::Stateful {
        return vec![
            tool(
                "echo",
                echo_description,
                json!({
                    "type": "object",
                    "properties": {"text": {"type": "string"}},
                    "required": ["text"]
                }),
            ),
            tool(
                "remember",
                "Keeps the given value in this server process.",
                json!({
                    "type": "object",
                    "properties": {"value": {"type": "string"}},
                    "required": ["value"]
                }),
            ),
            tool(
                "recall",
                "Returns the value this server process keeps (empty if none).",
                json!({"type": "object", "properties": {}}),
            ),
        ];
    }
    let mut list = vec![
        tool(
            "echo",
            echo_description,
            json!({
                "type": "object",
                "properties": {"text": {"type": "string", "description": "Text to return"}},
                "required": ["text"]
            }),
        ),
        tool(
            "add",
            "Adds two numbers.",
            json!({
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"]
            }),
        ),
    ];
    list.push(match variant {
        ToolsVariant::A | ToolsVariant::Stateful => tool(
            "time",
            "Seconds since the Unix epoch.",
            json!({"type": "object", "properties": {}}),
        ),
        ToolsVariant::B => tool(
            "sleep",
            "Waits the given number of milliseconds (at most 60000), then answers.",
            json!({
                "type": "object",
                "properties": {"ms": {"type": "integer", "minimum": 0}},
                "required": ["ms"]
            }),
        ),
    });
    list
}

fn tool(name: &'static str, description: &'static str, schema: Value) -> Tool {
    let schema = match schema {
        Value::Object(map) => map,
        // Every schema above is an object literal.
        _ => JsonObject::new(),
    };
    Tool::new(name, description, Arc::new(schema))
}

/// Runs tool `name` of `variant`. Unknown tools are a protocol error (-32602, as the spec
/// says); bad arguments are a tool error the model could read (`isError: true`).
async fn call(variant: ToolsVariant, name: &str, args: &JsonObject) -> Result<String, CallError> {
    match (variant, name) {
        (_, "echo") => Ok(string_arg(args, "text")?.to_owned()),
        (_, "add") => {
            let (a, b) = (number_arg(args, "a")?, number_arg(args, "b")?);
            match (a.as_i64(), b.as_i64()) {
                (Some(a), Some(b)) => a
                    .checked_add(b)
                    .map(|s| s.to_string())
                    .ok_or(CallError::Tool("integer overflow".into())),
                _ => {
                    let sum = a.as_f64().unwrap_or(f64::NAN) + b.as_f64().unwrap_or(f64::NAN);
                    Ok(sum.to_string())
                }
            }
        }
        (ToolsVariant::A, "time") => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Ok(now.as_secs().to_string())
        }
        (ToolsVariant::B, "sleep") => {
            let ms = number_arg(args, "ms")?
                .as_u64()
                .ok_or(CallError::Tool("ms must be a whole number >= 0".into()))?;
            let d = Duration::from_millis(ms).min(MAX_SLEEP);
            tokio::time::sleep(d).await;
            Ok(format!("slept {} ms", d.as_millis()))
        }
        (ToolsVariant::Stateful, "remember") => {
            let value = string_arg(args, "value")?.to_owned();
            *remembered() = value.clone();
            Ok(value)
        }
        (ToolsVariant::Stateful, "recall") => Ok(remembered().clone()),
        _ => Err(CallError::UnknownTool),
    }
}

/// The value `remember` keeps: one per process, shared by its sessions.
fn remembered() -> std::sync::MutexGuard<'static, String> {
    static VALUE: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
    // A plain string: a panic while holding it cannot leave it unusable.
    VALUE.lock().unwrap_or_else(|p| p.into_inner())
}

enum CallError {
    UnknownTool,
    Tool(String),
}

fn string_arg<'a>(args: &'a JsonObject, key: &str) -> Result<&'a str, CallError> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| CallError::Tool(format!("argument {key:?} must be a string")))
}

fn number_arg<'a>(args: &'a JsonObject, key: &str) -> Result<&'a serde_json::Number, CallError> {
    match args.get(key) {
        Some(Value::Number(n)) => Ok(n),
        _ => Err(CallError::Tool(format!(
            "argument {key:?} must be a number"
        ))),
    }
}

impl ServerHandler for FixtureServer {
    fn get_info(&self) -> ServerConfig {
        let info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "mcpwatch-mcp-fixture",
                env!("CARGO_PKG_VERSION"),
            ));
        match self.protocol_version() {
            Some(v) => info.with_protocol_version(v),
            None => info,
        }
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        match self.protocol_version() {
            Some(v) => Cow::Owned(vec![v]),
            None => Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS),
        }
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        self.clock.gate("initialize").await;
        // What rmcp's default `initialize` does; overridden only to pass through the gate.
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    /// Reached only when the pinned revision has `server/discover` (see `revision.rs`).
    async fn discover(
        &self,
        _context: RequestContext<RoleServer>,
    ) -> Result<DiscoverResult, ErrorData> {
        self.clock.gate("server/discover").await;
        // What rmcp's default `discover` answers; overridden only to pass through the gate.
        Ok(DiscoverResult::from_server_info(
            self.supported_protocol_versions().into_owned(),
            self.get_info(),
        ))
    }

    async fn ping(&self, _context: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.clock.gate("ping").await;
        Ok(())
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.clock.gate("tools/list").await;
        let all = tools(self.clock.variant());
        let Some(page_size) = self.clock.switches.page_size else {
            return Ok(ListToolsResult::with_all_items(all));
        };
        // The cursor is the index of the page's first tool.
        let start = match request.and_then(|r| r.cursor) {
            None => 0,
            Some(c) => c
                .parse::<usize>()
                .ok()
                .filter(|i| *i < all.len())
                .ok_or_else(|| ErrorData::invalid_params("invalid cursor", None))?,
        };
        let end = start.saturating_add(page_size).min(all.len());
        let mut page = ListToolsResult::with_all_items(all[start..end].to_vec());
        page.next_cursor = (end < all.len()).then(|| end.to_string());
        Ok(page)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.clock.gate("tools/call").await;
        let args = request.arguments.unwrap_or_default();
        match call(self.clock.variant(), &request.name, &args).await {
            Ok(text) => Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into()),
            Err(CallError::Tool(msg)) => {
                Ok(CallToolResult::error(vec![ContentBlock::text(msg)]).into())
            }
            Err(CallError::UnknownTool) => Err(ErrorData::invalid_params(
                format!("unknown tool {:?}", request.name),
                None,
            )),
        }
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools(self.clock.variant())
            .into_iter()
            .find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> JsonObject {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn names(v: ToolsVariant) -> Vec<String> {
        tools(v).into_iter().map(|t| t.name.into_owned()).collect()
    }

    #[test]
    fn variants_differ_by_one_added_one_removed_one_changed() {
        assert_eq!(names(ToolsVariant::A), ["echo", "add", "time"]);
        assert_eq!(names(ToolsVariant::B), ["echo", "add", "sleep"]);
        let (a, b) = (tools(ToolsVariant::A), tools(ToolsVariant::B));
        assert_ne!(a[0].description, b[0].description);
        assert_eq!(a[1], b[1]);
    }

    #[tokio::test]
    async fn tools_do_their_job() {
        let a = ToolsVariant::A;
        assert!(matches!(call(a, "echo", &args(json!({"text": "hi"}))).await, Ok(s) if s == "hi"));
        assert!(
            matches!(call(a, "add", &args(json!({"a": 2, "b": 40}))).await, Ok(s) if s == "42")
        );
        assert!(
            matches!(call(a, "add", &args(json!({"a": 0.5, "b": 1}))).await, Ok(s) if s == "1.5")
        );
        assert!(matches!(
            call(a, "add", &args(json!({"a": i64::MAX, "b": 1}))).await,
            Err(CallError::Tool(_))
        ));
        assert!(matches!(
            call(a, "echo", &args(json!({}))).await,
            Err(CallError::Tool(_))
        ));
        assert!(
            matches!(call(a, "time", &JsonObject::new()).await, Ok(s) if s.parse::<u64>().is_ok())
        );
        assert!(matches!(
            call(a, "sleep", &args(json!({"ms": 1}))).await,
            Err(CallError::UnknownTool)
        ));
        let b = ToolsVariant::B;
        assert!(
            matches!(call(b, "sleep", &args(json!({"ms": 1}))).await, Ok(s) if s == "slept 1 ms")
        );
        assert!(matches!(
            call(b, "time", &JsonObject::new()).await,
            Err(CallError::UnknownTool)
        ));
    }
}
