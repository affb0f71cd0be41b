//! Sending limits as the wire and the store carry them: validated into
//! named [`Spec`]s for a [`Budget`], and back.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::pb::store::RateLimitRecord;
use crate::pb::v1 as pb;
use crate::ratelimit::{Budget, Spec, LIMITS_MAX, LIMIT_MAX, PERIOD_MAX_MS, PERIOD_MIN_MS};

/// Longest limit name.
pub const RATE_NAME_MAX: usize = 32;

/// A token's limits, validated: names (unique) and specs, by position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Names, 1..=32 of `[a-z0-9_-]`.
    pub names: Vec<Box<str>>,
    /// The limits.
    pub specs: Vec<Spec>,
}

impl Limits {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// A full budget for them (`None` when there are none), kept under
    /// `key` in a shared store.
    pub fn budget(&self, key: u64) -> Option<Arc<Budget>> {
        (!self.is_empty()).then(|| {
            Arc::new(
                Budget::new(&self.specs)
                    .with_names(self.names.clone())
                    .with_key(key),
            )
        })
    }

    /// As stored.
    pub fn to_records(&self) -> Vec<RateLimitRecord> {
        self.names
            .iter()
            .zip(&self.specs)
            .map(|(n, s)| RateLimitRecord {
                name: n.to_string(),
                limit: s.limit,
                period_ms: s.period_ms,
            })
            .collect()
    }

    /// From the store: records out of bounds are left out (a store is
    /// checked when written; a damaged record limits less, never more
    /// than it says, and never panics).
    pub fn from_records(records: &[RateLimitRecord]) -> Self {
        let mut out = Limits::default();
        for r in records.iter().take(LIMITS_MAX) {
            if (1..=LIMIT_MAX).contains(&r.limit)
                && (PERIOD_MIN_MS..=PERIOD_MAX_MS).contains(&r.period_ms)
            {
                out.names.push(r.name.as_str().into());
                out.specs.push(Spec {
                    limit: r.limit,
                    period_ms: r.period_ms,
                });
            }
        }
        out
    }
}

/// A budget's limits on the wire.
pub fn rate_limits_to_wire(budget: Option<&Budget>) -> Vec<pb::RateLimit> {
    let Some(b) = budget else { return Vec::new() };
    b.specs()
        .iter()
        .enumerate()
        .map(|(i, s)| pb::RateLimit {
            name: b.names().get(i).map(|n| n.to_string()).unwrap_or_default(),
            limit: s.limit,
            period: Some(crate::clock::wire_duration_ms(s.period_ms)),
        })
        .collect()
}

/// Whether `name` is a valid limit name.
pub fn valid_rate_name(name: &str) -> bool {
    (1..=RATE_NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Decodes and checks a token's limits: at most 8, names 1..32 of
/// `[a-z0-9_-]` and unique, limit 1..=1e12, period 1 s .. 31 days in whole
/// milliseconds. Errors name the field (`rate_limits[2].period`).
pub fn rate_limits_from_wire(field: &str, limits: &[pb::RateLimit]) -> Result<Limits> {
    if limits.len() > LIMITS_MAX {
        return Err(Error::invalid(
            field,
            format!("at most {LIMITS_MAX} limits"),
        ));
    }
    let mut out = Limits::default();
    for (i, l) in limits.iter().enumerate() {
        let at = |f: &str| format!("{field}[{i}].{f}");
        if !valid_rate_name(&l.name) {
            return Err(Error::invalid(
                at("name"),
                "must be 1..32 characters of a-z, 0-9, _ and -",
            ));
        }
        if out.names.iter().any(|n| **n == *l.name) {
            return Err(Error::invalid(at("name"), "limit name is listed twice"));
        }
        if !(1..=LIMIT_MAX).contains(&l.limit) {
            return Err(Error::invalid(at("limit"), "must be 1..=1000000000000"));
        }
        let period = l
            .period
            .as_ref()
            .ok_or_else(|| Error::invalid(at("period"), "is required"))?;
        let bad_period =
            || Error::invalid(at("period"), "must be 1s..31 days in whole milliseconds");
        if period.seconds < 0
            || period.nanos < 0
            || period.nanos >= 1_000_000_000
            || period.nanos % 1_000_000 != 0
            || period.seconds > PERIOD_MAX_MS / 1000
        {
            return Err(bad_period());
        }
        let ms = period.seconds * 1000 + i64::from(period.nanos / 1_000_000);
        if !(PERIOD_MIN_MS..=PERIOD_MAX_MS).contains(&ms) {
            return Err(bad_period());
        }
        out.names.push(l.name.as_str().into());
        out.specs.push(Spec {
            limit: l.limit,
            period_ms: ms,
        });
    }
    Ok(out)
}
