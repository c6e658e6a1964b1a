//! Tool surface tracking: a SHA-256 per tool over a canonical encoding of its name,
//! description and input schema, the text a model reads of each tool (bounded, kept to show
//! what changed), and the diff between two surfaces (the drift event's body).

use std::collections::BTreeMap;

use ring::digest;
use serde_json::Value;

/// SHA-256 digest bytes.
pub type Sha256 = [u8; 32];

/// Longest description kept per tool (characters beyond are cut, marked with `…`).
const MAX_DESCRIPTION_CHARS: usize = 2048;
/// Longest canonical input schema kept per tool.
const MAX_SCHEMA_CHARS: usize = 4096;

/// What a model reads of a tool: its description and input schema (canonical JSON), cut to
/// a bound so a drift event stays small whatever a server lists.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolText {
    pub description: Option<String>,
    pub input_schema: String,
}

fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// One tool as the probe saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolFingerprint {
    pub name: String,
    /// Over name, description and input schema; see [`fingerprint`].
    pub sha256: Sha256,
    pub text: ToolText,
}

impl ToolFingerprint {
    /// Lower-case hex of the digest, for logs and events.
    pub fn sha256_hex(&self) -> String {
        mcpwatch_common::hex::encode(&self.sha256)
    }
}

/// Fingerprints a tool. The encoding is length-prefixed fields (so no two different tools can
/// encode alike) holding the name, the description (absent and empty differ) and the input
/// schema as canonical JSON: object keys sorted, no whitespace. Titles, annotations and
/// output schemas are left out: the description and input schema are what a model acts on.
pub fn fingerprint(name: &str, description: Option<&str>, input_schema: &Value) -> ToolFingerprint {
    let mut buf = Vec::with_capacity(256);
    field(&mut buf, name.as_bytes());
    match description {
        None => buf.push(0),
        Some(d) => {
            buf.push(1);
            field(&mut buf, d.as_bytes());
        }
    }
    let mut schema = String::new();
    canonical_json(input_schema, &mut schema);
    field(&mut buf, schema.as_bytes());
    let d = digest::digest(&digest::SHA256, &buf);
    let mut sha256 = [0u8; 32];
    // SHA-256 output is always 32 bytes.
    sha256.copy_from_slice(d.as_ref());
    ToolFingerprint {
        name: name.to_owned(),
        sha256,
        text: ToolText {
            description: description.map(|d| cut(d, MAX_DESCRIPTION_CHARS)),
            input_schema: cut(&schema, MAX_SCHEMA_CHARS),
        },
    }
}

/// Fingerprints an rmcp tool as received from `tools/list`.
pub fn fingerprint_tool(tool: &rmcp::model::Tool) -> ToolFingerprint {
    let schema = Value::Object((*tool.input_schema).clone());
    fingerprint(&tool.name, tool.description.as_deref(), &schema)
}

fn field(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    buf.extend_from_slice(bytes);
}

/// Writes `v` as JSON with object keys sorted by their UTF-8 bytes. Sorted explicitly rather
/// than trusting `serde_json::Map`'s order, which becomes insertion order if any crate in the
/// build enables serde_json's `preserve_order`.
pub fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out);
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        Value::String(s) => json_string(s, out),
        // Null, booleans and numbers have a single serde_json rendering.
        other => out.push_str(&other.to_string()),
    }
}

fn json_string(s: &str, out: &mut String) {
    // Serializing a Value::String cannot fail; its escaping is deterministic.
    out.push_str(&Value::String(s.to_owned()).to_string());
}

/// A server's tools by name. If a server lists one name twice, the later entry wins, so a
/// duplicate shows up as a changed hash rather than going unnoticed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolSurface {
    pub tools: BTreeMap<String, Sha256>,
    /// Each tool's text (missing for baselines an older agent saved, which kept hashes only).
    pub texts: BTreeMap<String, ToolText>,
}

impl ToolSurface {
    pub fn new(tools: &[ToolFingerprint]) -> ToolSurface {
        ToolSurface {
            tools: tools.iter().map(|t| (t.name.clone(), t.sha256)).collect(),
            texts: tools
                .iter()
                .map(|t| (t.name.clone(), t.text.clone()))
                .collect(),
        }
    }

    pub fn count(&self) -> usize {
        self.tools.len()
    }

    /// What changed going from `self` (the approved surface) to `newer` (the one just seen).
    pub fn diff(&self, newer: &ToolSurface) -> ToolDrift {
        let mut drift = ToolDrift::default();
        let change = |tool: &String| ToolChange {
            tool: tool.clone(),
            before: self.texts.get(tool).cloned(),
            after: newer.texts.get(tool).cloned(),
        };
        for (name, hash) in &newer.tools {
            match self.tools.get(name) {
                None => {
                    drift.added.push(name.clone());
                    drift.changes.push(change(name));
                }
                Some(old) if old != hash => {
                    drift.changed.push(name.clone());
                    drift.changes.push(change(name));
                }
                Some(_) => {}
            }
        }
        for name in self.tools.keys().filter(|n| !newer.tools.contains_key(*n)) {
            drift.removed.push(name.clone());
            drift.changes.push(change(name));
        }
        drift
    }
}

/// One tool's text before (the approved surface) and after (the one just seen); `None`
/// where the tool did not exist, or the baseline kept no text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ToolChange {
    pub tool: String,
    pub before: Option<ToolText>,
    pub after: Option<ToolText>,
}

/// Names (sorted) of tools added, removed and changed between two surfaces, and the text
/// of each, before and after.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolDrift {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub changes: Vec<ToolChange>,
}

impl ToolDrift {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hash_is_stable_under_key_order_and_whitespace() {
        let a: Value = serde_json::from_str(
            r#"{"type":"object","properties":{"b":{"type":"number"},"a":{"type":"string"}},"required":["a"]}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{ "required": ["a"], "properties": { "a": {"type": "string"}, "b": {"type": "number"} }, "type": "object" }"#,
        )
        .unwrap();
        assert_eq!(
            fingerprint("t", Some("d"), &a),
            fingerprint("t", Some("d"), &b)
        );
    }

    #[test]
    fn canonical_json_sorts_nested_keys_and_keeps_array_order() {
        let v = json!({"z": [ {"y": 1, "x": "é\n"}, 2 ], "a": null, "m": true});
        let mut s = String::new();
        canonical_json(&v, &mut s);
        assert_eq!(s, r#"{"a":null,"m":true,"z":[{"x":"é\n","y":1},2]}"#);
    }

    #[test]
    fn every_field_counts() {
        let schema = json!({"type": "object"});
        let base = fingerprint("echo", Some("Echo"), &schema);
        assert_ne!(base, fingerprint("echo", Some("Echo!"), &schema));
        assert_ne!(base.sha256, fingerprint("echo", None, &schema).sha256);
        assert_ne!(
            fingerprint("echo", None, &schema).sha256,
            fingerprint("echo", Some(""), &schema).sha256
        );
        assert_ne!(
            base.sha256,
            fingerprint("echo", Some("Echo"), &json!({"type": "array"})).sha256
        );
        assert_ne!(
            base.sha256,
            fingerprint("echo2", Some("Echo"), &schema).sha256
        );
        // Length prefixes: moving bytes between name and description changes the hash.
        assert_ne!(
            fingerprint("ab", Some("c"), &schema).sha256,
            fingerprint("a", Some("bc"), &schema).sha256
        );
        assert_eq!(base.sha256_hex().len(), 64);
    }

    #[test]
    fn text_is_kept_and_cut_at_its_bound() {
        let long = "é".repeat(MAX_DESCRIPTION_CHARS + 5);
        let f = fingerprint("t", Some(&long), &json!({"b": 1, "a": 2}));
        let d = f.text.description.expect("description");
        assert_eq!(d.chars().count(), MAX_DESCRIPTION_CHARS + 1);
        assert!(d.ends_with('…'));
        assert_eq!(f.text.input_schema, r#"{"a":2,"b":1}"#);
    }

    #[test]
    fn known_digest_pins_the_encoding() {
        // Changing the encoding would raise drift on every server after an agent upgrade,
        // so the exact bytes are pinned here.
        let f = fingerprint("echo", Some("Echo"), &json!({"type": "object"}));
        let mut expected = Vec::new();
        expected.extend_from_slice(&4u64.to_be_bytes());
        expected.extend_from_slice(b"echo");
        expected.push(1);
        expected.extend_from_slice(&4u64.to_be_bytes());
        expected.extend_from_slice(b"Echo");
        expected.extend_from_slice(&17u64.to_be_bytes());
        expected.extend_from_slice(br#"{"type":"object"}"#);
        assert_eq!(
            f.sha256.as_slice(),
            digest::digest(&digest::SHA256, &expected).as_ref()
        );
    }

    #[test]
    fn diff_lists_added_removed_changed() {
        let schema = json!({});
        let old = ToolSurface::new(&[
            fingerprint("echo", Some("v1"), &schema),
            fingerprint("add", None, &schema),
            fingerprint("time", None, &schema),
        ]);
        let new = ToolSurface::new(&[
            fingerprint("echo", Some("v2"), &schema),
            fingerprint("add", None, &schema),
            fingerprint("sleep", None, &schema),
        ]);
        assert_eq!(old.count(), 3);
        let d = old.diff(&new);
        assert_eq!(d.added, ["sleep"]);
        assert_eq!(d.removed, ["time"]);
        assert_eq!(d.changed, ["echo"]);
        let echo = d
            .changes
            .iter()
            .find(|c| c.tool == "echo")
            .expect("echo's change");
        assert_eq!(
            echo.before.as_ref().and_then(|t| t.description.as_deref()),
            Some("v1")
        );
        assert_eq!(
            echo.after.as_ref().and_then(|t| t.description.as_deref()),
            Some("v2")
        );
        let time = d
            .changes
            .iter()
            .find(|c| c.tool == "time")
            .expect("time's change");
        assert!(time.before.is_some() && time.after.is_none());
        assert!(!d.is_empty());
        assert!(old.diff(&old).is_empty());
        let back = new.diff(&old);
        assert_eq!(
            (back.added, back.removed),
            (vec!["time".to_owned()], vec!["sleep".to_owned()])
        );
    }
}
