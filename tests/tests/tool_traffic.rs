//! The collector side of the gateway's traffic metrics, against the real binary: a
//! simulated agent (raw protocol over mutual TLS) sends the series the agent's gateway sends
//! — `mcpwatch_mcp_tool_calls_total{server,tool,outcome}` and
//! `mcpwatch_mcp_tool_call_duration_seconds_bucket{server,tool,le}`, cumulative, with an
//! agent restart (counters back to zero) in the history — and
//! `GET /hosts/{id}/servers/{server}/tools` answers exact figures for it; the built-in rules
//! `mcp_tool_error_ratio_high` and `mcp_tool_latency_high` (windows shortened to 20 s by
//! overriding them by name) fire from sent samples with the tool's labels, stay quiet for
//! 19 failing calls, and resolve when the failures and slow calls leave the window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpwatch_common::wire::SeriesKey;
use mcpwatch_tests::api::{admin_token, Api};
use mcpwatch_tests::client;
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::sim::{wall_ms, AckWait, SimAgent};
use mcpwatch_tests::Pki;
use serde_json::{json, Value};
use tokio::runtime::Runtime;

const AGENT: &str = "gw-host";
const CALLS: &str = "mcpwatch_mcp_tool_calls_total";
const BUCKETS: &str = "mcpwatch_mcp_tool_call_duration_seconds_bucket";
const LE: [&str; 14] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60",
    "+Inf",
];
const MINUTE: i64 = 60_000;

struct Setup {
    rt: Runtime,
    _c: CollectorProc,
    api: Api,
    agent: SimAgent,
    _tmp: tempfile::TempDir,
}

impl Setup {
    /// A collector with `alerting` in its config and `rules` as its `rules.toml`, and a
    /// connected simulated agent.
    fn new(alerting: &str, rules: &str) -> Setup {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(&tmp.path().join("pki"));
        let dir = tmp.path().join("c");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("rules.toml"), rules).expect("rules");
        let c = CollectorProc::start(&pki, &dir, alerting);
        let api = Api::new(c.http, Some(&admin_token(&c.db, "admin", None)));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let certs = pki.agent(AGENT);
        let tls: Arc<rustls::ClientConfig> = client::config(&pki.ca(), &certs.cert, &certs.key);
        let agent = rt
            .block_on(SimAgent::connect(c.ingest, tls, AGENT))
            .ack_wait(AckWait::SkipOthers);
        Setup {
            rt,
            _c: c,
            api,
            agent,
            _tmp: tmp,
        }
    }

    /// Sends one batch and waits for its Ack (committed, rules evaluated).
    fn push(&mut self, samples: &[(SeriesKey, i64, f64)]) {
        self.rt.block_on(self.agent.push(samples, Vec::new()));
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let r = self.api.get(path);
        (r.status, r.json())
    }
}

fn calls(server: &str, tool: &str, outcome: &str) -> SeriesKey {
    SeriesKey::new(
        CALLS,
        &[("server", server), ("tool", tool), ("outcome", outcome)],
    )
}

fn bucket(server: &str, tool: &str, le: &str) -> SeriesKey {
    SeriesKey::new(BUCKETS, &[("server", server), ("tool", tool), ("le", le)])
}

/// The 14 bucket samples of one histogram at `ts`: `cum[i]` observations ≤ `LE[i]`.
fn histogram(server: &str, tool: &str, ts: i64, cum: [f64; 14]) -> Vec<(SeriesKey, i64, f64)> {
    LE.iter()
        .zip(cum)
        .map(|(le, n)| (bucket(server, tool, le), ts, n))
        .collect()
}

/// `a + b` per bucket.
fn add(a: [f64; 14], b: [f64; 14]) -> [f64; 14] {
    std::array::from_fn(|i| a[i] + b[i])
}

fn close(v: &Value, want: f64, what: &str) {
    let got = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {v}"));
    assert!((got - want).abs() < 1e-9, "{what}: {got} != {want}");
}

#[test]
fn tools_endpoint_reports_exact_figures() {
    let mut s = Setup::new("", "");
    let now = wall_ms();
    // Times before now: 35 min (the baseline of a 30 min range), 20, 10 (after an agent
    // restart: every counter began again at zero), 5 and 1.
    let (t35, t20, t10, t5, t1) = (
        now - 35 * MINUTE,
        now - 20 * MINUTE,
        now - 10 * MINUTE,
        now - 5 * MINUTE,
        now - MINUTE,
    );
    let zero = [0.0; 14];
    let base = [1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14.];
    // Observations of `read` in the range, cumulative per bucket: 60 calls, 36 within
    // 0.1 s, 57 within 1 s, 59 within 60 s, one beyond.
    let first = [
        0., 0., 2., 4., 10., 18., 18., 19., 19., 19., 19., 19., 19., 20.,
    ];
    let second = [
        0., 0., 4., 8., 26., 36., 36., 38., 38., 38., 38., 40., 40., 40.,
    ];
    let t35_batch: Vec<_> = [
        (calls("files", "read", "ok"), t35, 100.0),
        (calls("files", "read", "tool_error"), t35, 2.0),
        (calls("files", "read", "cancelled"), t35, 0.0),
        (calls("files", "idle", "ok"), t35, 7.0),
        (calls("files", "old", "ok"), t35, 9.0),
        (calls("other", "read", "ok"), t35, 0.0),
    ]
    .into_iter()
    .chain(histogram("files", "read", t35, base))
    .collect();
    s.push(&t35_batch);
    let t20_batch: Vec<_> = [
        (calls("files", "read", "ok"), t20, 130.0),
        (calls("files", "read", "tool_error"), t20, 4.0),
        (calls("files", "read", "cancelled"), t20, 0.0),
        (calls("files", "idle", "ok"), t20, 7.0),
        (calls("other", "read", "ok"), t20, 500.0),
    ]
    .into_iter()
    .chain(histogram("files", "read", t20, add(base, first)))
    .collect();
    s.push(&t20_batch);
    // The agent restarted: counters from zero, and `timeout` appears for the first time.
    let t10_batch: Vec<_> = [
        (calls("files", "read", "ok"), t10, 5.0),
        (calls("files", "read", "tool_error"), t10, 0.0),
        (calls("files", "read", "timeout"), t10, 2.0),
        (calls("files", "read", "cancelled"), t10, 0.0),
        (calls("files", "idle", "ok"), t10, 0.0),
    ]
    .into_iter()
    .chain(histogram("files", "read", t10, zero))
    .collect();
    s.push(&t10_batch);
    s.push(&[
        (calls("files", "_other", "tool_error"), t5, 1.0),
        (calls("files", "idle", "ok"), t5, 0.0),
    ]);
    let t1_batch: Vec<_> = [
        (calls("files", "read", "ok"), t1, 20.0),
        (calls("files", "read", "tool_error"), t1, 1.0),
        (calls("files", "read", "timeout"), t1, 2.0),
        (calls("files", "read", "cancelled"), t1, 5.0),
        (calls("files", "_other", "tool_error"), t1, 1.0),
        (calls("files", "idle", "ok"), t1, 0.0),
    ]
    .into_iter()
    .chain(histogram("files", "read", t1, second))
    .collect();
    s.push(&t1_batch);

    let (status, body) = s.get(&format!(
        "/api/v1/hosts/{AGENT}/servers/files/tools?range=30m"
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["server"], "files");
    assert_eq!(body["range"], "30m");
    assert_eq!(body["truncated"], false);
    let tools: Vec<&str> = body["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["tool"].as_str().expect("name"))
        .collect();
    // `old` has no sample in the range; `other`'s `read` is another server's.
    assert_eq!(tools, ["_other", "idle", "read"], "{body}");
    let read = &body["tools"][2];
    // ok: 30 + 5 (after the restart) + 15; tool_error: 2 + 0 + 1; timeout: new, 2;
    // cancelled: 5 (not an error).
    close(&read["outcomes"]["ok"], 50.0, "ok");
    close(&read["outcomes"]["tool_error"], 3.0, "tool_error");
    close(&read["outcomes"]["timeout"], 2.0, "timeout");
    close(&read["outcomes"]["cancelled"], 5.0, "cancelled");
    close(&read["calls"], 60.0, "calls");
    close(&read["errors"], 5.0, "errors");
    close(&read["error_ratio"], 5.0 / 60.0, "error_ratio");
    assert_eq!(read["last_error_at"], t1, "{read}");
    // Buckets over the range (first + second): 60 calls; 12 ≤ 0.05 s, 36 ≤ 0.1 s, 54 ≤ 0.25,
    // 57 ≤ 1, 59 ≤ 30. p50: rank 30 in (0.05, 0.1], 18 of 24; p95: rank 57, the top of
    // (0.5, 1]; p99: rank 59.4, beyond 60 s, so the highest finite bound.
    close(&read["p50"], 0.05 + 0.05 * 18.0 / 24.0, "p50");
    close(&read["p95"], 1.0, "p95");
    close(&read["p99"], 60.0, "p99");
    let idle = &body["tools"][1];
    close(&idle["calls"], 0.0, "idle calls");
    assert_eq!(idle["error_ratio"], Value::Null);
    assert_eq!(idle["p50"], Value::Null);
    assert_eq!(idle["last_error_at"], Value::Null);
    // `_other` appeared with one failed call: counted from zero.
    let other = &body["tools"][0];
    close(&other["calls"], 1.0, "_other calls");
    close(&other["error_ratio"], 1.0, "_other ratio");
    assert_eq!(other["last_error_at"], t5);

    // The last 5 minutes: only the samples at t1 count, over their baselines at t5 / t10.
    let (status, body) = s.get(&format!(
        "/api/v1/hosts/{AGENT}/servers/files/tools?range=5m"
    ));
    assert_eq!(status, 200, "{body}");
    let read = &body["tools"][2];
    close(&read["calls"], 15.0 + 1.0 + 5.0, "5m calls");
    close(&read["errors"], 1.0, "5m errors");
    assert_eq!(read["last_error_at"], t1);
    close(&body["tools"][0]["calls"], 0.0, "5m _other");

    // Default range (1 h) and the range's bounds.
    let (status, body) = s.get(&format!("/api/v1/hosts/{AGENT}/servers/files/tools"));
    assert_eq!(
        (status, body["range"].as_str()),
        (200, Some("1h")),
        "{body}"
    );
    let (status, _) = s.get(&format!(
        "/api/v1/hosts/{AGENT}/servers/files/tools?range=7h"
    ));
    assert_eq!(status, 422);
    let (status, _) = s.get(&format!(
        "/api/v1/hosts/{AGENT}/servers/files/tools?range=soon"
    ));
    assert_eq!(status, 400);
    let (status, _) = s.get("/api/v1/hosts/nobody/servers/files/tools");
    assert_eq!(status, 404);
    let (status, body) = s.get(&format!("/api/v1/hosts/{AGENT}/servers/nothing/tools"));
    assert_eq!(
        (status, body["tools"].as_array().map(Vec::len)),
        (200, Some(0))
    );
}

/// Rules file shortening the two tool rules' windows (overrides by name).
const SHORT_WINDOWS: &str = r#"
[[rule]]
name = "mcp_tool_error_ratio_high"
window = "20s"
[[rule]]
name = "mcp_tool_latency_high"
window = "20s"
"#;

/// The active alerts of `rule`.
fn active(s: &Setup, rule: &str) -> Vec<Value> {
    let (status, body) = s.get(&format!("/api/v1/alerts?rule={rule}"));
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn tool_rules_fire_guard_and_resolve() {
    let mut s = Setup::new("[alerting]\nrule_files = [\"rules.toml\"]\n", SHORT_WINDOWS);
    // Everything at zero, then: `read` 100 calls of which 30 fail (critical), 90 within
    // 5 s and 10 in (5, 10] (p95 = 7.5 s); `flaky` 19 calls, all failing (under the floor).
    let t0 = wall_ms();
    let mut start: Vec<_> = ["ok", "tool_error"]
        .iter()
        .flat_map(|o| {
            [
                (calls("files", "read", o), t0, 0.0),
                (calls("files", "flaky", o), t0, 0.0),
            ]
        })
        .collect();
    start.extend(histogram("files", "read", t0, [0.0; 14]));
    s.push(&start);
    let slow = [
        0., 0., 0., 0., 0., 0., 0., 80., 85., 90., 100., 100., 100., 100.,
    ];
    let t1 = t0 + 500;
    let mut burst = vec![
        (calls("files", "read", "ok"), t1, 70.0),
        (calls("files", "read", "tool_error"), t1, 30.0),
        (calls("files", "flaky", "ok"), t1, 0.0),
        (calls("files", "flaky", "tool_error"), t1, 19.0),
    ];
    burst.extend(histogram("files", "read", t1, slow));
    s.push(&burst);

    // Both fire in the commit of that batch.
    let ratio = active(&s, "mcp_tool_error_ratio_high");
    assert_eq!(
        ratio.len(),
        1,
        "only `read`, not the 19 calls of `flaky`: {ratio:?}"
    );
    let a = &ratio[0];
    assert_eq!(a["level"], "critical");
    assert_eq!(a["labels"]["host"], AGENT);
    assert_eq!(a["labels"]["server"], "files");
    assert_eq!(a["labels"]["tool"], "read");
    assert!(a["labels"].get("outcome").is_none(), "{a}");
    close(&a["value"], 0.3, "ratio");
    let latency = active(&s, "mcp_tool_latency_high");
    assert_eq!(latency.len(), 1, "{latency:?}");
    let l = &latency[0];
    assert_eq!(l["level"], "warning");
    assert_eq!(l["labels"]["tool"], "read");
    assert_eq!(l["labels"]["host"], AGENT);
    assert!(l["labels"].get("le").is_none(), "{l}");
    close(&l["value"], 7.5, "p95");
    let fingerprints = [a["fingerprint"].clone(), l["fingerprint"].clone()];

    // The new rule keys through the rules API: a dry run summing per server (49 failures
    // of 119 calls), a stored rule read back, and a refused one.
    let per_server = json!({
        "selector": "mcpwatch_mcp_tool_calls_total{outcome!~\"ok|cancelled\"}",
        "divide_by": "mcpwatch_mcp_tool_calls_total",
        "function": "increase",
        "sum_by": ["server"],
        "min_denominator": 20.0,
        "window": "20s",
        "warning": 0.1,
    });
    let r = s.api.send("POST", "/api/v1/rules/dry-run", &per_server);
    assert_eq!(r.status, 200, "{}", r.body);
    let run = r.json();
    assert_eq!(
        (run["source"].as_str(), run["firing"].as_u64()),
        (Some("window"), Some(1)),
        "{run}"
    );
    let group = &run["series"][0];
    assert_eq!(group["labels"]["server"], "files");
    assert_eq!(group["labels"]["host"], AGENT);
    assert!(group["labels"].get("tool").is_none(), "{group}");
    close(&group["value"], 49.0 / 119.0, "per-server ratio");
    let r = s
        .api
        .send("PUT", "/api/v1/rules/per_server_errors", &per_server);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["definition"]["sum_by"], json!(["server"]));
    let bad = json!({
        "selector": "mcpwatch_mcp_tool_call_duration_seconds_bucket",
        "function": "quantile",
        "quantile": 0.9,
        "sum_by": ["le"],
        "warning": 1.0,
    });
    let r = s.api.send("PUT", "/api/v1/rules/bad_quantile", &bad);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("sum_by"), "{}", r.body);

    // Healthy traffic from now on: 10 fast calls a second. Once the burst is out of the
    // 20 s window (plus grace), both resolve.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut ok, mut fast) = (70.0, slow);
    loop {
        ok += 10.0;
        fast = add(fast, [10.0; 14]);
        let t = wall_ms();
        let mut batch = vec![
            (calls("files", "read", "ok"), t, ok),
            (calls("files", "read", "tool_error"), t, 30.0),
            (calls("files", "flaky", "tool_error"), t, 19.0),
        ];
        batch.extend(histogram("files", "read", t, fast));
        s.push(&batch);
        if active(&s, "mcp_tool_error_ratio_high").is_empty()
            && active(&s, "mcp_tool_latency_high").is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not resolved within 60 s: {:?}",
            active(&s, "mcp_tool_error_ratio_high")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for fp in fingerprints {
        let (status, body) = s.get(&format!("/api/v1/alerts/{}", fp.as_str().expect("fp")));
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("resolved")),
            "{body}"
        );
    }
    // The 19 failing calls of `flaky` never fired.
    let (status, history) = s.get("/api/v1/alerts/history?rule=mcp_tool_error_ratio_high");
    assert_eq!(status, 200, "{history}");
    assert!(history.to_string().contains("\"read\""), "{history}");
    assert!(!history.to_string().contains("flaky"), "{history}");
}
