//! The commands `demo` prints: shell variables, then curl commands, each
//! with the answer it gets after the ones before it (`# 200, x-cache: MISS`).
//!
//! The README's demo section shows these lines verbatim (for the default
//! addresses), and `tests/readme_demo.rs` checks both ways: every curl
//! line the README shows is printed here, in the same order, and each one
//! gets the answer its comment names.

use std::net::SocketAddr;

/// Every printed request: `-i` shows the status and headers, `-w '\n'`
/// ends the output with a newline so the next command's output starts on
/// a line of its own (the bodies themselves are byte-identical to the
/// origin's and end without one).
pub const CURL: &str = "curl -i -w '\\n'";

/// What the printed commands refer to.
pub struct Inputs<'a> {
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    /// The origin simulator, `host:port`.
    pub origin: &'a str,
    /// The `admin` demo key (every scope), `reader` (content:read) and
    /// `partner_b` (another organization).
    pub admin_key: &'a str,
    pub reader_key: &'a str,
    pub partner_b_key: &'a str,
    pub container: &'a str,
    /// The container's first asset id.
    pub asset: &'a str,
    /// This run's admin token (its hash is the config's `admin.token_sha256`).
    pub admin_token: &'a str,
}

/// The lines to print, in order: blank lines and `# ...` headings between
/// steps, `X=value` variables, `curl ...   # answer` commands.
pub fn lines(i: &Inputs<'_>) -> Vec<String> {
    let (gw, adm, origin) = (
        format!("http://{}", i.gateway),
        format!("http://{}", i.admin),
        i.origin,
    );
    let get = |key: &str, path: &str, answer: &str| {
        format!("{CURL} -H \"X-Api-Key: ${key}\" {gw}{path}   # {answer}")
    };
    let container = "/v1/content/$C";
    let asset = "/v1/content/$C/assets/$A";
    vec![
        format!("K={}   # admin key: org_demo_a, every scope", i.admin_key),
        format!("R={}   # reader key: org_demo_a, content:read only", i.reader_key),
        format!("B={}   # partner_b key: org_demo_b", i.partner_b_key),
        format!("C={}", i.container),
        format!("A={}", i.asset),
        format!("T={}   # admin token of this run (new each run)", i.admin_token),
        String::new(),
        "# Read a container twice, then one of its asset descriptors (served from the cached container):".into(),
        get("K", container, "200, x-cache: MISS"),
        get("K", container, "200, x-cache: HIT"),
        get("K", asset, "200, x-cache: HIT"),
        String::new(),
        "# Regenerate through the gateway: the container comes back with new asset ids, the old one is 404:".into(),
        format!("{CURL} -X POST -H \"Authorization: Bearer $K\" {gw}/v1/content/$C/regenerate   # 200"),
        get("K", container, "200, x-cache: MISS"),
        get("K", asset, "404"),
        String::new(),
        "# Regenerate at the origin simulator: its signed content.regenerated webhook invalidates the gateway:".into(),
        format!("{CURL} -X POST -H \"X-Api-Key: $K\" http://{origin}/v1/content/$C/regenerate   # 200"),
        get("K", container, "200, x-cache: MISS"),
        String::new(),
        "# A read-only key cannot regenerate, no key is refused, another organization cannot see it:".into(),
        format!("{CURL} -X POST -H \"X-Api-Key: $R\" {gw}/v1/content/$C/regenerate   # 403"),
        format!("{CURL} {gw}{container}   # 401"),
        get("B", container, "404"),
        String::new(),
        "# Purge the container from the cache (admin listener), read it again, scrape the metrics:".into(),
        format!("{CURL} -X POST -H \"Authorization: Bearer $T\" \"{adm}/admin/purge?container=$C\"   # 200"),
        get("K", container, "200, x-cache: MISS"),
        format!("curl -s {adm}/metrics | grep layers_gateway_cache_lookups_total"),
    ]
}
