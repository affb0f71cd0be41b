//! The ext_authz routes file: which check each HTTP request needs.
//!
//! ```toml
//! unmatched = "deny"          # or "allow": requests no route matches
//! strip_credential = true     # remove authorization / api-token upstream
//! dynamic_metadata = true     # token_id, account_id, route on an allow
//!
//! [[routes]]
//! methods = ["GET", "HEAD"]   # any method when absent
//! path = "/api/accounts/{account_id}/projects/{project_id}/**"
//! resource = "project"        # account | project | sandbox | domain
//! id = "project_id"           # the path parameter that names the resource
//! level = "viewer"            # default: viewer for GET/HEAD/OPTIONS, else admin
//! account = "account_id"      # optional: must be the token's account
//! scope = "email"             # optional feature scope
//! cost = 1                    # optional: units taken from the token's
//!                             # rate limits (default 1, 0 = none)
//! ```
//!
//! Path templates are `/`-separated segments: a literal, a `{name}`
//! parameter (one whole segment), or a final `**` (any rest, possibly
//! empty). The first route whose method and path match decides. Errors name
//! the file, line and column.
//!
//! A request is judged only if it cannot mean something else to the
//! upstream than to keyward ([`Unsafe`] otherwise, denied whatever
//! `unmatched` says): the method is an upper-case token (RFC 9110 methods
//! are case-sensitive); the path (before `?`; the query is not judged) has
//! no `;`, `#`, `\`, empty segment (`//`) or dot segment (`.`, `..`, also
//! spelled `%2e`), and no percent-encoding other than of an RFC 3986
//! unreserved character (`A-Z a-z 0-9 - . _ ~`). Those are decoded before
//! matching (RFC 3986 section 6.2.2.2), so `%75sers` is `users`. A single
//! trailing `/` is ignored (`/a/b/` is checked as `/a/b`). Literal segments
//! match ASCII case-insensitively (`/API/...` is checked by the route for
//! `/api/...`: checking more is the safe direction); captured ids are passed
//! as they are. Matching allocates only when the path has a `%`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::model::{limits, scope_index, Kind, Level};

mod path;

use path::part_of;
pub use path::{normalise, Unsafe};

/// Most routes in one file.
pub const ROUTES_MAX: usize = 10_000;
/// Longest routes file, in bytes.
pub const FILE_MAX: u64 = 4 << 20;
/// Longest request path considered, in bytes (longer: no route matches).
pub const PATH_MAX: usize = 8192;

/// What to do with a request that no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// 403 (the default).
    Deny,
    /// Let it through unchecked.
    Allow,
}

/// A path segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest,
}

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Upper-case methods; empty = any.
    methods: Vec<String>,
    segments: Vec<Segment>,
    /// The template as written (for logs and metadata; shared with the
    /// answers that name it).
    pub template: Arc<str>,
    /// Kind of the resource checked.
    pub kind: Kind,
    /// Index of the segment naming the resource.
    id_segment: usize,
    /// Index of the segment that must be the token's account, if any.
    account_segment: Option<usize>,
    /// Level, if fixed; else by method.
    level: Option<Level>,
    /// Feature scope to name, if any.
    pub scope: String,
    /// Units an allowed request takes from the token's rate limits.
    pub cost: u64,
}

/// A loaded, validated routes file.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<Route>,
    /// What to do with a request no route matches.
    pub unmatched: Unmatched,
    /// Remove the credential header before the request goes upstream.
    pub strip_credential: bool,
    /// Put the token's ids and the route in an allow's dynamic metadata
    /// (for Envoy's access logs and later filters); off saves Envoy the
    /// work of a metadata struct per request when nothing reads it.
    pub dynamic_metadata: bool,
}

impl Default for Routes {
    /// No routes: every request is unmatched and denied.
    fn default() -> Self {
        Routes {
            routes: Vec::new(),
            unmatched: Unmatched::Deny,
            strip_credential: true,
            dynamic_metadata: true,
        }
    }
}

/// What a request needs, from the route it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed<'r, 'p> {
    /// The route's template.
    pub template: &'r Arc<str>,
    /// The resource's kind.
    pub kind: Kind,
    /// The resource's id, from the path (percent-decoded: owned only when
    /// the path had a `%`).
    pub id: Cow<'p, str>,
    /// The level needed.
    pub level: Level,
    /// The scope to name (empty = none).
    pub scope: &'r str,
    /// Units an allowed request takes from the token's rate limits.
    pub cost: u64,
    /// The account the path names, if the route checks it (decoded as
    /// `id`).
    pub account: Option<Cow<'p, str>>,
}

/// How a request matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match<'r, 'p> {
    /// A route: check this.
    Route(Needed<'r, 'p>),
    /// No route matched.
    Unmatched,
    /// A request keyward will not judge (see the module documentation):
    /// always denied, whatever `unmatched` says.
    Unsafe(Unsafe),
}

/// A routes file error, with its place.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct RoutesError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    unmatched: Option<Spanned<String>>,
    strip_credential: Option<bool>,
    dynamic_metadata: Option<bool>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    methods: Option<Spanned<Vec<String>>>,
    path: Spanned<String>,
    resource: Spanned<String>,
    id: Spanned<String>,
    level: Option<Spanned<String>>,
    account: Option<Spanned<String>>,
    scope: Option<Spanned<String>>,
    cost: Option<Spanned<i64>>,
}

/// HTTP methods a route may name.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

/// Reads and validates a routes file.
pub fn load(path: &Path) -> Result<Routes, RoutesError> {
    let file = path.display().to_string();
    let whole = |message: String| RoutesError {
        file: file.clone(),
        line: 1,
        column: 1,
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    if meta.len() > FILE_MAX {
        return Err(whole(format!("larger than {FILE_MAX} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    parse(&file, &text)
}

/// Parses and validates routes from `text`; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Routes, RoutesError> {
    let at = |span: Range<usize>, message: String| {
        let (line, column) = line_col(text, span.start);
        RoutesError {
            file: file.to_string(),
            line,
            column,
            message,
        }
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let message = e.message().to_string();
        at(e.span().unwrap_or(0..0), message)
    })?;
    let unmatched = match raw.unmatched {
        None => Unmatched::Deny,
        Some(u) => match u.get_ref().as_str() {
            "deny" => Unmatched::Deny,
            "allow" => Unmatched::Allow,
            _ => {
                return Err(at(
                    u.span(),
                    "unmatched must be \"deny\" or \"allow\"".into(),
                ))
            }
        },
    };
    if raw.routes.len() > ROUTES_MAX {
        return Err(at(0..0, format!("more than {ROUTES_MAX} routes")));
    }
    let mut routes = Vec::with_capacity(raw.routes.len());
    for r in raw.routes {
        let span = r.span();
        routes.push(route(&r.into_inner(), span, &at)?);
    }
    Ok(Routes {
        routes,
        unmatched,
        strip_credential: raw.strip_credential.unwrap_or(true),
        dynamic_metadata: raw.dynamic_metadata.unwrap_or(true),
    })
}

fn route(
    r: &RawRoute,
    span: Range<usize>,
    at: &impl Fn(Range<usize>, String) -> RoutesError,
) -> Result<Route, RoutesError> {
    let mut methods = Vec::new();
    if let Some(m) = &r.methods {
        if m.get_ref().is_empty() {
            return Err(at(
                m.span(),
                "methods: leave it out to match any method".into(),
            ));
        }
        for name in m.get_ref() {
            let upper = name.to_ascii_uppercase();
            if !METHODS.contains(&upper.as_str()) {
                return Err(at(
                    m.span(),
                    format!("methods: unknown HTTP method {name:?}"),
                ));
            }
            methods.push(upper);
        }
    }
    let template = r.path.get_ref().clone();
    let segments = template_segments(&template).map_err(|m| at(r.path.span(), m))?;
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.as_str() == r.resource.get_ref())
        .ok_or_else(|| {
            at(
                r.resource.span(),
                "resource must be account, project, sandbox or domain".into(),
            )
        })?;
    let param = |name: &Spanned<String>, what: &str| {
        segments
            .iter()
            .position(|s| *s == Segment::Param(name.get_ref().clone()))
            .ok_or_else(|| {
                at(
                    name.span(),
                    format!("{what}: the path has no parameter {{{}}}", name.get_ref()),
                )
            })
    };
    let id_segment = param(&r.id, "id")?;
    let account_segment = r
        .account
        .as_ref()
        .map(|a| param(a, "account"))
        .transpose()?;
    let level = match &r.level {
        None => None,
        Some(l) => Some(match l.get_ref().as_str() {
            "viewer" => Level::Viewer,
            "admin" => Level::Admin,
            _ => return Err(at(l.span(), "level must be \"viewer\" or \"admin\"".into())),
        }),
    };
    let scope = match &r.scope {
        None => String::new(),
        Some(s) if scope_index(s.get_ref()).is_some() => s.get_ref().clone(),
        Some(s) => {
            return Err(at(
                s.span(),
                format!(
                    "unknown scope; known: {}",
                    crate::model::SCOPE_NAMES.join(", ")
                ),
            ))
        }
    };
    let cost = match &r.cost {
        None => 1,
        Some(c) => u64::try_from(*c.get_ref())
            .ok()
            .filter(|c| *c <= crate::ratelimit::LIMIT_MAX)
            .ok_or_else(|| at(c.span(), "cost must be 0..=1000000000000".into()))?,
    };
    let _ = span;
    Ok(Route {
        methods,
        segments,
        template: template.into(),
        kind,
        id_segment,
        account_segment,
        level,
        scope,
        cost,
    })
}

/// Splits a template into segments, checking it.
fn template_segments(template: &str) -> Result<Vec<Segment>, String> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err("path must start with /".into());
    };
    if template.len() > PATH_MAX {
        return Err(format!("path longer than {PATH_MAX} bytes"));
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            return Err("path has an empty segment (//, or a trailing /)".into());
        }
        if *part == "**" {
            if i + 1 != parts.len() {
                return Err("** may only be the last segment".into());
            }
            out.push(Segment::Rest);
        } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "bad parameter {part}: use {{letters_digits_or_underscores}}"
                ));
            }
            if !names.insert(name) {
                return Err(format!("parameter {{{name}}} appears twice"));
            }
            out.push(Segment::Param(name.to_string()));
        } else if part.contains(['{', '}', '*']) || *part == "." || *part == ".." {
            return Err(format!(
                "bad segment {part:?}: a literal, {{name}} or a final **"
            ));
        } else if part.contains(['%', ';', '\\', '#', '?']) {
            // Requests are matched decoded and never with these: a literal
            // holding one would silently match nothing.
            return Err(format!(
                "bad segment {part:?}: a literal cannot hold %, ;, \\, # or ? (requests are matched percent-decoded)"
            ));
        } else {
            out.push(Segment::Literal((*part).to_string()));
        }
    }
    Ok(out)
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

impl Routes {
    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route for `method` and `path` (which may carry a query string),
    /// or why the request is [`Unsafe`]. Allocation-free unless the path
    /// has a `%`.
    pub fn find<'r, 'p>(&'r self, method: &str, path: &'p str) -> Match<'r, 'p> {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Match::Unsafe(Unsafe::Method);
        }
        let path = match normalise(path) {
            Ok(p) => p,
            Err(why) => return Match::Unsafe(why),
        };
        for route in &self.routes {
            if !route.methods.is_empty() && !route.methods.iter().any(|m| m == method) {
                continue;
            }
            if let Some((id, account)) = route.capture(&path) {
                let level = route.level.unwrap_or(match method {
                    "GET" | "HEAD" | "OPTIONS" => Level::Viewer,
                    _ => Level::Admin,
                });
                return Match::Route(Needed {
                    template: &route.template,
                    kind: route.kind,
                    id: part_of(&path, id),
                    level,
                    scope: &route.scope,
                    cost: route.cost,
                    account: account.map(|a| part_of(&path, a)),
                });
            }
        }
        Match::Unmatched
    }
}

impl Route {
    /// The byte ranges of the resource id (and account) in `path` (as
    /// [`normalise`] returns it) if it matches this route's template; no
    /// allocation.
    fn capture(&self, path: &str) -> Option<(Range<usize>, Option<Range<usize>>)> {
        let mut parts = (!path.is_empty())
            .then(|| {
                path.split('/').scan(0, |at, s| {
                    let start = *at;
                    *at += s.len() + 1;
                    Some(start..start + s.len())
                })
            })
            .into_iter()
            .flatten();
        let (mut id, mut account) = (None, None);
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Rest => return Some((id?, account)),
                Segment::Literal(l) => {
                    if !path[parts.next()?].eq_ignore_ascii_case(l) {
                        return None;
                    }
                }
                Segment::Param(_) => {
                    let p = parts.next()?;
                    if p.is_empty() || p.len() > limits::RESOURCE_ID_MAX {
                        return None;
                    }
                    if i == self.id_segment {
                        id = Some(p.clone());
                    }
                    if Some(i) == self.account_segment {
                        account = Some(p);
                    }
                }
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some((id?, account))
    }
}

#[cfg(test)]
mod tests;
