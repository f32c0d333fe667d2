//! A network partition of one instance (issue 15): instance A runs in its
//! own network namespace, reaching Redis over a veth pair; `tc netem`
//! delays, then cuts, that link. A fails closed; B, on the host's loopback,
//! keeps serving fresh data; A catches up once the link heals.
//!
//! A is in-process: its cluster node runs on a tokio runtime whose threads
//! were started in the namespace (`setns(2)`; threads inherit it), so every
//! socket A's node opens is in the namespace.
//!
//! Needs root and `ip`/`tc` (iproute2); skipped with one line otherwise,
//! unless `LAYERS_REQUIRE_NETNS=1`. Needs `redis-server` (skip policy of
//! `support/redis.rs`).

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use redis_support::RedisServer;
use std::process::Command;
use std::time::Duration;
use support::*;

/// A network namespace with a veth link to the host: host side `.1`, the
/// namespace's `.2`. Deleted on drop.
struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    host_ip: String,
}

fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn must(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// `None` (after one visible line) where the machine does not allow it.
    fn create() -> Option<Netns> {
        let pid = std::process::id();
        let n = Netns {
            name: format!("layers-test-{pid}"),
            host_if: format!("lg{pid}h"),
            ns_if: format!("lg{pid}n"),
            host_ip: format!("10.231.{}.1", pid % 250),
        };
        let root = unsafe { libc::geteuid() } == 0;
        if !root || !run(&["ip", "netns", "add", &n.name]) || !run(&["tc", "-V"]) {
            if std::env::var("LAYERS_REQUIRE_NETNS").as_deref() == Ok("1") {
                panic!("network namespaces unavailable (root, ip, tc), and LAYERS_REQUIRE_NETNS=1");
            }
            eprintln!(
                "SKIPPED: tests/cluster_netns.rs: needs root, ip netns and tc (LAYERS_REQUIRE_NETNS=1 makes this a failure)"
            );
            return None;
        }
        let ns_ip = format!("10.231.{}.2/30", pid % 250);
        must(&[
            "ip", "link", "add", &n.host_if, "type", "veth", "peer", "name", &n.ns_if,
        ]);
        must(&["ip", "link", "set", &n.ns_if, "netns", &n.name]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", n.host_ip),
            "dev",
            &n.host_if,
        ]);
        must(&["ip", "link", "set", &n.host_if, "up"]);
        n.exec(&["ip", "addr", "add", &ns_ip, "dev", &n.ns_if]);
        n.exec(&["ip", "link", "set", &n.ns_if, "up"]);
        n.exec(&["ip", "link", "set", "lo", "up"]);
        Some(n)
    }

    fn exec(&self, args: &[&str]) {
        assert!(self.try_exec(args), "{args:?} in {}", self.name);
    }

    fn try_exec(&self, args: &[&str]) -> bool {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Delays what A sends towards Redis by `ms` (`tc netem`). Kernels
    /// without `sch_netem` get a token bucket of 1 kbit/s instead: every
    /// round (about a kilobyte) then queues for seconds.
    fn delay(&self, ms: u64) {
        let dev = self.ns_if.as_str();
        let netem = [
            "tc",
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "netem",
            "delay",
            &format!("{ms}ms"),
        ];
        if !self.try_exec(&netem) {
            eprintln!(
                "tests/cluster_netns.rs: no sch_netem in this kernel; a 1 kbit/s token bucket delays instead"
            );
            self.exec(&[
                "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", "1kbit", "burst", "1600",
                "latency", "30s",
            ]);
        }
    }

    /// Drops everything A sends (`tc netem loss 100%`, or the link down).
    fn cut(&self) {
        let dev = self.ns_if.as_str();
        if !self.try_exec(&[
            "tc", "qdisc", "replace", "dev", dev, "root", "netem", "loss", "100%",
        ]) {
            self.exec(&["ip", "link", "set", dev, "down"]);
        }
    }

    fn heal(&self) {
        let dev = self.ns_if.as_str();
        self.try_exec(&["tc", "qdisc", "del", "dev", dev, "root"]);
        self.exec(&["ip", "link", "set", dev, "up"]);
    }

    /// A multi-thread runtime whose threads live in this namespace.
    fn runtime(&self) -> tokio::runtime::Handle {
        let path = format!("/var/run/netns/{}", self.name);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("netns file");
            use std::os::fd::AsRawFd;
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            tx.send(rt.handle().clone()).unwrap();
            rt.block_on(std::future::pending::<()>());
        });
        rx.recv().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        run(&["ip", "link", "del", &self.host_if]);
        run(&["ip", "netns", "del", &self.name]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_by_the_network_fails_closed_while_the_other_serves_fresh_data() {
    let Some(ns) = Netns::create() else { return };
    let Some(redis) = RedisServer::start_with(
        vec![
            "--bind".into(),
            "127.0.0.1".into(),
            ns.host_ip.clone(),
            // The namespace is not loopback; no password in a test.
            "--protected-mode".into(),
            "no".into(),
        ],
        None,
    ) else {
        return;
    };
    let sim = demo_simulator();
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    let a_url = format!("redis://{}:{}/", ns.host_ip, redis.port());
    let a = {
        let (sim, s) = (sim.clone(), settings(&a_url, "a"));
        ns.runtime()
            .spawn(async move { gated(&sim, s).await })
            .await
            .unwrap()
    };
    assert!(a.node.is_synced(), "A reached Redis from its namespace");
    let (id, _) = first_container(&sim);
    let path = container_path(id);
    warm(&a.gw, id).await;
    warm(&b.gw, id).await;

    // A's link gets slower than a command may take: A fails closed.
    ns.delay(2 * MAX_UNSYNCED.as_millis() as u64);
    eventually("A fails closed on a slow link", MAX_UNSYNCED + MARGIN, || async {
        !a.node.is_synced()
    })
    .await;
    // Then cut entirely; B regenerates the container meanwhile.
    ns.cut();
    let regen = sim.regenerate(id).unwrap();
    b.accept(&regenerated(id, regen.new_asset_ids.clone()))
        .await
        .unwrap();
    assert!(b.node.is_synced(), "B is unaffected");
    let fresh = warm(&b.gw, id).await;
    assert_eq!(
        asset_ids(&fresh),
        regen.new_asset_ids,
        "B serves fresh data from cache"
    );
    // A answers from the origin, so fresh too, and never from its cache.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!a.node.is_synced());
    let r = call_get(&a.gw, &path, &admin_key()).await;
    assert_ne!(r.x_cache(), Some("HIT"));
    assert!(
        !carries_any(&r.body, &regen.previous_urls),
        "A served the old version"
    );

    // The link heals: A applies what it missed and caches again.
    ns.heal();
    eventually("A catches up", Duration::from_secs(10), || async {
        a.node.is_synced() && a.stat(|s| s.applied.get()) >= 1
    })
    .await;
    // A read the new version from the origin while cut off, and B's
    // regenerate gave no change time: A holds it uncached for
    // `cache.undated_hold_ms` (the event may be for a later version), then
    // caches it.
    eventually("A caches again", Duration::from_secs(10), || async {
        call_get(&a.gw, &path, &admin_key()).await.x_cache() == Some("HIT")
    })
    .await;
    let v = warm(&a.gw, id).await;
    assert_eq!(asset_ids(&v), regen.new_asset_ids);
    a.node.stop();
    b.node.stop();
}
