//! The operator's files checked by Prometheus itself: the alert rules pass
//! `promtool check rules` and their unit tests, and every expression of the
//! Grafana dashboard and of the alert rules evaluates without error in a
//! real Prometheus that scrapes a real gateway (with the origin simulator
//! behind it) while traffic runs. The main panels must return data.
//!
//! Polling Prometheus until data appears waits on an external process; each
//! wait is bounded (`DATA_DEADLINE`) and fails with Prometheus's log.

#[path = "support/prometheus.rs"]
mod prometheus_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use prometheus_support::{prometheus_available, promtool, repo_root, PrometheusServer};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// The longest wait for Prometheus to have scraped enough to answer.
const DATA_DEADLINE: Duration = Duration::from_secs(60);
/// What `$__rate_interval` becomes: with a 1 s scrape, 15 samples.
const RATE_INTERVAL: &str = "15s";

/// Panels that must return data on an instance serving traffic.
const MAIN_PANELS: &[&str] = &[
    "Request rate",
    "Cache hit ratio",
    "Hit ratio",
    "p99 latency",
    "Latency p50 / p99",
    "5xx share",
    "Origin errors",
];

/// Panels that must return data when the gateway runs in cluster mode
/// (when `redis-server` is installed).
const CLUSTER_PANELS: &[&str] = &["Cluster sync and stream lag", "Cluster stream and leases"];

#[test]
fn alert_rules_and_the_scrape_config_pass_promtool_and_the_rule_unit_tests() {
    if !prometheus_available() {
        return;
    }
    let checked = promtool(&["check", "rules", "config/alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "config/alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // The shipped scrape config is valid and loads the rules.
    let config = promtool(&["check", "config", "config/prometheus.yml"]);
    assert!(config.contains("1 rule files found"), "{config}");
}

/// Every alert in `config/alerts.yml` has a unit test and a runbook section.
#[test]
fn every_alert_has_a_unit_test_and_a_runbook_section() {
    let rules = std::fs::read_to_string(repo_root().join("config/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(repo_root().join("config/alerts.test.yml")).unwrap();
    let runbook = std::fs::read_to_string(repo_root().join("docs/operations.md")).unwrap();
    let alerts = alert_names(&rules);
    assert!(alerts.len() >= 9, "{alerts:?}");
    for a in &alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {a}\n        exp_alerts:\n          - exp_labels"
            )),
            "no firing unit test for {a}"
        );
        assert!(
            runbook.contains(&format!("### {a}\n")),
            "no runbook section for {a}"
        );
        assert!(
            rules.contains(&format!("docs/operations.md#{}", a.to_lowercase())),
            "{a} does not link its runbook"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alert_expressions_evaluate_in_a_real_prometheus() {
    if !prometheus_available() {
        return;
    }
    // In cluster mode when redis-server is there, so the cluster panels
    // are checked for data too.
    let redis = redis_support::RedisServer::start();
    let cluster = redis.as_ref().map_or(String::new(), |r| {
        format!(
            "[cluster]\nredis_url = \"{}\"\nsecret = \"layers-test-only-cluster-secret\"\ninstance_id = \"prom-a\"\nmax_unsynced_ms = 2000\nblock_ms = 100\n",
            r.url()
        )
    });
    let h = Harness::with(demo_simulator(), &cluster).await;
    // On a fresh Redis the recovery barrier holds content routes for one
    // liveness window (docs/cluster.md) before the traffic below expects
    // 200s.
    let joined = Instant::now() + Duration::from_secs(15);
    while h.gateway().cluster_synced() == Some(false) {
        assert!(Instant::now() < joined, "the cluster node never synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let alerts = repo_root().join("config/alerts.yml");
    let prom = PrometheusServer::start(&[h.app.admin_addr], &[alerts.as_path()]);

    // Traffic for as long as the test runs: misses, hits, asset hits,
    // purges (so there are misses again), refusals.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn(run_traffic(
        support::TestClient::new(h.app.addr),
        h.admin(),
        first_container(&h.sim).0.to_string(),
        stop.clone(),
    ));

    // Prometheus has scraped the gateway several times.
    let scraped = "count_over_time(layers_gateway_build_info[1m]) >= 5";
    wait_for_data(&prom, scraped).await;

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("config/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or("");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = grafana_to_promql(target["expr"].as_str().unwrap());
            if MAIN_PANELS.contains(&title) || (redis.is_some() && CLUSTER_PANELS.contains(&title)) {
                wait_for_data(&prom, &expr).await;
            } else {
                evaluate(&prom, &expr, title);
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} dashboard expressions found");

    let rules = std::fs::read_to_string(&alerts).unwrap();
    let exprs = alert_exprs(&rules);
    assert_eq!(exprs.len(), alert_names(&rules).len());
    for (name, expr) in &exprs {
        evaluate(&prom, expr, name);
    }

    // Prometheus loaded the same rules itself and evaluated each one
    // without error.
    let deadline = Instant::now() + DATA_DEADLINE;
    loop {
        let answer = prom.get_json("/api/v1/rules");
        let rules: Vec<&Value> = answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        assert_eq!(rules.len(), exprs.len(), "{answer}");
        if rules.iter().all(|r| r["health"] == "ok") {
            break;
        }
        let bad: Vec<_> = rules.iter().filter(|r| r["health"] == "err").collect();
        assert!(bad.is_empty(), "rules failed to evaluate: {bad:?}");
        assert!(
            Instant::now() < deadline,
            "rules never all evaluated: {answer}\n{}",
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A healthy gateway under ordinary traffic raises no alert, not even
    // a pending one.
    let alerts_now = evaluate(&prom, "ALERTS", "ALERTS");
    assert_eq!(
        alerts_now["data"]["result"],
        serde_json::json!([]),
        "alerts on a healthy gateway"
    );

    stop.store(true, Ordering::Release);
    traffic.await.unwrap();
    drop(prom);
    h.stop().await;
    drop(redis);
}

/// Grafana's variables as the dashboard's "All" selection sends them.
fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$job", ".*")
        .replace("$instance", ".*")
}

/// Evaluates `expr` once: it must not error (data or not).
fn evaluate(prom: &PrometheusServer, expr: &str, what: &str) -> Value {
    let answer = prom.query(expr);
    assert_eq!(answer["status"], "success", "{what}: `{expr}` failed: {answer}");
    answer
}

/// Evaluates `expr` until it returns at least one sample; never an error.
async fn wait_for_data(prom: &PrometheusServer, expr: &str) {
    let deadline = Instant::now() + DATA_DEADLINE;
    loop {
        let answer = evaluate(prom, expr, "main panel");
        if answer["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{expr}` returned no data within {DATA_DEADLINE:?}: {answer}\nprometheus log:\n{}",
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `alert:` names of a rules file, in order.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|n| n.trim().to_owned())
        .collect()
}

/// Each alert's `expr`, inline or a `|` block.
fn alert_exprs(rules: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut out = Vec::new();
    let mut name = None;
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if let Some(n) = l.strip_prefix("- alert: ") {
            name = Some(n.trim().to_owned());
        } else if let Some(e) = l.strip_prefix("expr: ") {
            let n = name.take().expect("expr follows its alert");
            if e.trim() == "|" {
                let indent = lines[i + 1].len() - lines[i + 1].trim_start().len();
                let mut body = Vec::new();
                i += 1;
                while i < lines.len()
                    && (lines[i].trim().is_empty() || lines[i].len() - lines[i].trim_start().len() >= indent)
                {
                    body.push(lines[i].trim());
                    i += 1;
                }
                out.push((n, body.join(" ")));
                continue;
            }
            out.push((n, e.trim().to_owned()));
        }
        i += 1;
    }
    out
}

/// Partner traffic through the gateway until `stop`: container misses and
/// hits, asset hits, a purge every few rounds (so misses recur), and a few
/// refusals. Paced so it does not starve the 2-core test machine.
async fn run_traffic(client: TestClient, admin: TestClient, container: String, stop: Arc<AtomicBool>) {
    let key = admin_key();
    let path = format!("/v1/content/{container}");
    let mut round = 0u64;
    while !stop.load(Ordering::Acquire) {
        for _ in 0..4 {
            let r = client.get(&path, &key).await;
            assert_eq!(r.status, 200);
        }
        let _ = client.get(&path, "lp_test_not_a_key").await;
        let _ = client.get("/v1/whoami", &key).await;
        if round.is_multiple_of(3) {
            let r = admin
                .send(
                    http::Method::POST,
                    &format!("/admin/purge?container={container}"),
                    &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
                    bytes::Bytes::new(),
                )
                .await;
            assert_eq!(r.status, 200);
        }
        round += 1;
        // About 15 requests a second: under the demo key's pilot tier
        // (1,200 a minute), so every container read is admitted.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}
