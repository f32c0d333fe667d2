//! The access log as an operator sees it: lines in a file that parse, a
//! writer that falls behind costs lines (counted), never requests, sampling
//! of 2xx hits, and reopening after logrotate renamed the file.

mod support;
use support::*;

use layers_gateway::access_log::Output;
use layers_gateway::origin::SimulatorUpstream;
use layers_gateway::service::Gateway;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const FLUSH: Duration = Duration::from_secs(10);

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("access-log-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gateway(sim: &layers_gateway::demo::Simulator, access: &str, output: Output) -> Gateway {
    let cfg = test_config("http://127.0.0.1:1", &format!("[access_log]\n{access}"));
    Gateway::with_access_log(cfg, demo_keys(), Arc::new(SimulatorUpstream(sim.clone())), output).unwrap()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// A `Write` into shared memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn output(&self) -> Output {
        let c = self.clone();
        Output::Custom(Arc::new(move || Ok(Box::new(c.clone()) as Box<dyn Write + Send>)))
    }
}

#[tokio::test]
async fn every_request_leaves_one_parseable_line_in_the_file_and_no_key() {
    let dir = scratch("file");
    let path = dir.join("access.log");
    let sim = demo_simulator();
    let gw = gateway(&sim, "format = \"json\"\n", Output::File(path.clone()));
    let (id, asset) = first_container(&sim);
    let key = admin_key();
    for i in 0..50 {
        let p = if i % 2 == 0 {
            format!("/v1/content/{id}")
        } else {
            format!("/v1/content/{id}/assets/{asset}")
        };
        assert_eq!(call_get(&gw, &p, &key).await.status, 200);
    }
    call_get(&gw, &format!("/v1/content/{id}"), "lp_test_nope")
        .await
        .assert_error(401, "UNAUTHENTICATED");
    assert!(gw.state().access_log.flush(FLUSH));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&key), "the key is not logged");
    let lines = json_lines(&text);
    assert_eq!(lines.len(), 51);
    let hits = lines.iter().filter(|l| l["fields"]["cache"] == "hit").count();
    assert_eq!(hits, 49, "one miss, then hits");
    let refused = &lines[50]["fields"];
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["code"], "UNAUTHENTICATED");
    assert_eq!(refused["key_id"], "");
    for l in &lines {
        assert_eq!(l["target"], "access");
        let ts = l["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    }
    assert_eq!(gw.state().metrics.access_log_dropped.get(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A writer whose `write` blocks while the gate is closed.
#[derive(Clone, Default)]
struct Stallable {
    closed: Arc<(Mutex<bool>, Condvar)>,
    inner: Capture,
}

impl Stallable {
    fn set_closed(&self, closed: bool) {
        *self.closed.0.lock().unwrap() = closed;
        self.closed.1.notify_all();
    }
}

impl Write for Stallable {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let (lock, cv) = &*self.closed;
        let mut closed = lock.lock().unwrap();
        while *closed {
            closed = cv.wait(closed).unwrap();
        }
        drop(closed);
        self.inner.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_stalled_writer_costs_counted_lines_never_a_request() {
    let sim = demo_simulator();
    let writer = Stallable::default();
    writer.set_closed(true);
    let w = writer.clone();
    let output = Output::Custom(Arc::new(move || Ok(Box::new(w.clone()) as Box<dyn Write + Send>)));
    // Small buffers and a queue of one: the stalled writer holds one
    // buffer, the queue another, the rest must be dropped.
    let gw = gateway(
        &sim,
        "format = \"json\"\nbuffer_bytes = 4096\nqueue_buffers = 1\nflush_ms = 60000\n",
        output,
    );
    let (id, asset) = first_container(&sim);
    let key = admin_key();
    const REQUESTS: u64 = 400;
    for _ in 0..REQUESTS {
        let r = call_get(&gw, &format!("/v1/content/{id}/assets/{asset}"), &key).await;
        assert_eq!(r.status, 200);
    }
    let dropped = gw.state().metrics.access_log_dropped.get();
    assert!(dropped > REQUESTS / 2, "dropped {dropped} of {REQUESTS}");
    let scrape = String::from_utf8(gw.state().metrics.render()).unwrap();
    assert!(
        scrape.contains(&format!("layers_gateway_access_log_dropped_total {dropped}")),
        "{scrape}"
    );
    // The writer catches up: every line was either written or counted.
    writer.set_closed(false);
    assert!(gw.state().access_log.flush(FLUSH));
    let written = json_lines(&writer.inner.text()).len() as u64;
    assert_eq!(
        written + dropped,
        REQUESTS,
        "written {written}, dropped {dropped}"
    );
    assert_eq!(gw.state().access_log.written(), written);
}

#[tokio::test]
async fn sampling_keeps_one_in_n_2xx_hits_and_every_other_line() {
    let sim = demo_simulator();
    let capture = Capture::default();
    let gw = gateway(
        &sim,
        "format = \"json\"\nsample_2xx_hits = 10\n",
        capture.output(),
    );
    let (id, asset) = first_container(&sim);
    let key = admin_key();
    // One miss, then 100 hits, then 5 refusals.
    for _ in 0..101 {
        assert_eq!(
            call_get(&gw, &format!("/v1/content/{id}/assets/{asset}"), &key)
                .await
                .status,
            200
        );
    }
    for _ in 0..5 {
        call_get(&gw, &format!("/v1/content/{id}"), "lp_test_nope")
            .await
            .assert_error(401, "UNAUTHENTICATED");
    }
    assert!(gw.state().access_log.flush(FLUSH));
    let lines = json_lines(&capture.text());
    let by_cache = |c: &str| lines.iter().filter(|l| l["fields"]["cache"] == c).count();
    assert_eq!(by_cache("miss"), 1);
    assert_eq!(by_cache("hit"), 10, "the 1st, 11th, ... 91st hit");
    assert_eq!(lines.iter().filter(|l| l["fields"]["status"] == 401).count(), 5);
    assert_eq!(lines.len(), 16);
    assert_eq!(
        gw.state().metrics.access_log_dropped.get(),
        0,
        "sampled-out lines are not drops"
    );
}

#[tokio::test]
async fn reopen_after_a_rename_writes_to_a_new_file() {
    let dir = scratch("reopen");
    let path = dir.join("access.log");
    let sim = demo_simulator();
    let gw = gateway(&sim, "format = \"text\"\n", Output::File(path.clone()));
    let (id, _) = first_container(&sim);
    let key = admin_key();
    let get = |rid: &'static str| {
        let (gw, key, p) = (gw.clone(), key.clone(), format!("/v1/content/{id}"));
        async move {
            let r = call(
                &gw,
                http::Method::GET,
                &p,
                &[("x-api-key", &key), ("x-request-id", rid)],
                bytes::Bytes::new(),
            )
            .await;
            assert_eq!(r.status, 200);
        }
    };
    get("req_beforeRotation").await;
    assert!(gw.state().access_log.flush(FLUSH));
    let rotated = dir.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    // Until the reopen, lines still go to the renamed file (same inode).
    get("req_beforeReopen").await;
    assert!(gw.state().access_log.flush(FLUSH));
    gw.state().access_log.reopen();
    get("req_afterReopen").await;
    assert!(gw.state().access_log.flush(FLUSH));
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&path).expect("a new file was created");
    assert!(
        old.contains("req_beforeRotation") && old.contains("req_beforeReopen"),
        "{old}"
    );
    assert!(!old.contains("req_afterReopen"), "{old}");
    assert_eq!(new.lines().count(), 1, "{new}");
    assert!(new.contains("request_id=\"req_afterReopen\""), "{new}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client without a key cannot write to the access log at its own rate:
/// access lines of refusals without a principal follow
/// `log.refusals_per_sec` (the rest are counted in one "suppressed" line of
/// the gateway's log); served requests are all logged.
#[tokio::test(start_paused = true)]
async fn keyless_refusals_are_logged_at_the_refusal_rate() {
    let sim = demo_simulator();
    let capture = Capture::default();
    let gw = gateway(
        &sim,
        "format = \"json\"\n\n[log]\nrefusals_per_sec = 5\n",
        capture.output(),
    );
    let (id, _) = first_container(&sim);
    for i in 0..500 {
        let key = format!("lp_test_DEM0ZZZZ{i:08}_{}", "A".repeat(43));
        call_get(&gw, &format!("/v1/content/{id}"), &key)
            .await
            .assert_error(401, "UNAUTHENTICATED");
    }
    for _ in 0..20 {
        assert_eq!(
            call_get(&gw, &format!("/v1/content/{id}"), &admin_key())
                .await
                .status,
            200
        );
    }
    assert!(gw.state().access_log.flush(FLUSH));
    let lines = json_lines(&capture.text());
    let refused = lines.iter().filter(|l| l["fields"]["status"] == 401).count();
    assert_eq!(refused, 5, "the burst of log.refusals_per_sec, then nothing");
    assert_eq!(lines.iter().filter(|l| l["fields"]["status"] == 200).count(), 20);
    assert_eq!(gw.state().metrics.access_log_dropped.get(), 0);
}

/// A disk that fills up: it takes `room` more bytes, then every write fails
/// with ENOSPC until `room` is raised again (the operator freed space).
#[derive(Clone, Default)]
struct FillingDisk {
    room: Arc<Mutex<usize>>,
    inner: Capture,
}

impl Write for FillingDisk {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut room = self.room.lock().unwrap();
        if *room == 0 {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        let n = b.len().min(*room);
        *room -= n;
        self.inner.write(&b[..n])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_full_disk_that_tears_a_line_never_glues_it_to_the_next() {
    let sim = demo_simulator();
    let disk = FillingDisk::default();
    let d = disk.clone();
    let output = Output::Custom(Arc::new(move || Ok(Box::new(d.clone()) as Box<dyn Write + Send>)));
    let gw = gateway(&sim, "format = \"json\"\nflush_ms = 60000\n", output);
    let (id, asset) = first_container(&sim);
    let key = admin_key();
    let path = format!("/v1/content/{id}/assets/{asset}");
    let requests = |n: usize| {
        let (gw, path, key) = (&gw, &path, &key);
        async move {
            for _ in 0..n {
                assert_eq!(call_get(gw, path, key).await.status, 200);
            }
            assert!(gw.state().access_log.flush(FLUSH));
        }
    };
    *disk.room.lock().unwrap() = 1 << 20;
    requests(1).await;
    let line = disk.inner.text().len();
    // Room for a line and a half: the disk fills in the middle of the
    // second line of this batch.
    *disk.room.lock().unwrap() = line + line / 2;
    requests(2).await;
    // Space freed: the next lines must start on a line of their own.
    *disk.room.lock().unwrap() = 1 << 20;
    requests(2).await;
    let text = disk.inner.text();
    let whole = text
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok())
        .count();
    assert_eq!(whole, 4, "four whole lines and one torn one on its own:\n{text}");
    assert_eq!(text.lines().count(), 5, "{text}");
    let written = gw.state().access_log.written();
    let dropped = gw.state().metrics.access_log_dropped.get();
    assert_eq!(
        (written, dropped),
        (4, 1),
        "a whole line written counts as written, the torn one as dropped"
    );
}

/// An origin that never answers.
struct Silent;

impl layers_gateway::origin::Upstream for Silent {
    fn send(
        &self,
        _req: http::Request<layers_gateway::body::StreamBody>,
    ) -> layers_gateway::origin::UpstreamFuture {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_the_client_gave_up_on_is_logged_and_counted_as_499() {
    let capture = Capture::default();
    let cfg = test_config("http://127.0.0.1:1", "[access_log]\nformat = \"json\"\n");
    let gw = Gateway::with_access_log(cfg, demo_keys(), Arc::new(Silent), capture.output()).unwrap();
    let key = admin_key();
    // The client hangs up after a second: hyper drops the request's future.
    let gave_up = tokio::time::timeout(Duration::from_secs(1), call_get(&gw, "/v1/projects", &key)).await;
    assert!(gave_up.is_err(), "the origin never answers");
    assert!(gw.state().access_log.flush(FLUSH));
    let lines = json_lines(&capture.text());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["fields"]["status"], 499, "{}", lines[0]);
    assert_eq!(lines[0]["fields"]["route"], "/v1/projects", "{}", lines[0]);
    let scrape = String::from_utf8(gw.state().metrics.render()).unwrap();
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("layers_gateway_requests_total{") && l.contains("status=\"499\"")),
        "{scrape}"
    );
}

#[tokio::test]
async fn scope_refusals_of_a_valid_key_are_logged_at_the_refusal_rate() {
    let sim = demo_simulator();
    let capture = Capture::default();
    let gw = gateway(
        &sim,
        "format = \"json\"\n\n[log]\nrefusals_per_sec = 5\n",
        capture.output(),
    );
    let (id, _) = first_container(&sim);
    // A scope refusal spends no rate budget: only the log bounds it.
    for _ in 0..500 {
        call_get(&gw, &format!("/v1/content/{id}"), &no_scope_key())
            .await
            .assert_error(403, "FORBIDDEN_SCOPE");
    }
    assert!(gw.state().access_log.flush(FLUSH));
    let lines = json_lines(&capture.text());
    let refused = lines.iter().filter(|l| l["fields"]["status"] == 403).count();
    assert_eq!(refused, 5, "the burst of log.refusals_per_sec, then nothing");
    let scrape = String::from_utf8(gw.state().metrics.render()).unwrap();
    let counted: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("layers_gateway_requests_total{") && l.contains("status=\"403\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, 500.0, "metrics count every refusal");
}
