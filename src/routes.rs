//! Routing: method + raw path -> `Route`, with ids parsed and canonicalized,
//! and the route-to-scope table from config.
//!
//! Paths are matched as received (still percent-encoded), and forwarded to
//! the origin byte for byte as received. So that the origin (or a proxy in
//! front of it) can never read a path as another route than the one whose
//! scope was checked, a path that some server might resolve differently is
//! refused before routing with 400 `BAD_REQUEST` ([`is_canonical`]): a
//! dot-segment (`.` or `..`, also percent-encoded: `%2e`, `.%2E`, ...), an
//! encoded separator (`%2F`, `%5C`, any case) or a literal `\`. Refusing
//! rather than normalizing keeps one rule: the path checked is the path
//! sent, unchanged. No legitimate Layers path has any of these (container
//! ids are UUIDs; asset ids are opaque but hold no `/`, `\` or `;`, see
//! [`crate::ids::parse_asset_id`]).
//!
//! The one id that is decoded is the asset id of the cached asset route: it
//! is read into its canonical form (`photo%402x` is `photo@2x`), the only
//! form the cache, the fence and the origin request of a fill see.

use crate::auth::scopes::Scope;
use crate::config::Config;
use crate::events::EventType;
use crate::ids::{parse_asset_id, valid_asset_id, ContainerId};
use crate::shaping::EndpointClass;
use http::Method;
use std::borrow::Cow;

mod alias;
use alias::ContentPath;

pub const CONTAINER_TEMPLATE: &str = "/v1/content/:containerId";
pub const ASSET_TEMPLATE: &str = "/v1/content/:containerId/assets/:assetId";
pub const REGENERATE_TEMPLATE: &str = "/v1/content/:containerId/regenerate";
pub const APPROVE_TEMPLATE: &str = "/v1/content/:containerId/approve";
pub const REJECT_TEMPLATE: &str = "/v1/content/:containerId/reject";

/// The `POST` actions on a container and what a 2xx of each invalidates
/// (its `approvalStatus` is in every cached body).
fn container_action(segment: &str) -> Option<(&'static str, EventType)> {
    [
        ("regenerate", REGENERATE_TEMPLATE, EventType::Regenerated),
        ("approve", APPROVE_TEMPLATE, EventType::Approved),
        ("reject", REJECT_TEMPLATE, EventType::Rejected),
    ]
    .into_iter()
    .find(|(name, _, _)| segment.eq_ignore_ascii_case(name))
    .map(|(_, template, t)| (template, t))
}
/// Metric label for `/v1/*` paths no rule names.
pub const OTHER_TEMPLATE: &str = "/v1/*";

/// What a request is, once its path is parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET|HEAD /v1/content/:containerId` (cached).
    Container(ContainerId),
    /// `GET|HEAD /v1/content/:containerId/assets/:assetId` (cached). The
    /// asset id is canonical (decoded, see `ids::parse_asset_id`): borrowed
    /// from the path unless it was percent-encoded.
    Asset(ContainerId, Cow<'a, str>),
    /// A read of a cached route spelled in a way the cache does not answer
    /// (a query string, or an alias such as a trailing slash; see
    /// `routes/alias.rs`): read from the origin through the fence, never
    /// from the cache, with the content route's scope.
    ContentVariant {
        id: ContainerId,
        asset: Option<Box<str>>,
    },
    /// A content route whose ids cannot exist: 404 without an origin call.
    BadContentId { template: &'static str },
    /// The signed webhook endpoint.
    Webhook,
    /// Any other `/v1` route, proxied. `rule` indexes the scope table;
    /// `write_through` names the container a 2xx invalidates.
    Proxy {
        rule: Option<usize>,
        write_through: Option<(ContainerId, EventType)>,
    },
    /// Outside `/v1` and not the webhook path.
    NotFound,
    /// Not canonical (see [`is_canonical`]): 400, never routed or forwarded.
    BadPath,
}

/// The error a non-canonical path answers with.
pub fn bad_path() -> crate::error::GatewayError {
    crate::error::GatewayError::new(
        crate::error::ErrorCode::BadRequest,
        "The request path has dot-segments, encoded separators or path parameters (;); send the canonical path.",
    )
}

/// Whether a raw (still percent-encoded) path is canonical: no dot-segment,
/// plain or percent-encoded, no `%2F`, `%5C` or `%3B` in any case, no `\`,
/// no `;`.
pub fn is_canonical(path: &str) -> bool {
    let b = path.as_bytes();
    // A path parameter (`/regenerate;v=1`) is stripped by some servers
    // (Tomcat, Jetty) and kept by others: the origin could run a route
    // the gateway did not authorize or fence as that route.
    if memchr::memchr(b';', b).is_some() {
        return false;
    }
    // The common path (`/v1/content/cnt_...`) has none of these bytes: one
    // vectorized scan (a byte loop cost about 500 instructions a request).
    if memchr::memchr3(b'%', b'.', b'\\', b).is_none() {
        return true;
    }
    if b.contains(&b'\\') {
        return false;
    }
    let encoded_separator = b.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_lowercase()),
                (b'2', b'f') | (b'5', b'c') | (b'3', b'b')
            )
    });
    !encoded_separator && !path.split('/').any(|seg| is_dot_segment(seg.as_bytes()))
}

/// `.` or `..`, with any of the dots written `%2e` or `%2E`.
fn is_dot_segment(seg: &[u8]) -> bool {
    let (mut dots, mut i) = (0, 0);
    while i < seg.len() {
        match seg[i] {
            b'.' => i += 1,
            b'%' if seg.get(i + 1) == Some(&b'2') && matches!(seg.get(i + 2), Some(b'e' | b'E')) => i += 3,
            _ => return false,
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// A route template as a `&'static str`, leaked once per distinct text:
/// a reload that rebuilds the table reuses the earlier leak, so memory is
/// bounded by the distinct templates ever configured, not by reloads.
fn intern_template(path: &str) -> &'static str {
    static INTERNED: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut all = INTERNED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = all.iter().find(|t| **t == path) {
        return t;
    }
    let t: &'static str = Box::leak(path.to_owned().into_boxed_str());
    all.push(t);
    t
}

/// One parsed rule of the route-to-scope table.
#[derive(Debug)]
struct Rule {
    method: Method,
    segments: Vec<String>,
    template: &'static str,
    scope: Option<Scope>,
    long_running: bool,
}

/// The route table, built once from config.
#[derive(Debug)]
pub struct RouteTable {
    rules: Vec<Rule>,
    default_scope: Scope,
    webhook_path: String,
    content_scope: Option<Scope>,
    asset_scope: Option<Scope>,
}

impl RouteTable {
    pub fn from_config(c: &Config) -> RouteTable {
        let rules: Vec<Rule> = c
            .routes
            .rules
            .iter()
            .map(|r| Rule {
                method: Method::from_bytes(r.method.as_bytes()).unwrap_or(Method::GET),
                segments: r
                    .path
                    .trim_start_matches('/')
                    .split('/')
                    .map(String::from)
                    .collect(),
                // Templates live as long as the process; leaking them once
                // lets metric labels be `&'static str` on every request.
                // Interned, so config reloads do not leak them again.
                template: intern_template(&r.path),
                scope: r.scope.as_deref().and_then(Scope::parse),
                long_running: r.class.as_deref() == Some("long-running"),
            })
            .collect();
        let default_scope =
            Scope::parse(&c.routes.default_scope).unwrap_or(Scope::parse("org:admin").expect("known scope"));
        let scope_of = |t: &str| {
            rules
                .iter()
                .find(|r| r.method == Method::GET && r.template == t)
                .map_or(Some(default_scope), |r| r.scope)
        };
        let content_scope = scope_of(CONTAINER_TEMPLATE);
        let asset_scope = scope_of(ASSET_TEMPLATE);
        RouteTable {
            rules,
            default_scope,
            webhook_path: c.webhooks.path.clone(),
            content_scope,
            asset_scope,
        }
    }

    /// Parses a request's route. `has_query` makes a read of a cached route
    /// a `ContentVariant` (the cache does not key on queries).
    pub fn route<'a>(&self, method: &Method, path: &'a str, has_query: bool) -> Route<'a> {
        if !is_canonical(path) {
            return Route::BadPath;
        }
        if path == self.webhook_path {
            return Route::Webhook;
        }
        let Some(rest) = path.strip_prefix("/v1/") else {
            return Route::NotFound;
        };
        let readonly = *method == Method::GET || *method == Method::HEAD;
        if let Some(content) = rest.strip_prefix("content/") {
            let mut parts = content.splitn(3, '/');
            let id_part = parts.next().unwrap_or("");
            let second = parts.next();
            let third = parts.next();
            let id = ContainerId::parse(id_part);
            match (second, third) {
                (None, _) if readonly && !has_query => {
                    return id.map_or(
                        Route::BadContentId {
                            template: CONTAINER_TEMPLATE,
                        },
                        Route::Container,
                    );
                }
                (Some("assets"), Some(asset)) if readonly && !has_query => {
                    return match (id, parse_asset_id(asset)) {
                        (Some(id), Some(asset)) => Route::Asset(id, asset),
                        // `…/assets/a/` and the like: an alias, not a bad id.
                        _ => match alias::content_path(rest) {
                            Some(alias) => self.alias_route(method, path, alias, readonly),
                            None => Route::BadContentId {
                                template: ASSET_TEMPLATE,
                            },
                        },
                    };
                }
                (None, _) if *method == Method::PATCH || *method == Method::DELETE => {
                    let Some(id) = id else {
                        return Route::BadContentId {
                            template: CONTAINER_TEMPLATE,
                        };
                    };
                    let t = if *method == Method::DELETE {
                        EventType::Deleted
                    } else {
                        EventType::Updated
                    };
                    return Route::Proxy {
                        rule: self.find(method, path),
                        write_through: Some((id, t)),
                    };
                }
                (Some(action), None) if *method == Method::POST => {
                    if let Some((template, t)) = container_action(action) {
                        let Some(id) = id else {
                            return Route::BadContentId { template };
                        };
                        // By template: the action may be spelled in any case.
                        return Route::Proxy {
                            rule: self.find_template(method, template),
                            write_through: Some((id, t)),
                        };
                    }
                }
                _ => {}
            }
        }
        if let Some(alias) = alias::content_path(rest) {
            return self.alias_route(method, path, alias, readonly);
        }
        // Any other read under `content/` (a dot-segment, an extra segment,
        // an encoding no id contains) may still resolve to a container at
        // an origin that normalises paths: it never reaches the origin
        // unfenced. The contract has no other GET there.
        if readonly && rest.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("content/")) {
            return Route::BadContentId {
                template: CONTAINER_TEMPLATE,
            };
        }
        Route::Proxy {
            rule: self.find(method, path),
            write_through: None,
        }
    }

    /// The route of a content path that is not spelled canonically (or has
    /// a query): reads become `ContentVariant`, mutations keep their
    /// write-through and the scope of the route they alias.
    fn alias_route<'a>(&self, method: &Method, path: &str, alias: ContentPath, readonly: bool) -> Route<'a> {
        // UUID hex is case-insensitive; the `cnt_` prefix is matched as the
        // origin would most likely match it, lowercase.
        let parse = |s: &str| ContainerId::parse(&s.to_ascii_lowercase());
        let bad = |template| Route::BadContentId { template };
        match alias {
            ContentPath::Container(id) if readonly => match parse(&id) {
                Some(id) => Route::ContentVariant { id, asset: None },
                None => bad(CONTAINER_TEMPLATE),
            },
            ContentPath::Asset(id, asset) if readonly => match parse(&id) {
                Some(id) if valid_asset_id(&asset) => Route::ContentVariant {
                    id,
                    asset: Some(asset.into()),
                },
                _ => bad(ASSET_TEMPLATE),
            },
            ContentPath::Container(id) if *method == Method::PATCH || *method == Method::DELETE => {
                let Some(id) = parse(&id) else {
                    return bad(CONTAINER_TEMPLATE);
                };
                let t = if *method == Method::DELETE {
                    EventType::Deleted
                } else {
                    EventType::Updated
                };
                Route::Proxy {
                    rule: self.find_template(method, CONTAINER_TEMPLATE),
                    write_through: Some((id, t)),
                }
            }
            ContentPath::Action(id, (template, t)) if *method == Method::POST => match parse(&id) {
                Some(id) => Route::Proxy {
                    rule: self.find_template(method, template),
                    write_through: Some((id, t)),
                },
                None => bad(template),
            },
            _ => Route::Proxy {
                rule: self.find(method, path),
                write_through: None,
            },
        }
    }

    fn find_template(&self, method: &Method, template: &str) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.method == method && r.template == template)
    }

    fn find(&self, method: &Method, path: &str) -> Option<usize> {
        // HEAD is GET without a body: it needs the same scope.
        let method = if *method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        let segs = path.trim_start_matches('/').split('/');
        self.rules.iter().position(|r| {
            r.method == method && {
                let mut it = segs.clone();
                r.segments.iter().all(|s| match it.next() {
                    Some(p) if s.starts_with(':') => !p.is_empty(),
                    Some(p) => p == s,
                    None => false,
                }) && it.next().is_none()
            }
        })
    }

    /// The scope a route requires; `None` means any authenticated caller.
    pub fn required_scope(&self, route: &Route<'_>) -> Option<Scope> {
        match route {
            Route::Container(_) => self.content_scope,
            Route::Asset(..) => self.asset_scope,
            Route::ContentVariant { asset: None, .. } => self.content_scope,
            Route::ContentVariant { asset: Some(_), .. } => self.asset_scope,
            Route::Proxy { rule: Some(i), .. } => self.rules[*i].scope,
            Route::Proxy { rule: None, .. } => Some(self.default_scope),
            Route::BadContentId { .. } | Route::Webhook | Route::NotFound | Route::BadPath => None,
        }
    }

    /// The rate-limit endpoint class: every GET (and HEAD) is read-light,
    /// a mutation is long-running when its rule says so, else write-light.
    pub fn class(&self, method: &Method, route: &Route<'_>) -> EndpointClass {
        if *method == Method::GET || *method == Method::HEAD {
            return EndpointClass::ReadLight;
        }
        match route {
            Route::Proxy { rule: Some(i), .. } if self.rules[*i].long_running => EndpointClass::LongRunning,
            _ => EndpointClass::WriteLight,
        }
    }

    /// The metric label: a template, never a raw path.
    pub fn template(&self, route: &Route<'_>) -> &'static str {
        match route {
            Route::Container(_) => CONTAINER_TEMPLATE,
            Route::Asset(..) => ASSET_TEMPLATE,
            Route::ContentVariant { asset: None, .. } => CONTAINER_TEMPLATE,
            Route::ContentVariant { asset: Some(_), .. } => ASSET_TEMPLATE,
            Route::BadContentId { template } => template,
            Route::Proxy { rule: Some(i), .. } => self.rules[*i].template,
            Route::Proxy { rule: None, .. } => OTHER_TEMPLATE,
            Route::Webhook => "webhook",
            Route::NotFound => "not_found",
            Route::BadPath => "bad_path",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const ID: &str = "cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e";

    fn table() -> RouteTable {
        RouteTable::from_config(&Config::parse("", PathBuf::new()).unwrap())
    }

    #[test]
    fn content_routes_parse_ids() {
        let t = table();
        let id = ContainerId::parse(ID).unwrap();
        assert_eq!(
            t.route(&Method::GET, &format!("/v1/content/{ID}"), false),
            Route::Container(id)
        );
        assert_eq!(
            t.route(&Method::HEAD, &format!("/v1/content/{}", &ID[4..]), false),
            Route::Container(id)
        );
        assert_eq!(
            t.route(&Method::GET, &format!("/v1/content/{ID}/assets/slide-1"), false),
            Route::Asset(id, "slide-1".into())
        );
        assert_eq!(
            t.required_scope(&Route::Container(id)),
            Scope::parse("content:read")
        );
    }

    #[test]
    fn malformed_ids_never_reach_the_origin() {
        let t = table();
        for p in [
            "/v1/content/nope".to_string(),
            format!("/v1/content/{ID}/assets/"),
            format!("/v1/content/{ID}/assets/a%00b"),
            format!("/v1/content/{ID}/assets/a%zz"),
            format!("/v1/content/{ID}/assets/a%FF"),
            format!("/v1/content/{ID}/assets/a%2540"),
            format!("/v1/content/{ID}/assets/a\"b"),
        ] {
            assert!(
                matches!(t.route(&Method::GET, &p, false), Route::BadContentId { .. }),
                "{p}"
            );
        }
        assert!(matches!(
            t.route(&Method::DELETE, "/v1/content/x", false),
            Route::BadContentId { .. }
        ));
    }

    #[test]
    fn every_spelling_of_an_asset_id_is_one_canonical_id() {
        let t = table();
        let id = ContainerId::parse(ID).unwrap();
        for (seg, canonical) in [
            ("photo@2x", "photo@2x"),
            ("photo%402x", "photo@2x"),
            ("%70hoto%402x", "photo@2x"),
            ("img~1", "img~1"),
            ("img%7e1", "img~1"),
            ("img%7E1", "img~1"),
            ("clip+v2", "clip+v2"),
            ("clip%2Bv2", "clip+v2"),
            ("k=v", "k=v"),
            ("%41", "A"),
            ("caf%c3%a9", "café"),
        ] {
            let p = format!("/v1/content/{ID}/assets/{seg}");
            let r = t.route(&Method::GET, &p, false);
            assert_eq!(r, Route::Asset(id, canonical.into()), "{p}");
            assert_eq!(t.template(&r), ASSET_TEMPLATE);
            assert_eq!(t.required_scope(&r), Scope::parse("content:read"));
            // The same id through an alias, for the fence of a variant.
            assert_eq!(
                t.route(&Method::GET, &format!("{p}/"), false),
                Route::ContentVariant {
                    id,
                    asset: Some(canonical.into())
                },
                "{p}/"
            );
        }
        // A plain id borrows the path: no allocation on the hot path.
        let p = format!("/v1/content/{ID}/assets/slide-1");
        assert!(matches!(
            t.route(&Method::GET, &p, false),
            Route::Asset(_, Cow::Borrowed(_))
        ));
    }

    #[test]
    fn refused_asset_ids_keep_their_answers() {
        let t = table();
        // Separators, path parameters and dot-segments, plain or encoded:
        // 400 before routing, as for every path.
        for seg in ["a%2Fb", "a%5cb", "a%3Bb", "a;b", "a\\b", "%2e%2e", ".", ".."] {
            let p = format!("/v1/content/{ID}/assets/{seg}");
            assert_eq!(t.route(&Method::GET, &p, false), Route::BadPath, "{p}");
        }
        // Ids no asset can have: 404 without an origin call, also through
        // an alias.
        for seg in [
            "a%00b", "a%1f", "a%7F", "%C2%80", "a%zz", "a%4", "%FF", "caf%C3", "a%2540", "a%25", "a%20b",
        ] {
            for p in [
                format!("/v1/content/{ID}/assets/{seg}"),
                format!("/v1/content/{ID}/assets/{seg}/"),
            ] {
                assert!(
                    matches!(t.route(&Method::GET, &p, false), Route::BadContentId { .. }),
                    "{p}"
                );
            }
        }
    }

    #[test]
    fn non_canonical_paths_are_refused_before_routing() {
        let t = table();
        for p in [
            "/v1/content/..".to_string(),
            "/v1/content/.".into(),
            "/v1/./content/x".into(),
            "/v1/content/%2e%2e/assets/%2e%2e".into(),
            "/v1/content/%2E%2e".into(),
            "/v1/content/.%2E/x".into(),
            "/v1/content/%2e".into(),
            "/v1/content/..%2F..%2Fadmin%2Fpurge".into(),
            "/v1/content/..%5c..%5Cadmin".into(),
            "/v1/content/a\\b".into(),
            format!("/v1/content/{ID}%2F"),
            format!("/v1/content/{ID}/assets/a%2fb"),
            "/webhooks/layers/..".into(),
        ] {
            assert_eq!(t.route(&Method::GET, &p, false), Route::BadPath, "{p}");
            assert!(!is_canonical(&p), "{p}");
        }
        // Dots inside a name, and other escapes, are fine.
        for p in [
            format!("/v1/content/{ID}"),
            "/v1/content/.../x".into(),
            "/v1/projects/a.b".into(),
            "/v1/content/..x".into(),
            "/v1/content/%2e%2e%2e".into(),
            "/v1/content/a%20b".into(),
        ] {
            assert!(is_canonical(&p), "{p}");
        }
    }

    #[test]
    fn mutations_are_write_through() {
        let t = table();
        let id = ContainerId::parse(ID).unwrap();
        let p = format!("/v1/content/{ID}/regenerate");
        let r = t.route(&Method::POST, &p, false);
        assert!(
            matches!(r, Route::Proxy { write_through: Some((i, EventType::Regenerated)), .. } if i == id)
        );
        assert_eq!(t.template(&r), REGENERATE_TEMPLATE);
        assert_eq!(t.required_scope(&r), Scope::parse("content:write"));
        let p = format!("/v1/content/{ID}");
        let r = t.route(&Method::DELETE, &p, false);
        assert!(matches!(
            r,
            Route::Proxy {
                write_through: Some((_, EventType::Deleted)),
                ..
            }
        ));
        // An approval change is in every cached body (`approvalStatus`).
        for (action, template, event) in [
            ("approve", APPROVE_TEMPLATE, EventType::Approved),
            ("reject", REJECT_TEMPLATE, EventType::Rejected),
        ] {
            for p in [
                format!("/v1/content/{ID}/{action}"),
                format!("/v1//Content/{ID}/{}/", action.to_uppercase()),
            ] {
                let r = t.route(&Method::POST, &p, false);
                assert!(
                    matches!(r, Route::Proxy { write_through: Some((i, e)), .. } if i == id && e == event),
                    "{p}: {r:?}"
                );
                assert_eq!(t.template(&r), template, "{p}");
                assert_eq!(t.required_scope(&r), Scope::parse("content:approve"), "{p}");
            }
        }
    }

    #[test]
    fn other_routes_proxy_with_their_scope_or_the_default() {
        let t = table();
        let r = t.route(&Method::GET, "/v1/whoami", false);
        assert_eq!(t.required_scope(&r), None);
        let r = t.route(&Method::GET, "/v1/projects/prj_1", false);
        assert_eq!(t.template(&r), "/v1/projects/:projectId");
        let r = t.route(&Method::GET, "/v1/unlisted/thing", false);
        assert_eq!(t.template(&r), OTHER_TEMPLATE);
        assert_eq!(t.required_scope(&r), Scope::parse("org:admin"));
        assert_eq!(t.route(&Method::GET, "/healthz", false), Route::NotFound);
        assert_eq!(t.route(&Method::POST, "/webhooks/layers", false), Route::Webhook);
    }

    #[test]
    fn endpoint_classes_follow_method_and_rule() {
        let t = table();
        let get = t.route(&Method::GET, "/v1/projects", false);
        assert_eq!(t.class(&Method::GET, &get), EndpointClass::ReadLight);
        let p = format!("/v1/content/{ID}/regenerate");
        let regen = t.route(&Method::POST, &p, false);
        assert_eq!(t.class(&Method::POST, &regen), EndpointClass::LongRunning);
        let p = format!("/v1/content/{ID}");
        let patch = t.route(&Method::PATCH, &p, false);
        assert_eq!(t.class(&Method::PATCH, &patch), EndpointClass::WriteLight);
    }

    #[test]
    fn cached_routes_with_a_query_or_an_alias_are_content_variants() {
        let t = table();
        let id = ContainerId::parse(ID).unwrap();
        let p = format!("/v1/content/{ID}");
        let r = t.route(&Method::GET, &p, true);
        assert_eq!(r, Route::ContentVariant { id, asset: None });
        assert_eq!(t.template(&r), CONTAINER_TEMPLATE);
        assert_eq!(t.required_scope(&r), Scope::parse("content:read"));
        for p in [
            format!("/v1/content/{ID}/"),
            format!("/v1/Content/{}", ID.to_uppercase().replace("CNT_", "cnt_")),
            format!("/v1/content//{ID}"),
        ] {
            assert_eq!(
                t.route(&Method::GET, &p, false),
                Route::ContentVariant { id, asset: None },
                "{p}"
            );
        }
        let p = format!("/v1/content/{ID}/assets/slide-1/");
        assert_eq!(
            t.route(&Method::HEAD, &p, false),
            Route::ContentVariant {
                id,
                asset: Some("slide-1".into())
            }
        );
    }

    #[test]
    fn aliased_mutations_keep_their_write_through_and_scope() {
        let t = table();
        let id = ContainerId::parse(ID).unwrap();
        let p = format!("/v1/content/{ID}/");
        let r = t.route(&Method::DELETE, &p, false);
        assert!(matches!(r, Route::Proxy { write_through: Some((i, EventType::Deleted)), .. } if i == id));
        assert_eq!(t.required_scope(&r), Scope::parse("content:write"));
        let p = format!("/v1/CONTENT/{ID}/regenerate/");
        let r = t.route(&Method::POST, &p, false);
        assert!(matches!(
            r,
            Route::Proxy {
                write_through: Some((_, EventType::Regenerated)),
                ..
            }
        ));
        assert_eq!(t.template(&r), REGENERATE_TEMPLATE);
    }
}
