//! The CLI's argument syntaxes, pure: `TYPE:ID=LEVEL` (a grant or an
//! Authorize question), `TYPE:ID` (a resource), `NAME=LEVEL` (a scope),
//! durations ("12h", "30d", "0s") and times (RFC 3339, or a duration from
//! now). A bad one is a usage error (exit 2) naming what was expected; the
//! server still checks what it means (a registered resource, a known
//! scope).

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::model::{Kind, Level};
use crate::pb::v1 as pb;

/// A resource, `TYPE:ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceArg {
    /// Its type.
    pub kind: Kind,
    /// Its id (anything after the first `:`, not empty).
    pub id: String,
}

impl ResourceArg {
    /// The wire form.
    pub fn to_wire(&self) -> pb::ResourceRef {
        pb::ResourceRef {
            r#type: self.kind.to_wire(),
            id: self.id.clone(),
        }
    }
}

/// A grant, or an Authorize question: `TYPE:ID=LEVEL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantArg {
    /// The resource.
    pub resource: ResourceArg,
    /// The level.
    pub level: Level,
}

/// A scope, `NAME=LEVEL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeArg {
    /// The feature (the server knows the names).
    pub name: String,
    /// The level.
    pub level: Level,
}

/// A sending limit, `NAME=LIMIT/PERIOD` (e.g. `send=1000/1d`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitArg {
    /// The limit's name.
    pub name: String,
    /// Units per period.
    pub limit: u64,
    /// The period.
    pub period: Duration,
}

impl std::str::FromStr for RateLimitArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hint = "expected NAME=LIMIT/PERIOD, e.g. send=1000/1d";
        let (name, rest) = s.split_once('=').ok_or_else(|| format!("`{s}`: {hint}"))?;
        let (limit, period) = rest
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: {hint}"))?;
        if name.is_empty() {
            return Err(format!("`{s}`: the limit's name is empty ({hint})"));
        }
        let limit = limit
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: `{limit}` is not a whole number of units ({hint})"))?;
        Ok(RateLimitArg {
            name: name.to_string(),
            limit,
            period: duration(period).map_err(|e| format!("`{s}`: {e}"))?,
        })
    }
}

impl RateLimitArg {
    /// On the wire.
    pub fn to_wire(&self) -> crate::pb::v1::RateLimit {
        crate::pb::v1::RateLimit {
            name: self.name.clone(),
            limit: self.limit,
            period: Some(wire_duration(self.period)),
        }
    }
}

/// When a token stops working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// This long from now.
    In(Duration),
    /// At this time.
    At(SystemTime),
}

impl Expiry {
    /// The time it names, from `now`.
    pub fn at(self, now: SystemTime) -> SystemTime {
        match self {
            Expiry::In(d) => now + d,
            Expiry::At(t) => t,
        }
    }
}

/// A resource type: `account`, `project`, `sandbox`, `domain` (any case).
pub fn kind(s: &str) -> Result<Kind, String> {
    Kind::ALL
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("`{s}` is not a resource type: account, project, sandbox or domain"))
}

/// A level: `viewer` or `admin` (any case), or their numbers 10 and 100.
pub fn level(s: &str) -> Result<Level, String> {
    match s.to_ascii_lowercase().as_str() {
        "viewer" | "10" => Ok(Level::Viewer),
        "admin" | "100" => Ok(Level::Admin),
        _ => Err(format!("`{s}` is not a level: viewer or admin")),
    }
}

impl FromStr for ResourceArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (t, id) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}`: expected TYPE:ID, e.g. project:p1"))?;
        if id.is_empty() {
            return Err(format!("`{s}`: the id after `{t}:` is empty"));
        }
        Ok(ResourceArg {
            kind: kind(t)?,
            id: id.to_string(),
        })
    }
}

impl FromStr for GrantArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // Ids never hold `=`; they may hold `:` (project ids may), so the
        // type ends at the first `:` and the level starts after the last `=`.
        let (resource, lvl) = s.rsplit_once('=').ok_or_else(|| {
            format!("`{s}`: expected TYPE:ID=LEVEL, e.g. domain:example.com=admin")
        })?;
        Ok(GrantArg {
            resource: resource.parse()?,
            level: level(lvl)?,
        })
    }
}

impl FromStr for ScopeArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, lvl) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected NAME=LEVEL, e.g. email=admin"))?;
        if name.is_empty() {
            return Err(format!("`{s}`: the scope name is empty"));
        }
        Ok(ScopeArg {
            name: name.to_string(),
            level: level(lvl)?,
        })
    }
}

/// A duration: a number and a unit, as humantime reads them ("30s",
/// "12h", "30d", "1h 30m"), or a bare "0".
pub fn duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}): e.g. 30s, 12h, 30d"))
}

/// A time in RFC 3339 ("2030-01-01T00:00:00Z").
pub fn time(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("`{s}` is not an RFC 3339 time ({e}): e.g. 2030-01-01T00:00:00Z"))
}

/// A time: RFC 3339, or a duration from now ("13h").
pub fn time_or_in(s: &str) -> Result<SystemTime, String> {
    time(s).or_else(|_| {
        duration(s)
            .map(|d| SystemTime::now() + d)
            .map_err(|_| format!("`{s}`: expected an RFC 3339 time or a duration from now (13h)"))
    })
}

/// A wire timestamp of a time.
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

/// A wire duration.
pub fn wire_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
