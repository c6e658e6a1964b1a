//! The memory run of bench-gateway: an agent with stdio and HTTP fixture servers, measured
//! idle, then with client sessions (rmcp's Streamable HTTP client through the gateway) that
//! each call `echo` once a second.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_tests::docker::{fixture_image, unique_name};
use mcpwatch_tests::process::AgentProc;
use mcpwatch_tests::procfs;
use mcpwatch_tests::rig::http_server;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::{round, start_agent, stdio_server, wait_ready, Args};

/// Load before the measured window, so every session is connected and warm.
const WARMUP: Duration = Duration::from_secs(5);
/// Quiet time measured before the sessions start.
const IDLE: Duration = Duration::from_secs(15);

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// One client session on `url` calling echo every second from `offset` until `until`;
/// calls inside `[from, until)` are counted.
async fn session(url: String, offset: Duration, from: Instant, until: Instant, n: Arc<Counts>) {
    let info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("bench-gateway", "0"),
    )
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    let client = match info
        .serve(StreamableHttpClientTransport::from_uri(url))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("session failed to start: {e}");
            n.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut tick = tokio::time::interval_at(Instant::now() + offset, Duration::from_secs(1));
    let mut i = 0u64;
    loop {
        let at = tick.tick().await;
        if at >= until {
            break;
        }
        i += 1;
        let text = format!("call {i}");
        let mut args = Map::new();
        args.insert("text".into(), Value::String(text.clone()));
        let call = CallToolRequestParams::new("echo").with_arguments(args);
        let ok = client.call_tool(call).await.is_ok_and(|r| {
            serde_json::to_value(&r.content)
                .ok()
                .as_ref()
                .and_then(|v| v[0]["text"].as_str())
                == Some(text.as_str())
        });
        if at >= from {
            let counter = if ok { &n.ok } else { &n.failed };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = client.cancel().await;
}

/// Sample lines on the agent's /metrics (every series it exports, upstream too).
fn metric_lines(agent: &AgentProc) -> usize {
    agent
        .metrics()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count()
}

/// The largest resident mappings, the binary's own path shortened.
fn rss_by_mapping(pid: u32) -> Value {
    let mut out = Map::new();
    for (path, mb) in procfs::rss_by_mapping(pid).into_iter().take(6) {
        let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
        out.insert(name, json!(round(mb, 2)));
    }
    Value::Object(out)
}

/// The `[[mcp_server]]` tables, the stdio servers' names and every server's name.
fn servers(args: &Args) -> (String, Vec<String>, Vec<String>) {
    let image = fixture_image();
    let stdio: Vec<String> = (0..args.stdio_servers).map(|i| format!("s{i}")).collect();
    let http: Vec<String> = (0..args.http_servers).map(|i| format!("h{i}")).collect();
    let mut config = String::new();
    for s in &stdio {
        config.push_str(&stdio_server(s, &image));
    }
    for h in &http {
        let probe = "[mcp_server.probe]\ninterval = \"15s\"";
        config.push_str(&http_server(h, &[], probe));
    }
    let all = stdio.iter().chain(&http).cloned().collect();
    (config, stdio, all)
}

/// Runs the sessions (spread over `all`, their calls spread over each second) and returns
/// the agent's CPU ms over the measured window and its largest RSS sampled in it.
async fn active(
    args: &Args,
    gateway: SocketAddr,
    all: &[String],
    pid: u32,
    counts: &Arc<Counts>,
) -> (f64, f64) {
    let from = Instant::now() + WARMUP;
    let until = from + Duration::from_secs(args.memory_seconds);
    let mut tasks = Vec::new();
    for k in 0..args.sessions {
        let url = format!("http://{gateway}/mcp/{}", all[k % all.len()]);
        let offset = Duration::from_millis((k as u64 * 1000) / args.sessions.max(1) as u64);
        let counts = Arc::clone(counts);
        tasks.push(tokio::spawn(session(url, offset, from, until, counts)));
    }
    tokio::time::sleep_until(from).await;
    let cpu0 = procfs::cpu_ms(pid).unwrap_or(f64::NAN);
    let mut peak: f64 = 0.0;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < until {
        every.tick().await;
        peak = peak.max(procfs::mem_mb(pid, "VmRSS").unwrap_or(0.0));
    }
    let cpu = procfs::cpu_ms(pid).unwrap_or(f64::NAN) - cpu0;
    for t in tasks {
        let _ = t.await;
    }
    (cpu, peak)
}

pub fn run(args: &Args, rt: &tokio::runtime::Runtime) -> Value {
    let tmp = tempfile::tempdir().expect("tempdir");
    let id = unique_name("bench-gwm");
    let (config, stdio, all) = servers(args);
    let (_collector, mut agent, _cleanup) = start_agent(tmp.path(), &id, &config, &args.agent_env);
    wait_ready(&agent, &stdio, &all);
    let pid = agent.child.as_ref().expect("running").id();
    let mb = |field: &str| round(procfs::mem_mb(pid, field).unwrap_or(f64::NAN), 2);

    // Settled: the first probes and attaches done, then a quiet window.
    std::thread::sleep(Duration::from_secs(2));
    let idle_cpu0 = procfs::cpu_ms(pid).unwrap_or(f64::NAN);
    std::thread::sleep(IDLE);
    let idle_cpu = procfs::cpu_ms(pid).unwrap_or(f64::NAN) - idle_cpu0;
    let idle = json!({
        "rss_mb": mb("VmRSS"),
        "rss_anon_mb": mb("RssAnon"),
        "rss_file_mb": mb("RssFile"),
        "cpu_ms_per_s": round(idle_cpu / IDLE.as_secs_f64(), 2),
        "metric_lines": metric_lines(&agent),
    });

    let counts = Arc::new(Counts::default());
    let (cpu, peak_rss) = rt.block_on(active(args, agent.gateway_addr, &all, pid, &counts));
    let report = json!({
        "stdio_servers": args.stdio_servers,
        "http_servers": args.http_servers,
        "sessions": args.sessions,
        "seconds": args.memory_seconds,
        "calls": counts.ok.load(Ordering::Relaxed),
        "errors": counts.failed.load(Ordering::Relaxed),
        "agent_rss_mb": mb("VmRSS"),
        "agent_rss_anon_mb": mb("RssAnon"),
        "agent_rss_file_mb": mb("RssFile"),
        "agent_window_peak_rss_mb": round(peak_rss, 2),
        "agent_hwm_mb": mb("VmHWM"),
        "agent_cpu_ms_per_s": round(cpu / args.memory_seconds as f64, 2),
        "agent_threads": procfs::status_field(pid, "Threads"),
        "agent_metric_lines": metric_lines(&agent),
        "agent_rss_by_mapping_mb": rss_by_mapping(pid),
        "agent_idle": idle,
    });
    eprintln!("{report}");
    agent.kill9();
    report
}
