//! bench-console: the web console's budgets (issue 13) on the real collector with Debian's
//! Chromium: Fleet's first render with 1,000 hosts (each with 30 minutes of CPU, memory and
//! disk figures and three MCP servers, seeded as 1-minute rollups the fleet summary warms
//! from), `GET /api/v1/fleet`'s time and size, the JS + CSS the first page transfers,
//! a 30-day chart at 1-minute resolution (43,200 points × 4 series) drawn by the real chart
//! code, and the collector's memory with 200 live streams open (raw HTTP/1.1 connections
//! reading `/api/v1/stream` as EventSource does; a 2-core machine cannot run 200 browser
//! tabs) while changes flow to all of them. Prints one JSON object as its last line.
//!
//! Run: `./scripts/test.sh` once (chromium, console/node_modules), then
//! `cargo build --release --workspace --bins && target/release/bench-console`

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use mcpwatch_collector::auth::password;
use mcpwatch_collector::now_ms;
use mcpwatch_collector::store::admin;
use mcpwatch_collector::store::query::{roles, users};
use mcpwatch_common::wire::SeriesKey;
use mcpwatch_tests::api::{admin_token, Api};
use mcpwatch_tests::process::CollectorProc;
use mcpwatch_tests::sse::EventStream;
use mcpwatch_tests::{metric, procfs, wait_for, Pki};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Hosts in the fleet.
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    /// Live streams held open.
    #[arg(long, default_value_t = 200)]
    streams: usize,
    /// Browser measurements per figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

const PASSWORD: &str = "bench console password";

fn main() {
    let args = Args::parse();
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let mut c = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    // Room for every stream from one address.
    c.stop();
    c.child = None;
    let text = std::fs::read_to_string(&c.config).expect("config");
    let limits = format!(
        "[http]\nmax_connections = {n}\nmax_connections_per_address = {n}\n",
        n = args.streams + 64
    );
    let mut text = text.replacen("[http]\n", &limits, 1);
    text.push_str(&format!(
        "[api]\nstream_max_clients = {n}\nstream_max_per_user = {n}\n",
        n = args.streams + 8
    ));
    std::fs::write(&c.config, text).expect("config");
    seed_hosts(&c.db, args.hosts);
    seed_figures(&c.db);
    c.restart();
    let hash = password::hash(PASSWORD).expect("hash");
    admin::with_db(&c.db, |conn| {
        let uid = users::create_user(conn, "admin", &hash, now_ms())?;
        roles::bind(conn, uid, "admin", "", now_ms())
    })
    .expect("admin user");

    let fleet = fleet_answer(&c, args.runs, args.hosts);
    let browser = run_browser(&c, args.runs);
    let streams = hold_streams(&c, args.streams, args.hosts);
    let mut result = json!({ "hosts": args.hosts });
    for part in [fleet, browser, streams] {
        if let (Value::Object(out), Value::Object(part)) = (&mut result, part) {
            out.extend(part);
        }
    }
    println!("{result}");
}

/// Hosts as the collector stores them (what Fleet lists), in three teams.
fn seed_hosts(db: &Path, n: usize) {
    let now = now_ms();
    admin::with_db(db, |conn| {
        let mut st = conn.prepare(
            "INSERT INTO hosts (agent_id, hostname, agent_version, boot_id, first_seen_ms,
                 last_seen_ms, online, revoked, labels)
             VALUES (?1, ?1, '0.1.0', 'bench', ?2, ?2, ?3, 0, ?4)",
        )?;
        for i in 0..n {
            let team = ["a", "b", "c"][i % 3];
            let labels = json!({"team": team, "env": "prod"}).to_string();
            st.execute(rusqlite::params![
                format!("host-{i:04}"),
                now,
                i % 10 != 0,
                labels
            ])?;
        }
        Ok(())
    })
    .expect("seed hosts");
}

/// Per host, 30 one-minute rollups of CPU, memory and disk, and three MCP servers (one
/// unhealthy on every seventh host), as the collector stores them.
fn seed_figures(db: &Path) {
    let now = now_ms();
    let minute = now - now.rem_euclid(60_000);
    admin::with_db(db, |conn| {
        // with_db runs this in one transaction.
        let hosts: Vec<i64> = conn
            .prepare("SELECT id FROM hosts ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut series = conn.prepare(
            "INSERT INTO series (host_id, name, labels) VALUES (?1, ?2, ?3) RETURNING id",
        )?;
        let mut rollup = conn.prepare(
            "INSERT INTO rollup_1m (series_id, ts, min, max, sum, count) VALUES (?1, ?2, ?3, ?3, ?4, 60)",
        )?;
        for (n, host) in hosts.iter().enumerate() {
            let mut figures: Vec<(SeriesKey, f64)> = vec![
                (SeriesKey::new("mcpwatch_host_cpu_usage_ratio", &[("cpu", "total")]), 0.2 + (n % 7) as f64 * 0.1),
                (SeriesKey::new("mcpwatch_host_memory_total_bytes", &[]), 8e9),
                (SeriesKey::new("mcpwatch_host_memory_used_bytes", &[]), 3e9),
                (SeriesKey::new("mcpwatch_host_disk_total_bytes", &[("mountpoint", "/")]), 1e11),
                (SeriesKey::new("mcpwatch_host_disk_used_bytes", &[("mountpoint", "/")]), 6e10),
            ];
            for server in ["files", "search", "tickets"] {
                let healthy = if server == "search" && n % 7 == 0 { 0.0 } else { 1.0 };
                figures.push((SeriesKey::new("mcpwatch_server_state", &[("server", server), ("state", "running")]), 1.0));
                figures.push((SeriesKey::new("mcpwatch_server_healthy", &[("server", server)]), healthy));
                figures.push((SeriesKey::new("mcpwatch_server_tool_drift", &[("server", server)]), 0.0));
            }
            for (key, v) in figures {
                let id: i64 = series.query_row(rusqlite::params![host, key.name, key.labels_text()], |r| r.get(0))?;
                for back in 0..30 {
                    let wobble = v * (1.0 + (back % 5) as f64 * 0.02);
                    rollup.execute(rusqlite::params![id, minute - back * 60_000, wobble, wobble * 60.0])?;
                }
            }
        }
        Ok(())
    })
    .expect("seed figures");
}

/// `GET /api/v1/fleet` as the admin: median time over `runs` and the body's size.
fn fleet_answer(c: &CollectorProc, runs: usize, hosts: usize) -> Value {
    let token = admin_token(&c.db, "bench-fleet", None);
    let api = Api::new(c.http, Some(&token));
    wait_for("the fleet summary warmed", Duration::from_secs(60), || {
        let f = api.get("/api/v1/fleet").json();
        (f["complete"] == true && f["hosts"][0]["servers"]["total"] == 3).then_some(())
    });
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..runs {
        let started = std::time::Instant::now();
        let r = api.get("/api/v1/fleet");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["hosts"].as_array().map(Vec::len), Some(hosts));
        bytes = r.body.len();
    }
    times.sort_by(f64::total_cmp);
    json!({
        "fleet_api_ms_median": (times[times.len() / 2] * 10.0).round() / 10.0,
        "fleet_api_body_bytes": bytes,
    })
}

fn run_browser(c: &CollectorProc, runs: usize) -> Value {
    let console = Path::new(env!("CARGO_MANIFEST_DIR")).join("../console");
    let mut node = Command::new("node")
        .arg("e2e/bench.mjs")
        .current_dir(&console)
        .env("CONSOLE_URL", format!("http://{}/", c.http))
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("RUNS", runs.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (run scripts/test.sh once for console/node_modules)");
    let out = BufReader::new(node.stdout.take().expect("stdout"));
    let mut result = Value::Null;
    for line in out.lines().map_while(Result::ok) {
        if let Some(json) = line.strip_prefix("@result ") {
            result = serde_json::from_str(json).expect("bench result");
        } else {
            eprintln!("{line}");
        }
    }
    assert!(node.wait().expect("node").success(), "browser bench failed");
    result
}

/// Opens `n` live streams, then relabels hosts so changes reach every stream, and reports
/// the collector's RSS before, with the streams idle, and after the changes flowed.
fn hold_streams(c: &CollectorProc, n: usize, hosts: usize) -> Value {
    let pid = c.child.as_ref().expect("running").id();
    let token = admin_token(&c.db, "bench", None);
    let api = Api::new(c.http, Some(&token));
    let rss = || procfs::mem_mb(pid, "VmRSS").expect("VmRSS");
    let before = rss();
    let auth = format!("Bearer {token}");
    let mut streams: Vec<EventStream> = (0..n)
        .map(|_| {
            let s = EventStream::open(c.http, "/api/v1/stream", &[("Authorization", &auth)])
                .expect("open stream");
            assert_eq!(s.status, 200, "{}", s.head);
            s
        })
        .collect();
    wait_for("every stream counted", Duration::from_secs(30), || {
        metric(&c.metrics(), "mcpwatch_collector_stream_clients")
            .filter(|open| *open >= n as f64)
            .map(|_| ())
    });
    let idle = rss();
    let changes = 50.min(hosts);
    for i in 0..changes {
        let r = api.send(
            "PUT",
            &format!("/api/v1/hosts/host-{i:04}/labels"),
            &json!({"labels": {"team": "z", "env": "bench"}}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Every stream sees every change (the admin sees all hosts).
    for s in &mut streams {
        let mut seen = 0;
        while seen < changes {
            let e = s
                .find(Duration::from_secs(30), |e| e.event == "host")
                .expect("host change on every stream");
            assert!(e.data.contains("host-"), "{e:?}");
            seen += 1;
        }
    }
    let after = rss();
    json!({
        "streams": n,
        "stream_changes_delivered": n * changes,
        "collector_rss_mb_before_streams": before,
        "collector_rss_mb_streams_idle": idle,
        "collector_rss_mb_after_changes": after,
        "collector_rss_mb_extra": after.max(idle) - before,
    })
}
