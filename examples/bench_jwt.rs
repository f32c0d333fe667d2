//! Load-benchmark helper (part of `benches/load/`, not the product): makes
//! the JWT callers of the deployed rows. Generates a P-256 key, writes its
//! public JWKS, and prints one ES256 and one HS256 token for the demo
//! organization `org_demo_a` (tier `pilot`, scope `content:read`), valid
//! for a day.
//!
//! ```text
//! bench_jwt --jwks-out DIR/jwks.json --secret HS256_SECRET
//! es256 eyJ...
//! hs256 eyJ...
//! ```

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

/// The issuers the harness configures (benches/load/deployed.sh).
const ES256_ISSUER: &str = "https://idp.bench.invalid";
const HS256_ISSUER: &str = "bench-batch";

fn usage() -> ! {
    eprintln!("usage: bench_jwt --jwks-out FILE --secret SECRET");
    std::process::exit(64);
}

fn b64(b: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn token(alg: &str, kid: Option<&str>, iss: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(k) = kid {
        header["kid"] = json!(k);
    }
    let claims = json!({"iss": iss, "aud": "layers-gateway", "sub": "bench-user", "org_id": "org_demo_a",
        "scope": "content:read", "tier": "pilot", "iat": now, "exp": now + 86_400});
    let msg = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let sig = sign(msg.as_bytes());
    format!("{msg}.{}", b64(sig))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut jwks_out, mut secret) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--jwks-out" => jwks_out = args.next(),
            "--secret" => secret = args.next(),
            _ => usage(),
        }
    }
    let (Some(jwks_out), Some(secret)) = (jwks_out, secret) else {
        usage()
    };
    let rng = SystemRandom::new();
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let p = ec.public_key().as_ref();
    let set = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "bench-ec", "use": "sig", "alg": "ES256",
        "x": b64(&p[1..33]), "y": b64(&p[33..65])}]});
    std::fs::write(&jwks_out, set.to_string()).unwrap_or_else(|e| {
        eprintln!("bench_jwt: cannot write {jwks_out}: {e}");
        std::process::exit(1);
    });
    let es = token("ES256", Some("bench-ec"), ES256_ISSUER, |m| {
        ec.sign(&rng, m).unwrap().as_ref().to_vec()
    });
    let hs = token("HS256", None, HS256_ISSUER, |m| {
        let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        aws_lc_rs::hmac::sign(&k, m).as_ref().to_vec()
    });
    println!("es256 {es}");
    println!("hs256 {hs}");
}
