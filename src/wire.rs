//! The shapes on the wire that every admin surface shares: timestamps and
//! an expiry's bounds, a reset's grace (a Duration), a token or account as
//! served, and listing pages (sizes, cursors, the byte budget of a page).
//!
//! Layer L2: imports the vocabulary (`model`, `pb`, `error`, `clock`) and
//! the index's state types only.

use std::sync::atomic::Ordering;

use prost_types::Timestamp;

use crate::error::{Error, Result};
use crate::index::{AccountState, TokenState};
use crate::model::{limits, Grant, Kind, Policy, ScopeGrant};
use crate::pb::v1 as pb;

/// Converts unix ms to a wire timestamp.
#[expect(clippy::cast_possible_truncation, reason = "nanos < 1e9 fit an i32")]
pub fn ts(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A wire timestamp, or none for 0 (never).
pub fn ts_opt(ms: i64) -> Option<Timestamp> {
    (ms != 0).then(|| ts(ms))
}

/// Converts a wire timestamp to unix ms, checking it is well formed.
pub fn ms_from(field: &str, t: &Timestamp) -> Result<i64> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Error::invalid(field, "nanos must be in 0..1e9"));
    }
    t.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(t.nanos / 1_000_000)))
        .ok_or_else(|| Error::invalid(field, "out of range"))
}

/// The paths of an update's FieldMask: at least one, else an error on
/// `update_mask` listing `known` (the paths the call takes, e.g. "name,
/// grants"). Each path is then matched by the caller.
pub fn mask_paths<'a>(
    mask: Option<&'a prost_types::FieldMask>,
    known: &str,
) -> Result<&'a [String]> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Err(Error::invalid(
            "update_mask",
            format!("name at least one of: {known}"),
        ));
    }
    Ok(paths)
}

/// Checks an optional wire expiry against `now` (unix ms): well formed, in
/// the future, at most 5 years ahead. Pure: the fuzz targets call it.
pub fn check_expiry(field: &str, expires_at: Option<&Timestamp>, now: i64) -> Result<Option<i64>> {
    let Some(t) = expires_at else { return Ok(None) };
    let ms = ms_from(field, t)?;
    if ms <= now {
        return Err(Error::invalid(field, "must be in the future"));
    }
    if ms - now > limits::EXPIRY_MAX_MS {
        return Err(Error::invalid(field, "must be at most 5 years ahead"));
    }
    Ok(Some(ms))
}

/// The grace a reset gives the old token, in ms: `grace` when given
/// (well formed, not negative, at most `server` — the server's
/// `--reset-grace`), else `server`. Pure: the fuzz targets may call it.
pub fn check_grace(
    field: &str,
    grace: Option<&prost_types::Duration>,
    server: std::time::Duration,
) -> Result<i64> {
    let Some(d) = grace else {
        return Ok(crate::clock::duration_ms(server));
    };
    let asked = duration_from(field, d)?;
    if asked > server {
        return Err(Error::invalid(
            field,
            format!(
                "must be at most {}, the server's reset grace",
                duration_json(server)
            ),
        ));
    }
    Ok(crate::clock::duration_ms(asked))
}

/// A wire duration, well formed and not negative.
pub fn duration_from(field: &str, d: &prost_types::Duration) -> Result<std::time::Duration> {
    let nanos_ok = (-999_999_999..=999_999_999).contains(&d.nanos)
        && !(d.seconds > 0 && d.nanos < 0 || d.seconds < 0 && d.nanos > 0);
    if !nanos_ok {
        return Err(Error::invalid(
            field,
            "nanos must be in -999999999..=999999999 with the sign of seconds",
        ));
    }
    if d.seconds < 0 || d.nanos < 0 {
        return Err(Error::invalid(field, "must not be negative"));
    }
    // Both are now >= 0, and nanos < 1e9.
    Ok(std::time::Duration::new(
        d.seconds.unsigned_abs(),
        d.nanos.unsigned_abs(),
    ))
}

/// An account policy from the wire: `max_token_lifetime` at most 5 years,
/// "0s" or unset meaning no limit. `field` prefixes the field names.
pub fn policy_from_wire(field: &str, p: &pb::AccountPolicy) -> Result<Policy> {
    let max_token_lifetime_ms = match &p.max_token_lifetime {
        None => None,
        Some(d) => {
            let name = format!("{field}.max_token_lifetime");
            let d = duration_from(&name, d)?;
            if d > std::time::Duration::from_millis(limits::EXPIRY_MAX_MS.unsigned_abs()) {
                return Err(Error::invalid(name, "must be at most 5 years"));
            }
            // Sub-millisecond lifetimes round up: "0.0001s" is a limit, not none.
            let ms = crate::clock::duration_ms(d) + i64::from(d.subsec_nanos() % 1_000_000 != 0);
            (ms > 0).then_some(ms)
        }
    };
    Ok(Policy {
        max_token_lifetime_ms,
        require_expiry: p.require_expiry,
    })
}

/// An account policy as served (unset fields for no limit).
pub fn policy_to_wire(p: Policy) -> pb::AccountPolicy {
    pb::AccountPolicy {
        max_token_lifetime: p.max_token_lifetime_ms.map(crate::clock::wire_duration_ms),
        require_expiry: p.require_expiry,
    }
}

/// A duration as the JSON mapping of `google.protobuf.Duration` writes it:
/// seconds with up to 9 fractional digits and an `s` ("43200s", "1.5s").
pub fn duration_json(d: std::time::Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        return format!("{}s", d.as_secs());
    }
    let frac = format!("{nanos:09}");
    format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
}

/// The metadata of a token, as served.
pub fn token_to_wire(t: &TokenState) -> pb::Token {
    pb::Token {
        id: t.id(),
        account_id: t.account_id(),
        name: t.name.to_string(),
        last_4_digits: t.last_4.to_string(),
        created_by: t.created_by().to_string(),
        created_at: Some(ts(t.created_at_ms)),
        expires_at: t.expires_at_ms().map(ts),
        paused: t.paused(),
        grants: t.grants().iter().map(Grant::to_wire).collect(),
        scopes: t.scopes().iter().map(ScopeGrant::to_wire).collect(),
        replaced_by: t.replaced_by(),
        replaces: t.replaces(),
        last_used_at: ts_opt(t.last_used_ms.load(Ordering::Relaxed)),
        root: t.root(),
        last_used_by: crate::index::nodes::name(t.last_used_by.load(Ordering::Relaxed)),
        rate_limits: crate::model::rate_limits_to_wire(t.budget.as_deref()),
    }
}

/// An account, as served.
pub fn account_to_wire(a: &AccountState) -> pb::Account {
    pb::Account {
        id: a.id,
        name: a.name.clone(),
        created_at: Some(ts(a.created_at_ms)),
        policy: Some(policy_to_wire(a.policy)),
    }
}

/// Most encoded bytes of the items of one listing page. Half the smallest
/// encoding limit of a service that lists (Accounts and Resources, 256 KiB
/// in `server/grpc.rs`), so a full page always fits with its page token and
/// framing; Tokens and Audit (1 MiB) page the same way. A page ends early,
/// with a `next_page_token`, when its next item would pass this.
pub const PAGE_BYTES_MAX: usize = 128 * 1024;

/// The number of items a page may hold: the default for 0, refused above
/// the maximum.
pub fn checked_page_size(page_size: u32) -> Result<usize> {
    match page_size {
        0 => Ok(limits::PAGE_DEFAULT as usize),
        n if n > limits::PAGE_MAX => Err(Error::invalid(
            "page_size",
            format!("must be at most {}", limits::PAGE_MAX),
        )),
        n => Ok(n as usize),
    }
}

/// Page size (default, max) and the id after which the page starts.
pub fn page_bounds(page_size: u32, page_token: &str) -> Result<(usize, u64)> {
    let size = checked_page_size(page_size)?;
    let after = if page_token.is_empty() {
        0
    } else {
        page_token
            .parse::<u64>()
            .map_err(|_| Error::invalid("page_token", "not a token from a previous page"))?
    };
    Ok((size, after))
}

/// The resource after which a ListResources page starts: the previous
/// page's token, `type:id` of its last resource (type as its wire number).
pub fn resource_cursor(page_token: &str) -> Result<Option<(Kind, &str)>> {
    if page_token.is_empty() {
        return Ok(None);
    }
    let bad = || Error::invalid("page_token", "not a token from a previous page");
    let (kind, id) = page_token.split_once(':').ok_or_else(bad)?;
    let kind = kind
        .parse::<i32>()
        .ok()
        .and_then(Kind::from_wire)
        .ok_or_else(bad)?;
    Ok(Some((kind, id)))
}

/// One listing page being filled, in cursor order: at most `size` items
/// and at most [`PAGE_BYTES_MAX`] encoded bytes of them (the first item
/// always goes in, so paging makes progress; one item is far smaller).
pub struct Page<T> {
    /// The items so far.
    pub items: Vec<T>,
    /// Their encoded size as a repeated field of the response.
    bytes: usize,
    /// Items the caller asked for.
    size: usize,
    /// Whether an item was left for the next page.
    more: bool,
}

impl<T: prost::Message> Page<T> {
    /// An empty page of at most `size` items.
    pub fn new(size: usize) -> Self {
        Page {
            items: Vec::new(),
            bytes: 0,
            size,
            more: false,
        }
    }

    /// Adds `item` if the page has room for it; otherwise notes that more
    /// follow and returns false: the page is full, stop filling it.
    pub fn push(&mut self, item: T) -> bool {
        let len = item.encoded_len();
        // Field key (one byte: fields 1..15), length, message.
        let bytes = 1 + prost::length_delimiter_len(len) + len;
        let full = self.items.len() >= self.size
            || (!self.items.is_empty() && self.bytes + bytes > PAGE_BYTES_MAX);
        if full {
            self.more = true;
            return false;
        }
        self.bytes += bytes;
        self.items.push(item);
        true
    }

    /// The next page's token, from the last item; empty on the last page.
    pub fn next_token(&self, cursor: impl Fn(&T) -> String) -> String {
        if !self.more {
            return String::new();
        }
        self.items.last().map(cursor).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::{check_grace, duration_json, Page, PAGE_BYTES_MAX};
    use crate::error::Error;
    use crate::pb::v1 as pb;
    use prost::Message;
    use std::time::Duration;

    fn grace(seconds: i64, nanos: i32) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos }
    }

    /// The field error's description, or "" for a success.
    fn refusal(r: crate::error::Result<i64>) -> String {
        match r {
            Err(Error::InvalidArgument(v)) => {
                assert_eq!(v.len(), 1);
                assert_eq!(v[0].0, "grace");
                v[0].1.clone()
            }
            Err(e) => panic!("not a field error: {e:?}"),
            Ok(_) => String::new(),
        }
    }

    #[test]
    fn a_reset_grace_defaults_to_the_servers_and_can_only_shorten_it() {
        let server = Duration::from_secs(12 * 3600);
        assert_eq!(check_grace("grace", None, server).ok(), Some(43_200_000));
        assert_eq!(
            check_grace("grace", Some(&grace(0, 0)), server).ok(),
            Some(0)
        );
        assert_eq!(
            check_grace("grace", Some(&grace(90, 500_000_000)), server).ok(),
            Some(90_500)
        );
        assert_eq!(
            check_grace("grace", Some(&grace(43_200, 0)), server).ok(),
            Some(43_200_000)
        );
        let over = refusal(check_grace("grace", Some(&grace(43_200, 1)), server));
        assert_eq!(over, "must be at most 43200s, the server's reset grace");
        let far = refusal(check_grace("grace", Some(&grace(i64::MAX, 0)), server));
        assert!(far.contains("43200s"), "{far}");
        for (s, n) in [(-1, 0), (0, -1), (-5, -500)] {
            let neg = refusal(check_grace("grace", Some(&grace(s, n)), server));
            assert_eq!(neg, "must not be negative", "{s} {n}");
        }
        for (s, n) in [(0, 1_000_000_000), (0, -1_000_000_000), (1, -1), (-1, 1)] {
            let bad = refusal(check_grace("grace", Some(&grace(s, n)), server));
            assert!(bad.starts_with("nanos must be"), "{s} {n}: {bad}");
        }
        // A server with no grace at all allows only "0s".
        assert_eq!(
            check_grace("grace", Some(&grace(0, 0)), Duration::ZERO).ok(),
            Some(0)
        );
        let none = refusal(check_grace("grace", Some(&grace(0, 1)), Duration::ZERO));
        assert_eq!(none, "must be at most 0s, the server's reset grace");
    }

    #[test]
    fn durations_are_written_as_json_durations() {
        assert_eq!(duration_json(Duration::from_secs(43_200)), "43200s");
        assert_eq!(duration_json(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(duration_json(Duration::new(0, 1)), "0.000000001s");
        assert_eq!(duration_json(Duration::ZERO), "0s");
    }

    /// The largest account the input limits allow: 100 four-byte characters.
    fn widest_account(id: u64) -> pb::Account {
        pb::Account {
            id,
            name: "\u{1F4E8}".repeat(100),
            created_at: Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 999_999_999,
            }),
            policy: Some(pb::AccountPolicy {
                max_token_lifetime: Some(prost_types::Duration {
                    seconds: i64::MAX,
                    nanos: 999_999_999,
                }),
                require_expiry: true,
            }),
        }
    }

    #[test]
    fn a_page_stops_at_its_size_or_its_byte_budget() {
        let mut page = Page::new(3);
        assert!(page.push(widest_account(1)));
        assert!(page.push(widest_account(2)));
        assert!(page.push(widest_account(3)));
        assert!(!page.push(widest_account(4)));
        assert_eq!(page.next_token(|a| a.id.to_string()), "3");

        // 1,000 of the widest accounts (~420 KB) would pass the Accounts
        // limit (256 KiB): the page ends under the budget instead.
        let mut page = Page::new(1000);
        let mut id = 0;
        while page.push(widest_account(id + 1)) {
            id += 1;
        }
        let resp = pb::ListAccountsResponse {
            accounts: page.items.clone(),
            next_page_token: page.next_token(|a| a.id.to_string()),
        };
        assert!(page.items.len() < 1000);
        assert!(resp.encoded_len() <= PAGE_BYTES_MAX + 64);
        assert_eq!(resp.next_page_token, id.to_string());

        // A short last page ends the listing.
        let mut page = Page::new(10);
        assert!(page.push(widest_account(1)));
        assert_eq!(page.next_token(|a| a.id.to_string()), "");
    }
}
