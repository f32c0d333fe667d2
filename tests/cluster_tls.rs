//! Cluster mode against a managed-style Redis (issue 15): TLS only through
//! a CA the test makes (rcgen), an ACL user whose name and password come
//! from environment variables, and the default user switched off.
//!
//! Each test starts its own `redis-server` (`--tls-port`) on free loopback
//! ports (skipped without one unless `LAYERS_REQUIRE_REDIS=1`).

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::cluster::ClusterSettings;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use redis_support::{free_port, RedisServer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use support::*;

const USER: &str = "gateway";
const PASSWORD: &str = "tls-test-password-8c1f";

/// The files of a test PKI: a CA, a server certificate for 127.0.0.1 and
/// localhost signed by it, and an unrelated CA.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(p, key))
}

fn pki() -> Pki {
    let dir = std::env::temp_dir().join(format!(
        "layers-tls-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca_pem, issuer) = ca("layers test CA");
    let (other_pem, _) = ca("some other CA");
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        cert: dir.join("redis.crt"),
        key: dir.join("redis.key"),
        dir,
    };
    std::fs::write(&pki.ca, ca_pem).unwrap();
    std::fs::write(&pki.other_ca, other_pem).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// A Redis reachable over TLS on the returned port, with only the ACL user
/// `USER` (the harness itself uses the plain port, as that user).
fn tls_redis(pki: &Pki) -> Option<(RedisServer, u16)> {
    let tls_port = free_port();
    let path = |p: &PathBuf| p.display().to_string();
    let mut args: Vec<String> = vec![
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        path(&pki.cert),
        "--tls-key-file".into(),
        path(&pki.key),
        "--tls-ca-cert-file".into(),
        path(&pki.ca),
        "--tls-auth-clients".into(),
        "no".into(),
        "--user".into(),
        "default".into(),
        "off".into(),
        "--user".into(),
        USER.into(),
        "on".into(),
        format!(">{PASSWORD}"),
    ];
    args.extend(["~*", "&*", "+@all"].map(String::from));
    let redis = RedisServer::start_with(args, Some((USER.into(), PASSWORD.into())))?;
    Some((redis, tls_port))
}

/// Settings for `rediss://` on `port`, trusting `ca`, with the credentials
/// in environment variables of names unique to this test.
fn tls_settings(port: u16, ca: &std::path::Path, id: &str, tag: &str) -> ClusterSettings {
    let (user_var, password_var) = (
        format!("LAYERS_TEST_REDIS_USER_{tag}"),
        format!("LAYERS_TEST_REDIS_PASSWORD_{tag}"),
    );
    // Each test sets its own variables, once, before any node reads them.
    std::env::set_var(&user_var, USER);
    std::env::set_var(&password_var, PASSWORD);
    ClusterSettings {
        tls_ca_file: Some(ca.display().to_string()),
        username_env: Some(user_var),
        password_env: Some(password_var),
        ..settings(&format!("rediss://127.0.0.1:{port}/"), id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_invalidations_over_tls_as_an_acl_user() {
    let pki = pki();
    let Some((_redis, tls_port)) = tls_redis(&pki) else {
        return;
    };
    let sim = demo_simulator();
    let sa = tls_settings(tls_port, &pki.ca, "a", "SHARE");
    sa.validate().unwrap();
    assert!(
        !format!("{sa:?}").contains(PASSWORD),
        "the settings hold the variable's name, not the secret"
    );
    let a = Arc::new(Instance::start(&sim, sa.clone()).await);
    let b = Arc::new(
        Instance::start(
            &sim,
            ClusterSettings {
                instance_id: Some("b".into()),
                ..sa
            },
        )
        .await,
    );
    assert!(a.node.is_synced() && b.node.is_synced(), "both joined over TLS");
    let (id, _) = first_container(&sim);
    warm(&b.gw, id).await;
    a.accept(&regenerated(id, Vec::new())).await.unwrap();
    eventually("B applies A's invalidation", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) == 1
    })
    .await;
    let r = call_get(&b.gw, &container_path(id), &admin_key()).await;
    assert_eq!(r.x_cache(), Some("MISS"));
    a.node.stop();
    b.node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_password_fails_clearly_and_never_syncs() {
    let pki = pki();
    let Some((_redis, tls_port)) = tls_redis(&pki) else {
        return;
    };
    let sim = demo_simulator();

    // A CA the server's certificate does not chain to: the config is
    // well-formed (check-config passes), connecting fails on the
    // certificate, and the instance never serves from cache.
    let wrong_ca = tls_settings(tls_port, &pki.other_ca, "w", "WRONGCA");
    wrong_ca.validate().unwrap();
    let e = wrong_ca
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    let w = Instance::start(&sim, wrong_ca).await;
    tokio::time::sleep(MAX_UNSYNCED).await;
    assert!(!w.node.is_synced());

    // The right CA, a wrong password: refused by Redis, never synced, and
    // the password is in no error.
    let mut bad = tls_settings(tls_port, &pki.ca, "p", "WRONGPASS");
    let var = "LAYERS_TEST_REDIS_PASSWORD_WRONGPASS_2";
    std::env::set_var(var, "not-the-password");
    bad.password_env = Some(var.into());
    let e = bad
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(!e.contains("not-the-password"), "{e}");
    let p = Instance::start(&sim, bad).await;
    tokio::time::sleep(MAX_UNSYNCED).await;
    assert!(!p.node.is_synced());
    w.node.stop();
    p.node.stop();
}
