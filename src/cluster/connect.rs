//! How the gateway reaches Redis: the URL (`redis://`, `redis+unix://`, or
//! `rediss://` for TLS through rustls), the CA file that TLS trusts instead
//! of the system's roots, and the ACL user name and password read from
//! environment variables named in the config (so the config file holds no
//! secret).
//!
//! TLS checks the server's certificate against the URL's host, which is
//! also the name sent as SNI (an IP address host is checked against the
//! certificate's IP addresses, and no SNI is sent). A `#insecure` URL
//! (no certificate check) is refused.
//!
//! Every error names the config field, and none carries the password: the
//! URL's is blanked, the environment's is never formatted.

use super::settings::ClusterSettings;
use redis::IntoConnectionInfo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Largest CA file read (a bundle of a few hundred certificates).
const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// The Redis client these settings describe. Reads the CA file and the
/// credential variables; connects to nothing.
pub fn client(s: &ClusterSettings) -> Result<redis::Client, String> {
    let url = s.redis_url.as_str();
    let tls = url.starts_with("rediss://");
    if !tls && !url.starts_with("redis://") && !url.starts_with("redis+unix://") {
        return Err("cluster.redis_url: scheme must be redis://, rediss:// or redis+unix://".into());
    }
    if url.contains('#') {
        return Err("cluster.redis_url: no #fragment (#insecure would skip the certificate check)".into());
    }
    let mut info = url
        .into_connection_info()
        .map_err(|e| format!("cluster.redis_url: {}", redact(&e.to_string(), url)))?;
    let mut redis = info.redis_settings().clone();
    if let Some(var) = &s.username_env {
        redis = redis.set_username(from_env("username_env", var)?);
    }
    if let Some(var) = &s.password_env {
        redis = redis.set_password(from_env("password_env", var)?);
    }
    info = info.set_redis_settings(redis);
    match (&s.tls_ca_file, tls) {
        (Some(_), false) => Err("cluster.tls_ca_file: only with a rediss:// redis_url".into()),
        (ca, true) => {
            let root_cert = ca.as_deref().map(read_ca).transpose()?;
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert,
            };
            redis::Client::build_with_tls(info, certs).map_err(|e| format!("cluster.tls_ca_file: {e}"))
        }
        (None, false) => redis::Client::open(info).map_err(|e| format!("cluster.redis_url: {e}")),
    }
}

/// The value of environment variable `var`, named by field `field`.
fn from_env(field: &str, var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("cluster.{field}: environment variable {var} is not set")),
    }
}

/// The PEM bytes of a CA file holding at least one certificate.
fn read_ca(path: &str) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cluster.tls_ca_file: {path}: {e}"))?;
    if meta.len() > MAX_CA_FILE_BYTES {
        return Err(format!(
            "cluster.tls_ca_file: {path} is larger than {MAX_CA_FILE_BYTES} bytes"
        ));
    }
    let pem = std::fs::read(path).map_err(|e| format!("cluster.tls_ca_file: {path}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cluster.tls_ca_file: {path}: not PEM certificates ({e})"))?;
    if certs.is_empty() {
        return Err(format!("cluster.tls_ca_file: {path} holds no PEM certificate"));
    }
    Ok(pem)
}

/// An error message with any password of the URL blanked out.
pub(super) fn redact(msg: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => msg.replace(p, "***"),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut ClusterSettings)) -> Result<redis::Client, String> {
        let mut s = ClusterSettings::with_url("rediss://127.0.0.1:6380/");
        f(&mut s);
        client(&s)
    }

    #[test]
    fn tls_settings_that_cannot_work_name_their_field() {
        let e = with(|s| s.tls_ca_file = Some("/nonexistent/ca.pem".into())).unwrap_err();
        assert!(e.starts_with("cluster.tls_ca_file: /nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("layers-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = with(|s| s.tls_ca_file = Some(empty.display().to_string())).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let e = with(|s| {
            s.redis_url = "redis://127.0.0.1:6379/".into();
            s.tls_ca_file = Some(empty.display().to_string());
        })
        .unwrap_err();
        assert!(e.starts_with("cluster.tls_ca_file: only with"), "{e}");
        let e = with(|s| s.redis_url = "rediss://127.0.0.1:6380/#insecure".into()).unwrap_err();
        assert!(e.starts_with("cluster.redis_url:"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        // The system's roots when no CA file is given.
        assert!(with(|_| {}).is_ok());
    }

    #[test]
    fn credentials_come_from_the_named_variables_and_never_show() {
        let e = with(|s| s.password_env = Some("LAYERS_TEST_UNSET_VARIABLE_1".into())).unwrap_err();
        assert_eq!(
            e,
            "cluster.password_env: environment variable LAYERS_TEST_UNSET_VARIABLE_1 is not set"
        );
        let e = with(|s| s.username_env = Some("LAYERS_TEST_UNSET_VARIABLE_2".into())).unwrap_err();
        assert!(e.starts_with("cluster.username_env:"), "{e}");
    }

    #[test]
    fn a_password_never_reaches_the_message() {
        assert_eq!(
            redact("bad url redis://u:s3cret@h:x", "redis://u:s3cret@h:x"),
            "bad url redis://u:***@h:x"
        );
        assert_eq!(redact("no password", "redis://h:1"), "no password");
    }
}
