//! Remote write end to end, with the real binaries and real receivers on loopback: Debian's
//! Prometheus 2.42 (`--web.enable-remote-write-receiver`) and VictoriaMetrics. Every sample
//! the collector committed after an endpoint started is read back from the receiver and
//! compared exactly with the collector's own history: through `write_relabel` and host
//! labels, a refused batch, a two-minute outage, and ten collector crashes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use mcpwatch_collector::store::query::remote_write::SeriesMeta;
use mcpwatch_collector::store::{Store, StoreConfig};
use mcpwatch_tests::api::{admin_token, Api};
use mcpwatch_tests::process::{AgentProc, CollectorProc};
use mcpwatch_tests::tsdb::{Dump, Proxy, Tsdb};
use mcpwatch_tests::{metric, wait_for, Pki};
use serde_json::json;

const LONG: Duration = Duration::from_secs(90);

fn queue() -> &'static str {
    "[remote_write.queue]\nbatch_send_deadline = \"200ms\"\nmax_samples_per_send = 500\nmin_backoff = \"50ms\"\nmax_backoff = \"1s\"\n"
}

fn endpoint(name: &str, url: &str, extra: &str) -> String {
    format!(
        "\n[[remote_write]]\nname = \"{name}\"\nurl = \"{url}\"\n{}{extra}",
        queue()
    )
}

fn agent(pki: &Pki, dir: &Path, name: &str, collector: &CollectorProc) -> AgentProc {
    AgentProc::start(
        pki,
        &dir.join(name),
        name,
        collector.ingest,
        "200ms",
        "64MiB",
    )
}

fn query_i64(db: &Path, sql: &str, p: &str) -> Option<i64> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()?;
    c.query_row(sql, [p], |r| r.get(0)).ok()
}

fn cursor(db: &Path, endpoint: &str) -> Option<i64> {
    query_i64(
        db,
        "SELECT raw_id FROM remote_write_cursors WHERE endpoint = ?1",
        endpoint,
    )
}

fn newest_raw(db: &Path) -> i64 {
    query_i64(
        db,
        "SELECT COALESCE(MAX(id), 0) FROM raw WHERE ?1 = ?1",
        "x",
    )
    .unwrap_or(0)
}

/// Waits until `endpoint` has delivered every committed batch.
fn wait_delivered(db: &Path, endpoint: &str) {
    wait_for("remote write caught up", LONG, || {
        (cursor(db, endpoint)? >= newest_raw(db)).then_some(())
    });
}

/// The labels a series should carry at the receiver (the collector's own rule, restated).
fn expected_labels(m: &SeriesMeta) -> BTreeMap<String, String> {
    let host: BTreeMap<String, String> = serde_json::from_str(&m.host_labels).unwrap();
    let mut out = BTreeMap::new();
    for (k, v) in mcpwatch_common::wire::SeriesKey::parse_labels_text(&m.labels).unwrap() {
        let k = if k == "host" || host.contains_key(&k) {
            format!("exported_{k}")
        } else {
            k
        };
        out.insert(k, v);
    }
    out.extend(host);
    out.insert("host".into(), m.agent_id.clone());
    out.insert("__name__".into(), m.name.clone());
    out.retain(|_, v| !v.is_empty());
    out
}

/// Everything committed after raw row `after`, as the receiver should hold it, read from
/// the (stopped) collector's database; `keep` filters series by labels.
fn expected(db: &Path, after: i64, keep: impl Fn(&BTreeMap<String, String>) -> bool) -> Dump {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (store, writer) = Store::open(StoreConfig::new(db)).unwrap();
    let dump = rt.block_on(async {
        let mut from = after;
        let mut samples: Vec<(i64, i64, f64)> = Vec::new();
        loop {
            let read = store.batches_after(from, i64::MAX, 100_000).await.unwrap();
            let Some(last) = read.batches.last().map(|b| b.id) else {
                break;
            };
            assert!(read.unreadable.is_empty());
            for b in read.batches {
                samples.extend(b.samples);
            }
            from = last;
        }
        let mut ids: Vec<i64> = samples.iter().map(|s| s.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let metas: HashMap<i64, BTreeMap<String, String>> = store
            .series_meta(ids)
            .await
            .unwrap()
            .iter()
            .map(|m| (m.id, expected_labels(m)))
            .collect();
        let mut dump = Dump::new();
        for (id, ts, v) in samples {
            let labels = &metas[&id];
            if keep(labels) {
                dump.entry(labels.clone()).or_default().push((ts, v));
            }
        }
        for s in dump.values_mut() {
            s.sort_by_key(|x| x.0);
        }
        dump
    });
    drop(store);
    writer.join().unwrap();
    dump
}

/// Relative precision VictoriaMetrics keeps: it stores values as decimals of at most 12
/// significant digits (its documented design), so 0.47368421052631576 reads back as
/// 0.473684210526. Prometheus keeps the float64 bits: compared exactly.
const VM_PRECISION: f64 = 1e-11;

fn same_value(a: f64, b: f64, rel: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= rel * a.abs().max(b.abs())
}

/// The differences between two dumps: timestamps exactly, values within `rel` (0: exactly;
/// NaN equals NaN).
fn problems(got: &Dump, want: &Dump, rel: f64) -> Vec<String> {
    let mut problems = Vec::new();
    for (labels, w) in want {
        match got.get(labels) {
            None => problems.push(format!("missing series {labels:?} ({} samples)", w.len())),
            Some(g) => {
                let differs =
                    |(a, b): &(&(i64, f64), &(i64, f64))| a.0 != b.0 || !same_value(a.1, b.1, rel);
                let first = g.iter().zip(w).find(differs);
                if g.len() != w.len() || first.is_some() {
                    problems.push(format!(
                        "{labels:?}: {} samples, want {}; first difference {first:?}",
                        g.len(),
                        w.len()
                    ));
                }
            }
        }
    }
    for labels in got.keys().filter(|l| !want.contains_key(*l)) {
        problems.push(format!("unexpected series {labels:?}"));
    }
    problems
}

/// Asserts two dumps are the same; the first differences in the message.
fn assert_same(what: &str, got: &Dump, want: &Dump, rel: f64) {
    let problems = problems(got, want, rel);
    let total: usize = want.values().map(Vec::len).sum();
    assert!(
        problems.is_empty(),
        "{what}: {} problems over {} series / {total} samples:\n{}",
        problems.len(),
        want.len(),
        problems
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("{what}: {} series, {total} samples, identical", want.len());
}

/// Polls the receiver until it holds as many samples per series as `want` (it may make
/// fresh data searchable a moment after accepting it), or 30 s pass; what it holds then.
fn settle(tsdb: &Tsdb, regex: &str, want: &Dump) -> Dump {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = tsdb.dump(regex);
        let complete = got.len() == want.len()
            && want
                .iter()
                .all(|(l, w)| got.get(l).is_some_and(|g| g.len() == w.len()));
        if complete || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until the receiver holds exactly `want`.
fn wait_same(what: &str, tsdb: &Tsdb, regex: &str, want: &Dump, rel: f64) {
    assert_same(what, &settle(tsdb, regex, want), want, rel);
}

/// For a failed comparison: one differing series' timestamps on each side only, how often
/// the proxy passed each, and the stored raw rows around them.
fn explain(got: &Dump, want: &Dump, proxy: &Proxy, db: &Path) -> String {
    let Some((labels, w)) = want.iter().find(|(l, w)| {
        got.get(*l)
            .map(|g| g.iter().map(|s| s.0).ne(w.iter().map(|s| s.0)))
            != Some(false)
    }) else {
        return String::new();
    };
    let g = got.get(labels).cloned().unwrap_or_default();
    let got_ts: HashSet<i64> = g.iter().map(|s| s.0).collect();
    let want_ts: HashSet<i64> = w.iter().map(|s| s.0).collect();
    let mut only_got: Vec<i64> = got_ts.difference(&want_ts).copied().collect();
    let mut only_want: Vec<i64> = want_ts.difference(&got_ts).copied().collect();
    only_got.sort_unstable();
    only_want.sort_unstable();
    let mut sent: BTreeMap<i64, usize> = BTreeMap::new();
    for (l, samples) in proxy.accepted().into_iter().flatten() {
        if &l == labels {
            for (ts, _) in samples {
                *sent.entry(ts).or_default() += 1;
            }
        }
    }
    let passed = |ts: &[i64]| {
        ts.iter()
            .map(|t| format!("{t}x{}", sent.get(t).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let rows =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| {
                let mut st = c.prepare(
                    "SELECT id, host_id, seq, ts_min, ts_max, n, committed_ms FROM raw ORDER BY id",
                )?;
                let rows = st
                    .query_map([], |r| {
                        Ok(format!(
                            "{}:h{}:s{}:{}..{}:n{}:c{}",
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, i64>(5)?,
                            r.get::<_, i64>(6)?
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows.join(" "))
            })
            .unwrap_or_else(|e| format!("raw rows unreadable: {e}"));
    format!(
        "\n{labels:?}: only at the receiver [{}]; only in the database [{}]; \
         proxy passed {} distinct timestamps; raw rows {rows}",
        passed(&only_got),
        passed(&only_want),
        sent.len()
    )
}

fn collector_metric(c: &CollectorProc, name: &str) -> f64 {
    metric(&c.metrics(), name).unwrap_or(0.0)
}

#[test]
fn remote_write_delivers_every_sample_to_prometheus_and_victoriametrics() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let prom = Tsdb::prometheus(&tmp.path().join("prometheus"));
    let vm = Tsdb::victoria(&tmp.path().join("vm"));
    let mut collector = CollectorProc::start(&pki, &tmp.path().join("c"), "");
    let admin = Api::new(
        collector.http,
        Some(&admin_token(&collector.db, "rw", None)),
    );
    let mut agents = vec![
        agent(&pki, tmp.path(), "node-1", &collector),
        agent(&pki, tmp.path(), "node-2", &collector),
    ];
    for a in &agents {
        a.wait_acked_more(2.0);
    }
    // Operator labels on one host travel with its series.
    let r = admin.send(
        "PUT",
        "/api/v1/hosts/node-1/labels",
        &json!({"labels": {"team": "a", "env": "prod"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Both endpoints from the next start: Prometheus without the agents' own series.
    collector.stop();
    collector.child = None;
    let mut text = std::fs::read_to_string(&collector.config).unwrap();
    text.push_str(&endpoint(
        "prom",
        &prom.write_url(),
        "[[remote_write.write_relabel]]\naction = \"drop\"\nregex = \"mcpwatch_agent_.*\"\n",
    ));
    text.push_str(&endpoint("vm", &vm.write_url(), ""));
    std::fs::write(&collector.config, text).unwrap();
    collector.restart();
    let start = |name: &str| wait_for("cursor created", LONG, || cursor(&collector.db, name));
    let (prom_from, vm_from) = (start("prom"), start("vm"));
    for a in &agents {
        a.wait_acked_more(10.0);
    }
    for a in &mut agents {
        assert!(a.stop().success());
    }
    wait_delivered(&collector.db, "prom");
    wait_delivered(&collector.db, "vm");
    let sent_prom = metric(
        &collector.metrics(),
        "mcpwatch_collector_remote_write_samples_sent_total{endpoint=\"prom\"}",
    )
    .unwrap_or(0.0);
    assert!(sent_prom > 0.0);
    let lag = metric(
        &collector.metrics(),
        "mcpwatch_collector_remote_write_lag_seconds{endpoint=\"vm\"}",
    );
    assert_eq!(lag, Some(0.0));
    collector.stop();
    collector.child = None;

    let not_agent = |l: &BTreeMap<String, String>| !l["__name__"].starts_with("mcpwatch_agent_");
    let want_prom = expected(&collector.db, prom_from, not_agent);
    let want_vm = expected(&collector.db, vm_from, |_| true);
    assert!(
        want_vm.len() > want_prom.len(),
        "relabel left the agent series out"
    );
    assert!(
        want_vm
            .keys()
            .any(|l| l.get("team").map(String::as_str) == Some("a") && l["host"] == "node-1"),
        "host labels carried"
    );
    wait_same("prometheus", &prom, ".+", &want_prom, 0.0);
    wait_same("victoriametrics", &vm, ".+", &want_vm, VM_PRECISION);
}

/// One agent streaming into a collector whose endpoint `vm` goes through a recording
/// proxy to VictoriaMetrics; `from` is the endpoint's first cursor.
struct Proxied {
    // Fields drop in order: processes before the directory they live in.
    a: AgentProc,
    collector: CollectorProc,
    proxy: Proxy,
    vm: Tsdb,
    from: i64,
    tmp: tempfile::TempDir,
}

fn proxied() -> Proxied {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let vm = Tsdb::victoria(&tmp.path().join("vm"));
    let proxy = Proxy::start(vm.addr);
    let collector = CollectorProc::start(
        &pki,
        &tmp.path().join("c"),
        &endpoint("vm", &proxy.write_url(), ""),
    );
    let from = wait_for("cursor created", LONG, || cursor(&collector.db, "vm"));
    let a = agent(&pki, tmp.path(), "node-1", &collector);
    Proxied {
        a,
        collector,
        proxy,
        vm,
        from,
        tmp,
    }
}

#[test]
fn remote_write_drops_a_refused_batch_and_rides_out_a_two_minute_outage() {
    let Proxied {
        mut a,
        mut collector,
        proxy,
        mut vm,
        from,
        tmp: _tmp,
        ..
    } = proxied();

    // One batch refused for good (400): dropped with the reason, the next ones flow.
    proxy.refuse_nth(3);
    wait_for("a refused request", LONG, || {
        (!proxy.refused().is_empty()).then_some(())
    });
    let accepted = proxy.accepted().len();
    wait_for("later requests accepted", LONG, || {
        (proxy.accepted().len() > accepted + 2).then_some(())
    });
    let dropped = collector_metric(
        &collector,
        "mcpwatch_collector_remote_write_samples_dropped_total{endpoint=\"vm\",reason=\"http_400\"}",
    );

    // A 429 with Retry-After as an HTTP-date three seconds ahead: the next request waits
    // for it, though the backoff alone (50 ms) would be far shorter; nothing is dropped.
    let throttled_at = proxy.log().len();
    let at = std::time::SystemTime::now() + Duration::from_secs(3);
    proxy.throttle_nth(1, &httpdate::fmt_http_date(at));
    let next = wait_for("a request after the 429", LONG, || {
        let log = proxy.log();
        let i = log[throttled_at..].iter().position(|(_, s)| *s == 429)?;
        log.get(throttled_at + i + 1).map(|(t, _)| *t)
    });
    // HTTP-dates have whole seconds: the date was rounded down by at most one.
    assert!(
        next + Duration::from_secs(1) >= at,
        "the request after a 429 came {:?} before its Retry-After",
        at.duration_since(next).unwrap_or_default()
    );
    let refused: usize = proxy.refused().iter().flatten().map(|s| s.1.len()).sum();
    assert_eq!(
        dropped as usize, refused,
        "dropped samples counted with the reason"
    );

    // The receiver is down for two minutes: the lag grows, nothing is lost.
    vm.stop();
    let lag = |c: &CollectorProc| {
        collector_metric(
            c,
            "mcpwatch_collector_remote_write_lag_seconds{endpoint=\"vm\"}",
        )
    };
    wait_for("two minutes of outage", Duration::from_secs(200), || {
        (lag(&collector) >= 120.0).then_some(())
    });
    let retried = collector_metric(
        &collector,
        "mcpwatch_collector_remote_write_samples_retried_total{endpoint=\"vm\"}",
    );
    assert!(retried > 0.0);
    vm.restart();
    wait_for("lag back to zero", LONG, || {
        (lag(&collector) == 0.0).then_some(())
    });
    assert!(a.stop().success());
    wait_delivered(&collector.db, "vm");
    collector.stop();
    collector.child = None;

    let refused_keys: HashSet<(BTreeMap<String, String>, i64)> = proxy
        .refused()
        .into_iter()
        .flatten()
        .flat_map(|(l, s)| s.into_iter().map(move |(ts, _)| (l.clone(), ts)))
        .collect();
    let mut want = expected(&collector.db, from, |_| true);
    for (labels, samples) in want.iter_mut() {
        samples.retain(|(ts, _)| !refused_keys.contains(&(labels.clone(), *ts)));
    }
    want.retain(|_, s| !s.is_empty());
    wait_same(
        "victoriametrics after outage",
        &vm,
        ".+",
        &want,
        VM_PRECISION,
    );
}

#[test]
fn remote_write_collector_kill9_ten_times_loses_nothing_and_resends_at_most_a_batch_each() {
    // VictoriaMetrics through a recording proxy, and Prometheus through another: Prometheus
    // refuses a whole request holding one sample it already has a newer one of, so a resend
    // mixing old and new rows would lose the new ones there.
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let vm = Tsdb::victoria(&tmp.path().join("vm"));
    let prom = Tsdb::prometheus(&tmp.path().join("prometheus"));
    let proxy = Proxy::start(vm.addr);
    let prom_proxy = Proxy::start(prom.addr);
    let mut collector = CollectorProc::start(
        &pki,
        &tmp.path().join("c"),
        &format!(
            "{}{}",
            endpoint("vm", &proxy.write_url(), ""),
            endpoint("prom", &prom_proxy.write_url(), "")
        ),
    );
    let from = wait_for("cursor created", LONG, || cursor(&collector.db, "vm"));
    let prom_from = wait_for("cursor created", LONG, || cursor(&collector.db, "prom"));
    let mut a = agent(&pki, tmp.path(), "node-1", &collector);
    // Slow receivers: a request is nearly always in flight when the collector is killed,
    // and the proxies deliver it anyway, so the restarted collector resends what the
    // receivers already hold.
    proxy.set_delay(Duration::from_millis(300));
    prom_proxy.set_delay(Duration::from_millis(300));
    // Requests accepted before each kill: what came after a kill and repeats an earlier
    // sample is that kill's resend.
    let mut kills = Vec::new();
    for _ in 0..10 {
        let seen = proxy.accepted().len();
        wait_for("requests flowing", LONG, || {
            (proxy.accepted().len() >= seen + 2).then_some(())
        });
        // Killed with a request held by each slow receiver.
        wait_for("requests in flight", LONG, || {
            (proxy.in_flight() > 0 && prom_proxy.in_flight() > 0).then_some(())
        });
        collector.kill9();
        kills.push(proxy.accepted().len());
        collector.restart();
    }
    assert!(a.stop().success());
    wait_delivered(&collector.db, "vm");
    wait_delivered(&collector.db, "prom");
    collector.stop();
    collector.child = None;

    let want = expected(&collector.db, from, |_| true);
    // Said on failure: whether the receiver holds rows at or below the start cursor.
    let first_raw = query_i64(&collector.db, "SELECT MIN(id) FROM raw WHERE ?1 = ?1", "x");
    let what = format!(
        "victoriametrics after 10 crashes (start cursor {from}, raw ids {first_raw:?}..={})",
        newest_raw(&collector.db)
    );
    let got = settle(&vm, ".+", &want);
    let why = explain(&got, &want, &proxy, &collector.db);
    assert_same(&format!("{what}{why}"), &got, &want, VM_PRECISION);
    let want_prom = expected(&collector.db, prom_from, |_| true);
    let got_prom = settle(&prom, ".+", &want_prom);
    let why = explain(&got_prom, &want_prom, &prom_proxy, &collector.db);
    assert_same(
        &format!("prometheus after 10 crashes{why}"),
        &got_prom,
        &want_prom,
        0.0,
    );

    // Per kill, samples resent: at most the batch in flight (500 samples).
    let accepted = proxy.accepted();
    let mut seen: HashSet<(BTreeMap<String, String>, i64)> = HashSet::new();
    let mut resent_per_kill = Vec::new();
    let mut bounds = kills.clone();
    bounds.push(accepted.len());
    let mut at = 0;
    for (i, end) in bounds.iter().enumerate() {
        let mut resent = 0usize;
        for (labels, samples) in accepted[at..*end].iter().flatten() {
            for (ts, _) in samples {
                if !seen.insert((labels.clone(), *ts)) {
                    resent += 1;
                }
            }
        }
        if i > 0 {
            resent_per_kill.push(resent);
        }
        at = *end;
    }
    println!("samples resent after each of 10 kills: {resent_per_kill:?}");
    assert!(
        resent_per_kill.iter().all(|r| *r <= 500),
        "at most one batch (500 samples) resent per kill: {resent_per_kill:?}"
    );
    assert!(
        resent_per_kill.iter().any(|r| *r > 0),
        "no kill caught a request in flight: the resend path went untested"
    );
}
