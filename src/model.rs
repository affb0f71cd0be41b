//! The domain model: resource kinds, access levels, grants, scopes, and the
//! validation of names and ids that every surface shares.

use std::fmt;

use crate::error::{Error, Result};
use crate::pb::v1 as pb;

mod domain;

pub use domain::{canonical_domain, canonical_host, domain_lookup_key, NotHostName};

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

/// The last 4 characters of a token, shown to recognise it; in place (a
/// token is ASCII, so 4 bytes). Text of another shape, which keyward never
/// writes, keeps its last 4 bytes that start a character.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Last4([u8; 4]);

impl Default for Last4 {
    fn default() -> Self {
        Last4([PAD; 4])
    }
}

/// What fills a [`Last4`] after its characters: a byte no UTF-8 text holds
/// (so a NUL, which a stored record may hold, is kept as it is).
const PAD: u8 = 0xFF;

impl Last4 {
    /// The characters.
    pub fn as_str(&self) -> &str {
        let n = self.0.iter().position(|&b| b == PAD).unwrap_or(4);
        // Cut from a `&str` at a character boundary: valid UTF-8.
        std::str::from_utf8(&self.0[..n]).unwrap_or_default()
    }
}

impl From<&str> for Last4 {
    fn from(s: &str) -> Self {
        let mut start = s.len().saturating_sub(4);
        while !s.is_char_boundary(start) {
            start += 1;
        }
        let mut bytes = [PAD; 4];
        let tail = &s.as_bytes()[start..];
        bytes[..tail.len()].copy_from_slice(tail);
        Last4(bytes)
    }
}

impl fmt::Display for Last4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Last4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A resource id: a [`SmallStr`].
pub type ResourceId = SmallStr;

/// A string kept inline when short. Resource ids of up to 22 bytes (nearly
/// all: numbers, project slugs, most domains) are stored inline, so that
/// checking a grant reads no other allocation, and a token's short texts
/// (name, creator, last 4) cost no allocation of their own; longer ones
/// live on the heap.
#[derive(Clone)]
pub enum SmallStr {
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

impl SmallStr {
    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            SmallStr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            SmallStr::Heap(s) => s.as_bytes(),
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        match self {
            // Inline bytes always come from a `&str` cut at its end, so they
            // are valid UTF-8; the fallback is unreachable.
            SmallStr::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            SmallStr::Heap(s) => s,
        }
    }
}

impl From<&str> for SmallStr {
    fn from(s: &str) -> Self {
        if s.len() <= 22 {
            let mut bytes = [0u8; 22];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            #[expect(clippy::cast_possible_truncation, reason = "at most 22 bytes here")]
            let len = s.len() as u8;
            SmallStr::Inline { len, bytes }
        } else {
            SmallStr::Heap(s.into())
        }
    }
}

impl From<String> for SmallStr {
    fn from(s: String) -> Self {
        s.as_str().into()
    }
}

impl From<Box<str>> for SmallStr {
    fn from(s: Box<str>) -> Self {
        (*s).into()
    }
}

impl std::ops::Deref for SmallStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for SmallStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for SmallStr {}

impl std::hash::Hash for SmallStr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialOrd for SmallStr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SmallStr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for SmallStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SmallStr {
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

mod intern;
pub use intern::Rights;
pub mod limits;
mod policy;
pub use policy::Policy;
mod rate;
pub use rate::{
    rate_limits_from_wire, rate_limits_to_wire, valid_rate_name, Limits, RATE_NAME_MAX,
};

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
mod tests;
