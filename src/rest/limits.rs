//! Sending limits in both facades' JSON, an extra field of a token:
//! `"rate_limits": [{"name": "per_minute", "limit": 100, "period_seconds": 60}]`
//! (`period_seconds` may carry milliseconds as a fraction, e.g. `1.5`).

use serde_json::{json, Value};

use super::{invalid, Problem};
use crate::pb::v1 as pb;

/// A token's limits as JSON.
pub fn to_json(limits: &[pb::RateLimit]) -> Value {
    limits
        .iter()
        .map(|l| {
            let ms = l
                .period
                .as_ref()
                .map_or(0, |d| d.seconds * 1000 + i64::from(d.nanos / 1_000_000));
            let period = if ms % 1000 == 0 {
                json!(ms / 1000)
            } else {
                json!(ms as f64 / 1000.0)
            };
            json!({ "name": l.name, "limit": l.limit, "period_seconds": period })
        })
        .collect()
}

/// The optional `rate_limits` of a create body (absent or null: none);
/// the engine checks the values and names the field of a bad one.
pub fn from_json(v: Option<&Value>) -> Result<Vec<pb::RateLimit>, Problem> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= 64 => items,
        Some(_) => {
            return Err(invalid(
                "rate_limits",
                "must be an array of at most 8 limits",
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |f: &str| format!("rate_limits.{i}.{f}");
            let o = item
                .as_object()
                .ok_or_else(|| invalid(&format!("rate_limits.{i}"), "must be an object"))?;
            if let Some(k) = o
                .keys()
                .find(|k| !["name", "limit", "period_seconds"].contains(&k.as_str()))
            {
                return Err(invalid(
                    &format!("rate_limits.{i}.{k}"),
                    "is not a known field",
                ));
            }
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&at("name"), "is required: a string"))?;
            let limit = o
                .get("limit")
                .and_then(Value::as_u64)
                .ok_or_else(|| invalid(&at("limit"), "is required: a positive integer"))?;
            let secs = o
                .get("period_seconds")
                .and_then(Value::as_f64)
                .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 1e8)
                .ok_or_else(|| invalid(&at("period_seconds"), "is required: seconds"))?;
            // Whole milliseconds, as the engine requires (a bound above
            // makes the cast exact).
            #[allow(clippy::cast_possible_truncation)]
            let ms = (secs * 1000.0).round() as i64;
            Ok(pb::RateLimit {
                name: name.to_string(),
                limit,
                period: Some(crate::clock::wire_duration_ms(ms)),
            })
        })
        .collect()
}
