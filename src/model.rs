//! The domain model: resource kinds, access levels, grants, scopes, and the
//! validation of names and ids that every surface shares.

use std::borrow::Cow;
use std::fmt;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

use crate::error::{Error, Result};
use crate::pb::v1 as pb;

/// The kind of a resource. Tree: account ⊃ project ⊃ sandbox; account ⊃ domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The account itself; id = account id in decimal.
    Account,
    /// A project of an account.
    Project,
    /// A sandbox inside a project.
    Sandbox,
    /// A sending domain of an account.
    Domain,
}

impl Kind {
    /// All kinds, in wire order.
    pub const ALL: [Kind; 4] = [Kind::Account, Kind::Project, Kind::Sandbox, Kind::Domain];

    /// From the wire enum number; `None` for unspecified or unknown numbers.
    pub fn from_wire(n: i32) -> Option<Kind> {
        match pb::ResourceType::try_from(n).ok()? {
            pb::ResourceType::Unspecified => None,
            pb::ResourceType::Account => Some(Kind::Account),
            pb::ResourceType::Project => Some(Kind::Project),
            pb::ResourceType::Sandbox => Some(Kind::Sandbox),
            pb::ResourceType::Domain => Some(Kind::Domain),
        }
    }

    /// The wire enum number.
    pub fn to_wire(self) -> i32 {
        (match self {
            Kind::Account => pb::ResourceType::Account,
            Kind::Project => pb::ResourceType::Project,
            Kind::Sandbox => pb::ResourceType::Sandbox,
            Kind::Domain => pb::ResourceType::Domain,
        }) as i32
    }

    /// Index into per-kind tables.
    pub fn slot(self) -> usize {
        self as usize
    }

    /// Lower-case name, as in the Mailtrap API (`account`, `project`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Account => "account",
            Kind::Project => "project",
            Kind::Sandbox => "sandbox",
            Kind::Domain => "domain",
        }
    }
}

/// How much a grant or scope allows. Ordered: `Viewer < Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Read only (10).
    Viewer,
    /// Read and write (100).
    Admin,
}

impl Level {
    /// From the wire enum number; `None` for unspecified or unknown numbers.
    pub fn from_wire(n: i32) -> Option<Level> {
        match n {
            10 => Some(Level::Viewer),
            100 => Some(Level::Admin),
            _ => None,
        }
    }

    /// The wire enum number (10 or 100).
    pub fn to_wire(self) -> i32 {
        match self {
            Level::Viewer => 10,
            Level::Admin => 100,
        }
    }
}

/// A resource id. Ids of up to 22 bytes (nearly all: numbers, project
/// slugs, most domains) are stored inline, so that checking a grant reads no
/// other allocation; longer ones live on the heap.
#[derive(Clone)]
pub enum ResourceId {
    /// Up to 22 bytes, in place.
    Inline {
        /// Bytes used.
        len: u8,
        /// The UTF-8 bytes.
        bytes: [u8; 22],
    },
    /// Longer ids.
    Heap(Box<str>),
}

impl ResourceId {
    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ResourceId::Inline { len, bytes } => &bytes[..usize::from(*len)],
            ResourceId::Heap(s) => s.as_bytes(),
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        match self {
            // Inline bytes always come from a `&str` cut at its end, so they
            // are valid UTF-8; the fallback is unreachable.
            ResourceId::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            ResourceId::Heap(s) => s,
        }
    }
}

impl From<&str> for ResourceId {
    fn from(s: &str) -> Self {
        if s.len() <= 22 {
            let mut bytes = [0u8; 22];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            ResourceId::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            ResourceId::Heap(s.into())
        }
    }
}

impl From<String> for ResourceId {
    fn from(s: String) -> Self {
        s.as_str().into()
    }
}

impl From<Box<str>> for ResourceId {
    fn from(s: Box<str>) -> Self {
        (*s).into()
    }
}

impl std::ops::Deref for ResourceId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ResourceId {}

impl std::hash::Hash for ResourceId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialOrd for ResourceId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ResourceId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource inside an account: kind and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// The kind.
    pub kind: Kind,
    /// The id (account resources: the account id in decimal).
    pub id: ResourceId,
}

impl ResourceKey {
    /// A key from parts.
    pub fn new(kind: Kind, id: impl Into<ResourceId>) -> Self {
        Self {
            kind,
            id: id.into(),
        }
    }

    /// The account resource of `account_id`.
    pub fn account(account_id: u64) -> Self {
        Self::new(Kind::Account, account_id.to_string())
    }

    /// To the wire message.
    pub fn to_wire(&self) -> pb::ResourceRef {
        pb::ResourceRef {
            r#type: self.kind.to_wire(),
            id: self.id.to_string(),
        }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.id)
    }
}

/// A permission: a resource (and its descendants) at a level.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    /// The resource granted on.
    pub resource: ResourceKey,
    /// The level granted.
    pub level: Level,
}

impl Grant {
    /// To the wire message.
    pub fn to_wire(&self) -> pb::Grant {
        pb::Grant {
            resource: Some(self.resource.to_wire()),
            level: self.level.to_wire(),
        }
    }
}

/// The feature scopes a token can be restricted to (MailerSend's features).
pub const SCOPE_NAMES: [&str; 15] = [
    "email",
    "domains",
    "activity",
    "analytics",
    "tokens",
    "webhooks",
    "templates",
    "suppressions",
    "sms",
    "email_verification",
    "inbound",
    "recipients",
    "sender_identities",
    "smtp_users",
    "users",
];

/// A feature scope held at a level. `name` indexes [`SCOPE_NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScopeGrant {
    /// Index into [`SCOPE_NAMES`].
    pub name: u8,
    /// The level held.
    pub level: Level,
}

impl ScopeGrant {
    /// The scope's name.
    pub fn name(&self) -> &'static str {
        SCOPE_NAMES[usize::from(self.name)]
    }

    /// To the wire message.
    pub fn to_wire(&self) -> pb::Scope {
        pb::Scope {
            name: self.name().to_string(),
            level: self.level.to_wire(),
        }
    }
}

/// The index of a scope name, if it is one.
pub fn scope_index(name: &str) -> Option<u8> {
    SCOPE_NAMES
        .iter()
        .position(|s| *s == name)
        .and_then(|i| u8::try_from(i).ok())
}

/// Limits on every input.
pub mod limits {
    /// Longest display name, in characters.
    pub const NAME_MAX: usize = 100;
    /// Longest resource id, in bytes.
    pub const RESOURCE_ID_MAX: usize = 100;
    /// Most grants on one token.
    pub const GRANTS_MAX: usize = 100;
    /// Most checks in one AuthorizeBatch.
    pub const BATCH_MAX: usize = 1000;
    /// Largest page of a list call.
    pub const PAGE_MAX: u32 = 1000;
    /// Page size when none is asked for.
    pub const PAGE_DEFAULT: u32 = 100;
    /// Longest token string accepted anywhere, in bytes.
    pub const TOKEN_MAX: usize = 128;
    /// Farthest allowed expiry: 5 years (of 365.25 days), in milliseconds.
    pub const EXPIRY_MAX_MS: i64 = 1826 * 24 * 3600 * 1000;
}

/// Checks a display name: 1..=100 characters, no control characters,
/// not only whitespace.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if name.chars().count() > limits::NAME_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {} characters", limits::NAME_MAX),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Checks an opaque resource id (account, project, sandbox): 1..=100 bytes
/// of `A-Z a-z 0-9 . _ ~ : @ -`, compared byte for byte (case matters).
/// DOMAIN ids are host names instead: see [`canonical_host`].
pub fn validate_resource_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if id.len() > limits::RESOURCE_ID_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {} bytes", limits::RESOURCE_ID_MAX),
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._~:@-".contains(&b))
    {
        return Err(Error::invalid(
            field,
            "may contain only letters, digits and . _ ~ : @ -",
        ));
    }
    Ok(())
}

/// Why a DOMAIN id is not a host name. Small and `Copy`: Authorize turns
/// it into a denial without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotHostName {
    /// Nothing (or only the root dot).
    #[error("must not be empty")]
    Empty,
    /// Longer than an id may be, as given or as A-labels.
    #[error(
        "must be at most {} bytes (in IDNA A-label form)",
        limits::RESOURCE_ID_MAX
    )]
    TooLong,
    /// `host:port`: a port is never part of a domain.
    #[error("must be a host name without a port")]
    Port,
    /// An IPv4 or IPv6 address (a top label that is a number, or `[...]`).
    #[error("must be a host name, not an IP address")]
    IpAddress,
    /// Anything else UTS 46 (STD3 rules) or host-name syntax refuses.
    #[error(
        "must be a host name: dot-separated labels of 1..63 letters, digits and hyphens \
         (not first or last), or their Unicode (IDNA) form"
    )]
    Syntax,
}

/// Longest label of a host name, in bytes (RFC 1035).
const LABEL_MAX: usize = 63;

/// Whether a host name's top label reads as a number (`1`, `0x7f`), as an
/// IPv4 address does (WHATWG URL's "ends in a number"; RFC 3696 §2: a top
/// label is never all digits).
fn ends_in_a_number(name: &[u8]) -> bool {
    let top = name.rsplit(|&b| b == b'.').next().unwrap_or_default();
    top.iter().all(u8::is_ascii_digit)
        || top
            .strip_prefix(b"0x")
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
}

/// The shape of a canonical DOMAIN id: 1..=100 bytes of dot-separated
/// labels of 1..=63 `a-z 0-9 -`, no hyphen first or last in a label, no
/// trailing dot, a top label that is not a number. With `a_labels` false,
/// a label starting `xn--` fails too (only UTS 46 can tell a valid A-label).
/// One pass over the bytes: Authorize runs it on every DOMAIN check.
fn has_canonical_shape(name: &[u8], a_labels: bool) -> bool {
    if name.is_empty() || name.len() > limits::RESOURCE_ID_MAX {
        return false;
    }
    // Whether the label name[start..end] is whole: 1..=63 bytes, no hyphen
    // last (a hyphen first is refused as it is read), not an `xn--` one
    // unless allowed.
    let label_ok = |start: usize, end: usize| {
        (1..=LABEL_MAX).contains(&(end - start))
            && name[end - 1] != b'-'
            && (a_labels || !name[start..end].starts_with(b"xn--"))
    };
    let mut start = 0;
    for (i, &b) in name.iter().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => {}
            b'-' if i > start => {}
            b'.' if i > start && label_ok(start, i) => start = i + 1,
            _ => return false,
        }
    }
    start < name.len() && label_ok(start, name.len()) && !ends_in_a_number(&name[start..])
}

/// The canonical spelling of a DOMAIN id: lower case, IDNA A-labels per
/// UTS 46 (non-transitional, STD3 rules, hyphens not first or last in a
/// label, DNS lengths), one trailing dot dropped, no port, not an IP
/// address, at most 100 bytes. Every spelling of a domain (`EXAMPLE.com`,
/// `example.com.`, `bücher.example` / `xn--bcher-kva.example`) gives the
/// same answer, and the answer is its own canonical spelling.
///
/// Input that is already canonical (nearly all of Authorize's) is
/// recognised by one pass over its bytes and borrowed back: no UTS 46
/// processing, no allocation.
pub fn canonical_host(id: &str) -> std::result::Result<Cow<'_, str>, NotHostName> {
    if has_canonical_shape(id.as_bytes(), false) {
        return Ok(Cow::Borrowed(id));
    }
    canonical_host_slow(id)
}

/// [`canonical_host`] for input that is not canonical already.
#[cold]
fn canonical_host_slow(id: &str) -> std::result::Result<Cow<'_, str>, NotHostName> {
    if id.is_empty() {
        return Err(NotHostName::Empty);
    }
    // Bounded before any Unicode work.
    if id.len() > limits::RESOURCE_ID_MAX {
        return Err(NotHostName::TooLong);
    }
    if id.starts_with('[') {
        return Err(NotHostName::IpAddress);
    }
    match id.bytes().filter(|&b| b == b':').count() {
        0 => {}
        1 => return Err(NotHostName::Port),
        _ => return Err(NotHostName::IpAddress),
    }
    let mut ascii = Uts46::new()
        .to_ascii(
            id.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::VerifyAllowRootDot,
        )
        .map_err(|_| NotHostName::Syntax)?;
    // One trailing (root) dot names the same domain; UTS 46 has already
    // refused two, and mapped `。` and `．` to `.`.
    match &mut ascii {
        Cow::Borrowed(s) => *s = s.strip_suffix('.').unwrap_or(s),
        Cow::Owned(s) => {
            if s.ends_with('.') {
                s.pop();
            }
        }
    }
    if ascii.is_empty() {
        return Err(NotHostName::Empty);
    }
    if ascii.len() > limits::RESOURCE_ID_MAX {
        return Err(NotHostName::TooLong);
    }
    if ends_in_a_number(ascii.as_bytes()) {
        return Err(NotHostName::IpAddress);
    }
    // UTS 46 with these flags yields this shape; checked rather than
    // assumed, since the index relies on it.
    if !has_canonical_shape(ascii.as_bytes(), true) {
        return Err(NotHostName::Syntax);
    }
    Ok(ascii)
}

/// The id Authorize looks a DOMAIN up under: its canonical spelling, or
/// the empty id (under which nothing is registered) when it is not a host
/// name. Input already shaped like a canonical id is used as it is, `xn--`
/// labels included, without UTS 46's validation of those labels (about a
/// microsecond): an invalid A-label is never registered (every stored id
/// passed [`canonical_host`], and a store holding another refuses to
/// start), so it is not found, exactly as the empty id would not be.
pub fn domain_lookup_key(id: &str) -> Cow<'_, str> {
    if has_canonical_shape(id.as_bytes(), true) {
        return Cow::Borrowed(id);
    }
    canonical_host_slow(id).unwrap_or_default()
}

/// [`canonical_host`] for a request field: what is not a host name is
/// INVALID_ARGUMENT naming `field`.
pub fn canonical_domain<'a>(field: &str, id: &'a str) -> Result<Cow<'a, str>> {
    canonical_host(id).map_err(|e| Error::invalid(field, e.to_string()))
}

/// Decodes and checks a wire resource reference. A DOMAIN id comes back in
/// its canonical spelling ([`canonical_host`]); the other ids are opaque
/// and kept as given ([`validate_resource_id`]).
pub fn resource_from_wire(field: &str, r: Option<&pb::ResourceRef>) -> Result<ResourceKey> {
    let r = r.ok_or_else(|| Error::invalid(field, "is required"))?;
    let kind = Kind::from_wire(r.r#type).ok_or_else(|| {
        Error::invalid(
            format!("{field}.type"),
            "must be ACCOUNT, PROJECT, SANDBOX or DOMAIN",
        )
    })?;
    let field = format!("{field}.id");
    if kind == Kind::Domain {
        let id = canonical_domain(&field, &r.id)?;
        return Ok(ResourceKey::new(kind, &*id));
    }
    validate_resource_id(&field, &r.id)?;
    Ok(ResourceKey::new(kind, r.id.as_str()))
}

/// Decodes and checks a wire access level.
pub fn level_from_wire(field: &str, n: i32) -> Result<Level> {
    Level::from_wire(n).ok_or_else(|| Error::invalid(field, "must be VIEWER (10) or ADMIN (100)"))
}

/// Decodes and checks a list of grants: 1..=100, no resource twice.
pub fn grants_from_wire(field: &str, grants: &[pb::Grant]) -> Result<Vec<Grant>> {
    if grants.is_empty() {
        return Err(Error::invalid(field, "at least one grant is required"));
    }
    if grants.len() > limits::GRANTS_MAX {
        return Err(Error::invalid(
            field,
            format!("at most {} grants", limits::GRANTS_MAX),
        ));
    }
    let mut out: Vec<Grant> = Vec::with_capacity(grants.len());
    for (i, g) in grants.iter().enumerate() {
        let resource = resource_from_wire(&format!("{field}[{i}].resource"), g.resource.as_ref())?;
        let level = level_from_wire(&format!("{field}[{i}].level"), g.level)?;
        if out.iter().any(|o| o.resource == resource) {
            return Err(Error::invalid(
                format!("{field}[{i}].resource"),
                "resource is granted twice",
            ));
        }
        out.push(Grant { resource, level });
    }
    Ok(out)
}

/// Decodes and checks a list of scopes: known names, each once.
pub fn scopes_from_wire(field: &str, scopes: &[pb::Scope]) -> Result<Vec<ScopeGrant>> {
    if scopes.len() > SCOPE_NAMES.len() {
        return Err(Error::invalid(
            field,
            format!("at most {} scopes", SCOPE_NAMES.len()),
        ));
    }
    let mut out: Vec<ScopeGrant> = Vec::with_capacity(scopes.len());
    for (i, s) in scopes.iter().enumerate() {
        let name = scope_index(&s.name).ok_or_else(|| {
            Error::invalid(
                format!("{field}[{i}].name"),
                format!("unknown scope; known: {}", SCOPE_NAMES.join(", ")),
            )
        })?;
        let level = level_from_wire(&format!("{field}[{i}].level"), s.level)?;
        if out.iter().any(|o| o.name == name) {
            return Err(Error::invalid(
                format!("{field}[{i}].name"),
                "scope is listed twice",
            ));
        }
        out.push(ScopeGrant { name, level });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(validate_name("name", "ok name").is_ok());
        assert!(validate_name("name", "").is_err());
        assert!(validate_name("name", "   ").is_err());
        assert!(validate_name("name", &"é".repeat(100)).is_ok());
        assert!(validate_name("name", &"a".repeat(101)).is_err());
        assert!(validate_name("name", "a\nb").is_err());
    }

    #[test]
    fn resource_ids_use_a_safe_alphabet() {
        assert!(validate_resource_id("id", "example.com").is_ok());
        assert!(validate_resource_id("id", "12345").is_ok());
        assert!(validate_resource_id("id", "a b").is_err());
        assert!(validate_resource_id("id", "").is_err());
        assert!(validate_resource_id("id", &"a".repeat(101)).is_err());
    }

    #[test]
    fn resource_ids_compare_the_same_inline_or_not() {
        for s in [
            "",
            "p",
            "example.com",
            &"x".repeat(22),
            &"y".repeat(23),
            &"z".repeat(100),
        ] {
            let id = ResourceId::from(s);
            assert_eq!(id.as_str(), s);
            assert_eq!(id, ResourceId::from(s.to_string()));
            assert_eq!(format!("{id}"), s);
        }
        assert_ne!(ResourceId::from("a"), ResourceId::from("ab"));
        assert!(ResourceId::from("a") < ResourceId::from("b"));
    }

    /// The canonical spelling, or the error.
    fn canon(id: &str) -> std::result::Result<String, NotHostName> {
        canonical_host(id).map(Cow::into_owned)
    }

    #[test]
    fn domains_have_one_canonical_spelling() {
        for (id, want) in [
            ("example.com", "example.com"),
            ("EXAMPLE.com", "example.com"),
            ("Example.Com", "example.com"),
            ("example.com.", "example.com"),
            ("EXAMPLE.COM.", "example.com"),
            ("ｅｘａｍｐｌｅ．ｃｏｍ", "example.com"),
            ("example。com", "example.com"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("BÜCHER.example", "xn--bcher-kva.example"),
            ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("faß.de", "xn--fa-hia.de"), // non-transitional: ß stays ß
            ("é.com", "xn--9ca.com"),
            ("e\u{301}.com", "xn--9ca.com"), // NFC: é in two code points
            ("💩.la", "xn--ls8h.la"),
            ("localhost", "localhost"),
            ("r3---sn-abc.example", "r3---sn-abc.example"),
            ("1.2.3.4.example", "1.2.3.4.example"),
            ("a-b.c0", "a-b.c0"),
            (
                &format!("{}.com", "a".repeat(63)),
                &format!("{}.com", "a".repeat(63)),
            ),
        ] {
            assert_eq!(canon(id).as_deref(), Ok(want), "{id:?}");
        }
        for (id, why) in [
            ("", NotHostName::Empty),
            (".", NotHostName::Syntax),
            ("example.com:25", NotHostName::Port),
            ("[::1]", NotHostName::IpAddress),
            ("::1", NotHostName::IpAddress),
            ("127.0.0.1", NotHostName::IpAddress),
            ("127.0.0.1.", NotHostName::IpAddress),
            ("0x7f.0x1", NotHostName::IpAddress),
            ("example.123", NotHostName::IpAddress),
            ("example.com..", NotHostName::Syntax),
            (".example.com", NotHostName::Syntax),
            ("a..b", NotHostName::Syntax),
            ("exa mple.com", NotHostName::Syntax),
            ("exa_mple.com", NotHostName::Syntax),
            ("user@example.com", NotHostName::Syntax),
            ("-example.com", NotHostName::Syntax),
            ("example-.com", NotHostName::Syntax),
            ("xn--zz.example", NotHostName::Syntax),
            ("xn--.example", NotHostName::Syntax),
            ("xn--abc-.example", NotHostName::Syntax), // an A-label of only ASCII
            ("a\u{200d}b.com", NotHostName::Syntax),   // a joiner out of context
            ("exa\u{0}mple.com", NotHostName::Syntax),
            (&format!("{}.com", "a".repeat(64)), NotHostName::Syntax),
            (&"a.".repeat(51), NotHostName::TooLong),
            (&"a".repeat(101), NotHostName::TooLong),
            // 95 bytes of Unicode in, 118 bytes of A-labels out.
            (
                "漢字仮名交.中文域名測.日本語文字.한국어도메.漢字仮名交.中文域名測",
                NotHostName::TooLong,
            ),
        ] {
            assert_eq!(canon(id), Err(why), "{id:?}");
        }
    }

    #[test]
    fn canonical_domains_are_borrowed_back() {
        for id in ["example.com", "xn--bcher-kva.example", "localhost"] {
            assert!(matches!(canonical_host(id), Ok(Cow::Borrowed(s)) if s == id));
        }
        assert!(matches!(canonical_host("EXAMPLE.com"), Ok(Cow::Owned(_))));
        // Authorize's key: canonical input (A-labels too) borrowed as is;
        // an invalid A-label is not looked up as anything registrable.
        for id in ["example.com", "xn--bcher-kva.example", "xn--zz.example"] {
            assert!(matches!(domain_lookup_key(id), Cow::Borrowed(s) if s == id));
        }
        assert!(canonical_host("xn--zz.example").is_err());
        assert_eq!(
            domain_lookup_key("Bücher.EXAMPLE."),
            "xn--bcher-kva.example"
        );
        assert_eq!(domain_lookup_key("example.com:25"), "");
    }

    #[test]
    fn domain_ids_are_canonical_and_field_errors_name_the_field() {
        let wire = |kind: pb::ResourceType, id: &str| pb::ResourceRef {
            r#type: kind as i32,
            id: id.into(),
        };
        let key = resource_from_wire("r", Some(&wire(pb::ResourceType::Domain, "Example.COM.")));
        assert_eq!(key.unwrap(), ResourceKey::new(Kind::Domain, "example.com"));
        match resource_from_wire("r", Some(&wire(pb::ResourceType::Domain, "example.com:25"))) {
            Err(Error::InvalidArgument(v)) => {
                assert_eq!(v[0].0, "r.id");
                assert!(v[0].1.contains("port"), "{v:?}");
            }
            other => panic!("{other:?}"),
        }
        // Project and sandbox ids stay opaque: case and `_` are kept.
        let key = resource_from_wire("r", Some(&wire(pb::ResourceType::Project, "My_Proj")));
        assert_eq!(key.unwrap(), ResourceKey::new(Kind::Project, "My_Proj"));
    }

    proptest::proptest! {
        /// Canonical is a fixed point, and every ASCII case variant (with
        /// or without one trailing dot) of a domain is the same domain.
        #[test]
        fn canonical_domains_are_idempotent_and_case_blind(
            id in "[a-zA-Z0-9.:_-]{0,40}|[a-zA-Z0-9üßÄéß.。-]{1,30}|(xn--)?[a-z0-9-]{1,20}(\\.[a-zA-Z]{1,10}){0,3}\\.?",
            flips in proptest::collection::vec(proptest::bool::ANY, 40),
        ) {
            // Authorize's lookup key is the canonical spelling, or an id
            // that no domain can be registered under.
            let key = domain_lookup_key(&id);
            match canonical_host(&id) {
                Ok(c) => proptest::prop_assert_eq!(&key, &c),
                Err(_) => proptest::prop_assert!(key.is_empty() || canonical_host(&key).is_err()),
            }
            if let Ok(c) = canonical_host(&id) {
                proptest::prop_assert!(matches!(canonical_host(&c), Ok(Cow::Borrowed(s)) if s == &*c));
                proptest::prop_assert!(has_canonical_shape(c.as_bytes(), true));
                let flipped: String = id
                    .chars()
                    .zip(flips.iter().cycle())
                    .map(|(ch, &up)| if up { ch.to_ascii_uppercase() } else { ch.to_ascii_lowercase() })
                    .collect();
                proptest::prop_assert_eq!(canonical_host(&flipped), Ok(c.clone()), "{}", flipped);
                if !id.ends_with('.') && !id.ends_with('。') {
                    let dotted = format!("{id}.");
                    proptest::prop_assert_eq!(canonical_host(&dotted).ok(), (dotted.len() <= limits::RESOURCE_ID_MAX).then_some(c));
                }
            } else {
                let upper = id.to_ascii_uppercase();
                proptest::prop_assert!(canonical_host(&upper).is_err(), "{} ok, {} not", upper, id);
            }
        }
    }

    #[test]
    fn levels_are_ordered_and_only_10_or_100() {
        assert!(Level::Viewer < Level::Admin);
        assert_eq!(Level::from_wire(0), None);
        assert_eq!(Level::from_wire(50), None);
        assert_eq!(Level::from_wire(100), Some(Level::Admin));
    }
}
