//! An account's token policy: how long its tokens may live, and whether
//! they must expire at all. Checked whenever an expiry is written.

use crate::error::{Error, Result};
use crate::pb::store::AccountRecord;

/// An account's token policy (`Account.policy`). The default lets any token
/// live forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Longest expiry a token may be given, in ms from the write; `None`:
    /// no limit. Implies an expiry is needed.
    pub max_token_lifetime_ms: Option<i64>,
    /// Every token needs an expiry.
    pub require_expiry: bool,
}

impl Policy {
    /// The policy a stored account record carries.
    pub fn of(record: &AccountRecord) -> Self {
        Self {
            max_token_lifetime_ms: (record.max_token_lifetime_ms > 0)
                .then_some(record.max_token_lifetime_ms),
            require_expiry: record.require_expiry,
        }
    }

    /// Writes the policy into a stored account record.
    pub fn store(self, record: &mut AccountRecord) {
        record.max_token_lifetime_ms = self.max_token_lifetime_ms.unwrap_or(0);
        record.require_expiry = self.require_expiry;
    }

    /// Checks an expiry about to be written at `now` (unix ms; `None`:
    /// never expires). The error names `field` and the rule it breaks.
    pub fn check(self, field: &str, expires_at_ms: Option<i64>, now: i64) -> Result<()> {
        match (expires_at_ms, self.max_token_lifetime_ms) {
            (None, Some(max)) => Err(Error::invalid(
                field,
                format!(
                    "is required: the account's policy max_token_lifetime ({}) needs an expiry",
                    lifetime(max)
                ),
            )),
            (None, None) if self.require_expiry => Err(Error::invalid(
                field,
                "is required: the account's policy require_expiry is set",
            )),
            (Some(at), Some(max)) if at.saturating_sub(now) > max => Err(Error::invalid(
                field,
                format!(
                    "must be at most {} from now: the account's policy max_token_lifetime",
                    lifetime(max)
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// A lifetime as the JSON mapping of `google.protobuf.Duration` writes it
/// ("2592000s", "1.5s"), the spelling a caller sets it with.
fn lifetime(ms: i64) -> String {
    let (s, rest) = (ms / 1000, ms % 1000);
    if rest == 0 {
        format!("{s}s")
    } else {
        format!("{s}.{}s", format!("{rest:03}").trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::Policy;

    const DAY: i64 = 24 * 3600 * 1000;

    #[test]
    fn the_default_allows_any_expiry_or_none() {
        let p = Policy::default();
        assert!(p.check("expires_at", None, 0).is_ok());
        assert!(p.check("expires_at", Some(1000 * DAY), 0).is_ok());
    }

    #[test]
    fn require_expiry_refuses_a_token_that_never_expires() {
        let p = Policy {
            require_expiry: true,
            ..Policy::default()
        };
        let e = p.check("expires_at", None, 0).unwrap_err().to_string();
        assert!(
            e.contains("expires_at") && e.contains("require_expiry"),
            "{e}"
        );
        assert!(p.check("expires_at", Some(DAY), 0).is_ok());
    }

    #[test]
    fn a_max_lifetime_bounds_the_expiry_and_needs_one() {
        let p = Policy {
            max_token_lifetime_ms: Some(30 * DAY),
            require_expiry: false,
        };
        let now = 5 * DAY;
        assert!(p.check("expires_at", Some(now + 30 * DAY), now).is_ok());
        let e = p
            .check("expires_at", Some(now + 30 * DAY + 1), now)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_token_lifetime") && e.contains("2592000s"),
            "{e}"
        );
        let e = p.check("expires_at", None, now).unwrap_err().to_string();
        assert!(e.contains("max_token_lifetime"), "{e}");
    }

    #[test]
    fn the_record_round_trips_and_zero_means_no_limit() {
        let mut r = crate::pb::store::AccountRecord::default();
        let p = Policy {
            max_token_lifetime_ms: Some(1500),
            require_expiry: true,
        };
        p.store(&mut r);
        assert_eq!(Policy::of(&r), p);
        assert_eq!(super::lifetime(1500), "1.5s");
        Policy::default().store(&mut r);
        assert_eq!(Policy::of(&r), Policy::default());
    }
}
