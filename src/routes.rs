//! The ext_authz routes file: which check each HTTP request needs.
//!
//! ```toml
//! unmatched = "deny"          # or "allow": requests no route matches
//! strip_credential = true     # remove authorization / api-token upstream
//!
//! [[routes]]
//! methods = ["GET", "HEAD"]   # any method when absent
//! path = "/api/accounts/{account_id}/projects/{project_id}/**"
//! resource = "project"        # account | project | sandbox | domain
//! id = "project_id"           # the path parameter that names the resource
//! level = "viewer"            # default: viewer for GET/HEAD/OPTIONS, else admin
//! account = "account_id"      # optional: must be the token's account
//! scope = "email"             # optional feature scope
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

use serde::Deserialize;
use toml::Spanned;

use crate::model::{limits, scope_index, Kind, Level};

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
    /// The template as written (for logs and metadata).
    pub template: String,
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
}

/// A loaded, validated routes file.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<Route>,
    /// What to do with a request no route matches.
    pub unmatched: Unmatched,
    /// Remove the credential header before the request goes upstream.
    pub strip_credential: bool,
}

impl Default for Routes {
    /// No routes: every request is unmatched and denied.
    fn default() -> Self {
        Routes {
            routes: Vec::new(),
            unmatched: Unmatched::Deny,
            strip_credential: true,
        }
    }
}

/// What a request needs, from the route it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed<'r, 'p> {
    /// The route's template.
    pub template: &'r str,
    /// The resource's kind.
    pub kind: Kind,
    /// The resource's id, from the path (percent-decoded: owned only when
    /// the path had a `%`).
    pub id: Cow<'p, str>,
    /// The level needed.
    pub level: Level,
    /// The scope to name (empty = none).
    pub scope: &'r str,
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

/// Why a request is not judged: what in it could mean something else to
/// the upstream than to keyward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsafe {
    /// The method is not an upper-case token (`post` is not `POST`).
    Method,
    /// The path does not start with `/`.
    NotAbsolute,
    /// The path is longer than [`PATH_MAX`].
    TooLong,
    /// A `#` (a fragment is never sent; an upstream may cut it or not).
    Fragment,
    /// A `;` (path parameters: Tomcat and Spring read `..;` as `..`).
    Semicolon,
    /// A `\` (some servers read it as `/`).
    Backslash,
    /// Percent-encoding of anything but an unreserved character (`%2F`,
    /// `%25`, ...), or a `%` not followed by two hex digits.
    Encoding,
    /// A `.` or `..` segment (also spelled `%2e`).
    DotSegment,
    /// An empty segment (`//`).
    EmptySegment,
}

impl Unsafe {
    /// A short label, for logs.
    pub fn label(self) -> &'static str {
        match self {
            Unsafe::Method => "method",
            Unsafe::NotAbsolute => "not_absolute",
            Unsafe::TooLong => "too_long",
            Unsafe::Fragment => "fragment",
            Unsafe::Semicolon => "semicolon",
            Unsafe::Backslash => "backslash",
            Unsafe::Encoding => "percent_encoding",
            Unsafe::DotSegment => "dot_segment",
            Unsafe::EmptySegment => "empty_segment",
        }
    }

    /// What the denial says.
    pub fn message(self) -> &'static str {
        match self {
            Unsafe::Method => "the request is not accepted: the method is not an upper-case HTTP token",
            Unsafe::NotAbsolute => "the request path is not accepted: it does not start with /",
            Unsafe::TooLong => "the request path is not accepted: it is too long",
            Unsafe::Fragment => "the request path is not accepted: it has a # fragment",
            Unsafe::Semicolon => "the request path is not accepted: it has a ;",
            Unsafe::Backslash => "the request path is not accepted: it has a backslash",
            Unsafe::Encoding => {
                "the request path is not accepted: percent-encoding of a character that is not unreserved"
            }
            Unsafe::DotSegment => "the request path is not accepted: it has a . or .. segment",
            Unsafe::EmptySegment => "the request path is not accepted: it has an empty segment (//)",
        }
    }
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
        routes.push(route(r.into_inner(), span, &at)?);
    }
    Ok(Routes {
        routes,
        unmatched,
        strip_credential: raw.strip_credential.unwrap_or(true),
    })
}

fn route(
    r: RawRoute,
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
    let _ = span;
    Ok(Route {
        methods,
        segments,
        template,
        kind,
        id_segment,
        account_segment,
        level,
        scope,
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
                    account: account.map(|a| part_of(&path, a)),
                });
            }
        }
        Match::Unmatched
    }
}

/// `path[range]`, borrowed from the request when `path` is.
fn part_of<'p>(path: &Cow<'p, str>, range: Range<usize>) -> Cow<'p, str> {
    match path {
        Cow::Borrowed(p) => Cow::Borrowed(&p[range]),
        Cow::Owned(p) => Cow::Owned(p[range].to_string()),
    }
}

/// The request path as routes see it: without the query string, the
/// leading `/` and one trailing `/`, unreserved characters percent-decoded
/// (owned only then); or why it is [`Unsafe`].
pub fn normalise(path: &str) -> Result<Cow<'_, str>, Unsafe> {
    // A fragment is never sent: refused wherever it is, query included.
    if path.contains('#') {
        return Err(Unsafe::Fragment);
    }
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path.len() > PATH_MAX {
        return Err(Unsafe::TooLong);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Unsafe::NotAbsolute);
    };
    if path.contains("//") {
        return Err(Unsafe::EmptySegment);
    }
    // One trailing slash: the same route as without it. With `//` refused,
    // no segment is empty now (the root path has none).
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let b = rest.as_bytes();
    let mut encoded = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b';' => return Err(Unsafe::Semicolon),
            b'\\' => return Err(Unsafe::Backslash),
            b'%' => {
                if decode_unreserved(b.get(i + 1..i + 3)).is_none() {
                    return Err(Unsafe::Encoding);
                }
                encoded = true;
                i += 2;
            }
            _ => {}
        }
        i += 1;
    }
    let rest = if encoded {
        let mut out = String::with_capacity(rest.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' => {
                    if let Some(c) = decode_unreserved(b.get(i + 1..i + 3)) {
                        out.push(char::from(c));
                    }
                    i += 3;
                }
                _ => {
                    // Copy the run up to the next `%` whole (it may hold
                    // multi-byte characters).
                    let end = b[i..]
                        .iter()
                        .position(|&c| c == b'%')
                        .map_or(b.len(), |n| i + n);
                    out.push_str(&rest[i..end]);
                    i = end;
                }
            }
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(rest)
    };
    if !rest.is_empty() && rest.split('/').any(|s| s == "." || s == "..") {
        return Err(Unsafe::DotSegment);
    }
    Ok(rest)
}

/// The character `%XY` encodes, if `hex` is two hex digits encoding an RFC
/// 3986 unreserved character (ALPHA, DIGIT, `-`, `.`, `_`, `~`).
fn decode_unreserved(hex: Option<&[u8]>) -> Option<u8> {
    let hex = hex?;
    let digit = |c: u8| char::from(c).to_digit(16);
    let c = u8::try_from(digit(*hex.first()?)? * 16 + digit(*hex.get(1)?)?).ok()?;
    (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')).then_some(c)
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
mod tests {
    use super::*;

    const FILE: &str = r#"
unmatched = "deny"

[[routes]]
methods = ["GET"]
path = "/api/accounts/{account_id}/projects/{project_id}/**"
resource = "project"
id = "project_id"
account = "account_id"

[[routes]]
path = "/api/send/{domain}"
resource = "domain"
id = "domain"
scope = "email"
level = "admin"

[[routes]]
path = "/api/accounts/{account_id}"
resource = "account"
id = "account_id"
"#;

    #[test]
    fn first_matching_route_decides() {
        let r = parse("routes.toml", FILE).expect("valid");
        assert_eq!(r.len(), 3);
        let Match::Route(n) = r.find("GET", "/api/accounts/1/projects/p1/messages/9?x=1") else {
            panic!("no match")
        };
        assert_eq!(
            (n.kind, &*n.id, n.level, n.account.as_deref()),
            (Kind::Project, "p1", Level::Viewer, Some("1"))
        );
        // ** matches an empty rest too.
        assert!(matches!(
            r.find("GET", "/api/accounts/1/projects/p1"),
            Match::Route(_)
        ));
        // Method filter: POST falls through to no route.
        assert_eq!(
            r.find("POST", "/api/accounts/1/projects/p1"),
            Match::Unmatched
        );
        let Match::Route(n) = r.find("POST", "/api/send/example.com") else {
            panic!()
        };
        assert_eq!(
            (n.kind, &*n.id, n.level, n.scope),
            (Kind::Domain, "example.com", Level::Admin, "email")
        );
        // Level by method when the route does not fix it.
        let Match::Route(n) = r.find("DELETE", "/api/accounts/7") else {
            panic!()
        };
        assert_eq!(n.level, Level::Admin);
        let Match::Route(n) = r.find("HEAD", "/api/accounts/7") else {
            panic!()
        };
        assert_eq!(n.level, Level::Viewer);
        assert_eq!(r.find("GET", "/api/accounts/7/other"), Match::Unmatched);
        assert_eq!(r.find("GET", "/"), Match::Unmatched);
    }

    #[test]
    fn unsafe_paths_are_never_matched() {
        let r = parse("routes.toml", FILE).expect("valid");
        for (p, why) in [
            ("/api/accounts/1/projects/p1/../p2", Unsafe::DotSegment),
            ("/api/accounts/1/projects/./p1", Unsafe::DotSegment),
            ("/api/send/..", Unsafe::DotSegment),
            ("/api/send/./", Unsafe::DotSegment),
            ("/api/send//example.com", Unsafe::EmptySegment),
            ("//api/send/example.com", Unsafe::EmptySegment),
            ("/api/send/example.com//", Unsafe::EmptySegment),
            ("/api/send/example.com%2F..", Unsafe::Encoding),
            ("/api/send/%2e%2e", Unsafe::DotSegment),
            ("/api/send/.%2E", Unsafe::DotSegment),
            ("/api/send/%2e/x", Unsafe::DotSegment),
            ("/api/send/%252e%252e", Unsafe::Encoding),
            ("/api/send/a%5Cb", Unsafe::Encoding),
            ("/api/send/a%3Bb", Unsafe::Encoding),
            ("/api/send/a%00", Unsafe::Encoding),
            ("/api/send/a%20b", Unsafe::Encoding),
            ("/api/send/%C3%A9", Unsafe::Encoding),
            ("/api/send/a%", Unsafe::Encoding),
            ("/api/send/a%4", Unsafe::Encoding),
            ("/api/send/a%zz", Unsafe::Encoding),
            ("/api/send/a%+1", Unsafe::Encoding),
            ("/api/send/a\\b", Unsafe::Backslash),
            ("/api/send/example.com;x", Unsafe::Semicolon),
            (
                "/api/accounts/1/projects/p1/..;/..;/users",
                Unsafe::Semicolon,
            ),
            ("/api/send/example.com#x", Unsafe::Fragment),
            ("/api/send/example.com?q=1#x", Unsafe::Fragment),
            ("api/send/x", Unsafe::NotAbsolute),
            ("", Unsafe::NotAbsolute),
        ] {
            assert_eq!(r.find("POST", p), Match::Unsafe(why), "{p}");
        }
        let long = format!("/api/send/{}", "a".repeat(PATH_MAX));
        assert_eq!(r.find("POST", &long), Match::Unsafe(Unsafe::TooLong));
        // A parameter longer than any resource id matches nothing.
        let long_id = format!("/api/send/{}", "a".repeat(101));
        assert_eq!(r.find("POST", &long_id), Match::Unmatched);
        // The query string is not judged.
        assert!(matches!(
            r.find("POST", "/api/send/example.com?a=..;%25\\//"),
            Match::Route(_)
        ));
    }

    #[test]
    fn methods_are_upper_case_tokens() {
        let r = parse("routes.toml", FILE).expect("valid");
        for m in [
            "post", "Post", "", "PO ST", "POST ", "GET\n", "M-SEARCH", "GÉT",
        ] {
            assert_eq!(
                r.find(m, "/api/send/example.com"),
                Match::Unsafe(Unsafe::Method),
                "{m:?}"
            );
        }
        // An upper-case method no route names is unmatched, not unsafe.
        assert_eq!(r.find("PROPFIND", "/api/accounts/1/x"), Match::Unmatched);
        // Route methods are stored upper-case whatever the file says.
        let r = parse(
            "r.toml",
            "[[routes]]\nmethods = [\"post\"]\npath = \"/a/{x}\"\nresource = \"domain\"\nid = \"x\"\n",
        )
        .expect("valid");
        assert!(matches!(r.find("POST", "/a/b"), Match::Route(_)));
        assert_eq!(r.find("post", "/a/b"), Match::Unsafe(Unsafe::Method));
    }

    #[test]
    fn a_trailing_slash_matches_as_without_it() {
        let r = parse("routes.toml", FILE).expect("valid");
        for p in [
            "/api/send/example.com",
            "/api/send/example.com/",
            "/api/send/example.com/?x=1",
        ] {
            let Match::Route(n) = r.find("POST", p) else {
                panic!("{p}: no match")
            };
            assert_eq!((n.kind, &*n.id), (Kind::Domain, "example.com"), "{p}");
        }
        let Match::Route(n) = r.find("GET", "/api/accounts/1/projects/p1/") else {
            panic!("no match")
        };
        assert_eq!(&*n.id, "p1");
        assert_eq!(r.find("GET", "/"), Match::Unmatched);
        assert_eq!(r.find("GET", "/?x"), Match::Unmatched);
    }

    #[test]
    fn literals_match_any_case_and_ids_keep_theirs() {
        let r = parse("routes.toml", FILE).expect("valid");
        let Match::Route(n) = r.find("POST", "/API/Send/Example.COM") else {
            panic!("no match")
        };
        assert_eq!((n.kind, &*n.id), (Kind::Domain, "Example.COM"));
        let Match::Route(n) = r.find("GET", "/api/ACCOUNTS/1/projectS/P1/x") else {
            panic!("no match")
        };
        assert_eq!((&*n.id, n.account.as_deref()), ("P1", Some("1")));
    }

    #[test]
    fn unreserved_percent_encoding_is_decoded_and_borrowed_otherwise() {
        let r = parse("routes.toml", FILE).expect("valid");
        let Match::Route(n) = r.find("POST", "/api/%73%65nd/ex%61mple%2Ecom") else {
            panic!("no match")
        };
        assert_eq!(&*n.id, "example.com");
        assert!(matches!(n.id, Cow::Owned(_)));
        let Match::Route(n) = r.find("GET", "/api/accounts/%31/projects/p%2D1%5F%7e/x") else {
            panic!("no match")
        };
        assert_eq!((&*n.id, n.account.as_deref()), ("p-1_~", Some("1")));
        // No `%`: the ids are slices of the request's path.
        let path = "/api/accounts/1/projects/p1/x";
        let Match::Route(n) = r.find("GET", path) else {
            panic!("no match")
        };
        assert!(matches!(n.id, Cow::Borrowed(_)));
        assert!(matches!(n.account, Some(Cow::Borrowed(_))));
        assert_eq!(normalise("/a/b/?q"), Ok(Cow::Borrowed("a/b")));
        assert_eq!(normalise("/a/%62c"), Ok(Cow::Owned("a/bc".into())));
        assert_eq!(normalise("/é/%41"), Ok(Cow::Owned("é/A".into())));
    }

    #[test]
    fn errors_point_to_the_line() {
        let cases = [
            ("[[routes]]\npath = \"/a/{x}\"\nresource = \"planet\"\nid = \"x\"\n", 3, "resource must be"),
            ("[[routes]]\npath = \"/a/{x}\"\nresource = \"project\"\nid = \"y\"\n", 4, "no parameter {y}"),
            ("[[routes]]\npath = \"a\"\nresource = \"project\"\nid = \"x\"\n", 2, "must start with /"),
            ("[[routes]]\npath = \"/a/**/b\"\nresource = \"project\"\nid = \"x\"\n", 2, "last segment"),
            ("[[routes]]\npath = \"/a%2Fb/{x}\"\nresource = \"project\"\nid = \"x\"\n", 2, "cannot hold"),
            ("[[routes]]\npath = \"/a;b/{x}\"\nresource = \"project\"\nid = \"x\"\n", 2, "cannot hold"),
            ("[[routes]]\npath = \"/a/{x}/{x}\"\nresource = \"project\"\nid = \"x\"\n", 2, "twice"),
            ("\n\n[[routes]]\npath = \"/a/{x}\"\nresource = \"project\"\nid = \"x\"\nlevel = \"owner\"\n", 7, "level must be"),
            ("[[routes]]\npath = \"/a/{x}\"\nresource = \"project\"\nid = \"x\"\nscope = \"fax\"\n", 5, "unknown scope"),
            ("[[routes]]\npath = \"/a/{x}\"\nresource = \"project\"\nid = \"x\"\nmethods = [\"FETCH\"]\n", 5, "unknown HTTP method"),
            ("[[routes]]\npath = \"/a/{x}\"\nresource = \"project\"\nid = \"x\"\ncolour = 1\n", 5, "unknown field"),
            ("unmatched = \"maybe\"\n", 1, "unmatched must be"),
            ("[[routes]]\npath = \"/a/{x}\"\n", 1, "missing field"),
            ("[[routes\n", 1, ""),
        ];
        for (text, line, want) in cases {
            let e = parse("r.toml", text).expect_err(text);
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.to_string().contains(want), "{text}: {e}");
            assert!(e.to_string().starts_with(&format!("r.toml:{line}:")), "{e}");
        }
    }

    #[test]
    fn an_empty_file_denies_everything() {
        let r = parse("r.toml", "").expect("valid");
        assert!(r.is_empty());
        assert_eq!(r.unmatched, Unmatched::Deny);
        assert!(r.strip_credential);
        assert_eq!(r.find("GET", "/x"), Match::Unmatched);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, failure_persistence: None, ..Default::default() })]

        /// Any text: a routes file or an error that points inside it.
        #[test]
        fn parse_never_panics(text in r#"(\[\[routes\]\]\n|path = "[/a-z{}*]{0,12}"\n|resource = "[a-z]{0,8}"\n|id = "[a-z{}]{0,4}"\n|level = "[a-z]{0,6}"\n|methods = \["[A-Z]{0,6}"\]\n|unmatched = "[a-z]{0,5}"\n|\PC{0,8}\n){0,12}"#) {
            match parse("f.toml", &text) {
                Ok(r) => { let _ = r.find("GET", "/a/b"); }
                Err(e) => {
                    proptest::prop_assert!(e.line >= 1 && e.line <= text.lines().count() + 1, "{e}");
                    proptest::prop_assert!(e.column >= 1);
                }
            }
        }

        /// Any request: a route whose id is one of the path's segments, or
        /// no route, never a panic.
        #[test]
        fn find_never_panics(method in "[A-Z]{0,7}", path in r"(/[a-z0-9.%{}\\]{0,6}){0,8}(\?\PC{0,6})?") {
            let r = parse("routes.toml", FILE).expect("valid");
            if let Match::Route(n) = r.find(&method, &path) {
                let with_query = format!("{}?", n.id);
                let found = path.split('/').any(|s| s == n.id || s.starts_with(&with_query));
                proptest::prop_assert!(found || path.contains('%'), "id {} not in {}", n.id, path);
            }
        }
    }
}
