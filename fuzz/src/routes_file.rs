//! Target `routes_file`: the ext_authz routes file parser and its matcher,
//! against a reference path reader and the world's route table.

use keyward::model::{limits, Kind, Level};
use keyward::routes::Match;

/// The routes of the world's ext_authz service: one per resource kind, one
/// that checks the account in the path, one with a scope, one for account
/// users (ADMIN) that a disguised `users` segment must not slip past.
pub const WORLD_ROUTES: &str = r#"
unmatched = "deny"
strip_credential = true

[[routes]]
methods = ["POST"]
path = "/api/domains/{domain}/send"
resource = "domain"
id = "domain"
scope = "email"

[[routes]]
path = "/api/domains/{domain}/**"
resource = "domain"
id = "domain"

[[routes]]
path = "/api/accounts/{account_id}/projects/{project_id}/sandboxes/{sandbox_id}/**"
resource = "sandbox"
id = "sandbox_id"
account = "account_id"

[[routes]]
path = "/api/accounts/{account_id}/projects/{project_id}/**"
resource = "project"
id = "project_id"
account = "account_id"

[[routes]]
path = "/api/accounts/{account_id}/users/**"
resource = "account"
id = "account_id"
level = "admin"
account = "account_id"

[[routes]]
methods = ["GET", "PUT"]
path = "/api/accounts/{account_id}"
resource = "account"
id = "account_id"
level = "admin"
"#;

/// One route of [`WORLD_ROUTES`] as the reference reads it.
struct RefRoute {
    /// Methods; empty = any.
    methods: &'static [&'static str],
    /// Template segments: a literal, `{name}`, or a final `**`.
    template: &'static [&'static str],
    kind: Kind,
    /// The parameter naming the resource.
    id: &'static str,
    /// The parameter that must be the token's account, if any.
    account: Option<&'static str>,
    /// A fixed level, else by method.
    level: Option<Level>,
    scope: &'static str,
}

/// [`WORLD_ROUTES`], written out again for the reference.
const WORLD_TABLE: [RefRoute; 6] = [
    RefRoute {
        methods: &["POST"],
        template: &["api", "domains", "{domain}", "send"],
        kind: Kind::Domain,
        id: "{domain}",
        account: None,
        level: None,
        scope: "email",
    },
    RefRoute {
        methods: &[],
        template: &["api", "domains", "{domain}", "**"],
        kind: Kind::Domain,
        id: "{domain}",
        account: None,
        level: None,
        scope: "",
    },
    RefRoute {
        methods: &[],
        template: &[
            "api",
            "accounts",
            "{a}",
            "projects",
            "{p}",
            "sandboxes",
            "{s}",
            "**",
        ],
        kind: Kind::Sandbox,
        id: "{s}",
        account: Some("{a}"),
        level: None,
        scope: "",
    },
    RefRoute {
        methods: &[],
        template: &["api", "accounts", "{a}", "projects", "{p}", "**"],
        kind: Kind::Project,
        id: "{p}",
        account: Some("{a}"),
        level: None,
        scope: "",
    },
    RefRoute {
        methods: &[],
        template: &["api", "accounts", "{a}", "users", "**"],
        kind: Kind::Account,
        id: "{a}",
        account: Some("{a}"),
        level: Some(Level::Admin),
        scope: "",
    },
    RefRoute {
        methods: &["GET", "PUT"],
        template: &["api", "accounts", "{a}"],
        kind: Kind::Account,
        id: "{a}",
        account: None,
        level: Some(Level::Admin),
        scope: "",
    },
];

/// The reference's reading of a request's path, from the README's rules
/// (written apart from `routes.rs`): the decoded segments, or `None` when
/// keyward must refuse the request whatever `unmatched` says. Refused: a
/// method that is not upper-case letters; a `#` anywhere; in the path
/// before `?`: not starting with `/`, longer than `PATH_MAX`, a `;` or
/// `\`, an empty segment, a `%` that is not two hex digits encoding an
/// unreserved character (`A-Z a-z 0-9 - . _ ~`), a `.` or `..` segment
/// after decoding. One trailing `/` is dropped.
pub fn reference_path(method: &str, path: &str) -> Option<Vec<String>> {
    if method.is_empty() || !method.chars().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    if path.contains('#') {
        return None;
    }
    let path = path.split('?').next().unwrap_or_default();
    if path.len() > keyward::routes::PATH_MAX || !path.starts_with('/') {
        return None;
    }
    if path == "/" {
        return Some(Vec::new());
    }
    let mut raw: Vec<&str> = path[1..].split('/').collect();
    if raw.len() > 1 && raw.last() == Some(&"") {
        raw.pop();
    }
    let mut out = Vec::with_capacity(raw.len());
    for seg in raw {
        if seg.is_empty() {
            return None;
        }
        let mut decoded = String::new();
        let mut chars = seg.chars();
        while let Some(c) = chars.next() {
            match c {
                ';' | '\\' => return None,
                '%' => {
                    let hex: String = chars.by_ref().take(2).collect();
                    if hex.len() != 2 || !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                        return None;
                    }
                    let byte = u8::from_str_radix(&hex, 16).ok()?;
                    let c = char::from(byte);
                    if !(c.is_ascii_alphanumeric() || "-._~".contains(c)) {
                        return None;
                    }
                    decoded.push(c);
                }
                c => decoded.push(c),
            }
        }
        if decoded == "." || decoded == ".." {
            return None;
        }
        out.push(decoded);
    }
    Some(out)
}

/// What the reference expects of a request: refused, unmatched, or a
/// route's check (kind, id, level, scope, account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefMatch {
    /// Refused whatever `unmatched` says.
    Unsafe,
    /// No route.
    Unmatched,
    /// A route's check: kind, id, level, scope, account in the path.
    Route(Kind, String, Level, String, Option<String>),
}

/// How keyward's [`Match`] reads in the reference's terms.
pub fn ref_of(m: &Match<'_, '_>) -> RefMatch {
    match m {
        Match::Unsafe(_) => RefMatch::Unsafe,
        Match::Unmatched => RefMatch::Unmatched,
        Match::Route(n) => RefMatch::Route(
            n.kind,
            n.id.to_string(),
            n.level,
            n.scope.to_string(),
            n.account.as_deref().map(str::to_string),
        ),
    }
}

/// The reference's match of `method path` against [`WORLD_ROUTES`]: the
/// first route whose method and template match the decoded segments
/// (literals ASCII case-insensitively, a parameter one non-empty segment
/// of at most `RESOURCE_ID_MAX` bytes, `**` any rest).
pub fn reference_world_match(method: &str, path: &str) -> RefMatch {
    let Some(segments) = reference_path(method, path) else {
        return RefMatch::Unsafe;
    };
    'routes: for r in &WORLD_TABLE {
        if !r.methods.is_empty() && !r.methods.contains(&method) {
            continue;
        }
        let mut bound: Vec<(&str, &str)> = Vec::new();
        let mut rest_ok = false;
        for (i, t) in r.template.iter().enumerate() {
            if *t == "**" {
                rest_ok = true;
                break;
            }
            let Some(seg) = segments.get(i) else {
                continue 'routes;
            };
            if t.starts_with('{') {
                if seg.is_empty() || seg.len() > limits::RESOURCE_ID_MAX {
                    continue 'routes;
                }
                bound.push((t, seg));
            } else if !t.eq_ignore_ascii_case(seg) {
                continue 'routes;
            }
        }
        if !rest_ok && segments.len() != r.template.len() {
            continue;
        }
        let get = |name: &str| {
            bound
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        let level = r.level.unwrap_or(match method {
            "GET" | "HEAD" | "OPTIONS" => Level::Viewer,
            _ => Level::Admin,
        });
        return RefMatch::Route(
            r.kind,
            get(r.id).unwrap_or_default(),
            level,
            r.scope.to_string(),
            r.account.and_then(get),
        );
    }
    RefMatch::Unmatched
}

/// A routes file and requests to match against it: the text up to the
/// first `\n---\n`, then one `METHOD path` per line. A file that loads
/// must match every request without a panic; a request is refused exactly
/// when [`reference_path`] refuses it, the id and account of a match are
/// decoded segments of the path, and the same path with one character
/// percent-encoded, or with a trailing `/` added or taken away, matches
/// the same way. Against [`WORLD_ROUTES`] every match equals
/// [`reference_world_match`]. A file that does not load must say where.
pub fn routes_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (file, requests) = text.split_once("\n---\n").unwrap_or((&text, ""));
    let routes = match keyward::routes::parse("fuzz.toml", file) {
        Ok(r) => r,
        Err(e) => {
            assert_eq!(e.file, "fuzz.toml");
            assert!(e.line >= 1 && e.column >= 1, "{e}");
            assert!(!e.message.is_empty());
            assert!(e.to_string().starts_with("fuzz.toml:"));
            return;
        }
    };
    assert!(routes.len() <= keyward::routes::ROUTES_MAX);
    let world = file.trim() == WORLD_ROUTES.trim();
    let world_requests = [
        ("GET", "/api/accounts/1/projects/p1/x"),
        ("POST", "/api/domains/example.com/send"),
        ("GET", "/api/accounts/1"),
    ];
    let lines = requests
        .lines()
        .take(64)
        .map(|line| line.split_once(' ').unwrap_or((line, "/")));
    for (method, path) in lines.chain(world_requests) {
        check_route_match(&routes, method, path);
        if world {
            assert_eq!(
                ref_of(&routes.find(method, path)),
                reference_world_match(method, path),
                "{method} {path:?} against the world's routes"
            );
        }
    }
}

/// The generic checks of one request against any routes file (see
/// [`routes_file`]).
fn check_route_match(routes: &keyward::routes::Routes, method: &str, path: &str) {
    let m = routes.find(method, path);
    let reference = reference_path(method, path);
    assert_eq!(
        matches!(m, Match::Unsafe(_)),
        reference.is_none(),
        "{method:?} {path:?}: keyward {m:?}, reference segments {reference:?}"
    );
    let Some(segments) = reference else { return };
    if let Match::Route(n) = &m {
        assert!(
            segments.iter().any(|s| *s == n.id),
            "id {:?} is not a segment of {path:?}",
            n.id
        );
        if let Some(a) = n.account.as_deref() {
            assert!(segments.iter().any(|s| s == a));
        }
    }
    let (part, query) = match path.find('?') {
        Some(q) => path.split_at(q),
        None => (path, ""),
    };
    if part.len() + 3 > keyward::routes::PATH_MAX {
        return;
    }
    let mut variants = Vec::new();
    // The last unreserved character outside a `%XX` escape, encoded.
    let bytes = part.as_bytes();
    let (mut i, mut last) = (0, None);
    while i < bytes.len() {
        if bytes[i] == b'%' {
            i += 3;
            continue;
        }
        if bytes[i].is_ascii_alphanumeric() || b"-._~".contains(&bytes[i]) {
            last = Some(i);
        }
        i += 1;
    }
    if let Some(at) = last {
        variants.push(format!(
            "{}%{:02X}{}{query}",
            &part[..at],
            bytes[at],
            &part[at + 1..]
        ));
    }
    // A trailing slash added or taken away.
    if part.len() > 1 {
        match part.strip_suffix('/') {
            Some(without) => variants.push(format!("{without}{query}")),
            None => variants.push(format!("{part}/{query}")),
        }
    }
    let want = ref_of(&m);
    for v in variants {
        assert_eq!(
            ref_of(&routes.find(method, &v)),
            want,
            "{method} {v:?} does not match as {path:?}"
        );
    }
}
