//! A budget kept in a store shared by several nodes (PostgreSQL): the
//! state of one budget as bytes, and the lease a node takes from it.
//!
//! The state is a list of entries `(limit, period, theoretical arrival
//! time)`, one per limit, in the scaled time of [`Budget`] (so the
//! arithmetic stays exact). An empty state is a full budget: a store keeps
//! no row for a budget nobody spent, and may drop one that is full again.
//!
//! A node leases with the limits it knows for the token. The entries are
//! matched by limit and period, so limits that an update left unchanged
//! keep what was spent; a limit the state does not hold starts full. An
//! entry the node's limits lack is kept while it is not full again (at
//! most [`LIMITS_MAX`] of them), so two nodes that briefly disagree about
//! a token's limits (an update on its way) cannot refill each other's.

use super::{Budget, Spec, LIMITS_MAX};

/// Bytes of one entry: limit (8), period in ms (8), time (16), little
/// endian.
const ENTRY: usize = 32;
/// The format's first byte.
const VERSION: u8 = 1;

/// One limit's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The limit.
    pub spec: Spec,
    /// Its theoretical arrival time, in scaled time (ms × limit).
    pub tat: u128,
}

/// Why stored state was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sending-limit state of {len} bytes does not decode: {why}")]
pub struct BadState {
    len: usize,
    why: &'static str,
}

/// Decodes stored state (empty: a full budget).
pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, BadState> {
    let bad = |why| BadState {
        len: bytes.len(),
        why,
    };
    let Some((&version, rest)) = bytes.split_first() else {
        return Ok(Vec::new());
    };
    if version != VERSION {
        return Err(bad("unknown version"));
    }
    if rest.len() % ENTRY != 0 || rest.len() / ENTRY > 2 * LIMITS_MAX {
        return Err(bad("wrong length"));
    }
    rest.chunks_exact(ENTRY)
        .map(|c| {
            let (limit, period_ms, tat) = (
                u64::from_le_bytes(c[..8].try_into().map_err(|_| bad("short"))?),
                i64::from_le_bytes(c[8..16].try_into().map_err(|_| bad("short"))?),
                u128::from_le_bytes(c[16..].try_into().map_err(|_| bad("short"))?),
            );
            if limit == 0 || period_ms <= 0 {
                return Err(bad("a limit or period out of range"));
            }
            Ok(Entry {
                spec: Spec { limit, period_ms },
                tat,
            })
        })
        .collect()
}

/// Encodes state (no entries: empty bytes).
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    if entries.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(1 + ENTRY * entries.len());
    out.push(VERSION);
    for e in entries {
        out.extend_from_slice(&e.spec.limit.to_le_bytes());
        out.extend_from_slice(&e.spec.period_ms.to_le_bytes());
        out.extend_from_slice(&e.tat.to_le_bytes());
    }
    out
}

/// What one lease did to a stored budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    /// Units granted.
    pub granted: u64,
    /// Units left in the tightest limit after the grant.
    pub remaining: u64,
    /// The state to store.
    pub entries: Vec<Entry>,
    /// When every entry is full again (unix ms, rounded up; 0 when it is
    /// now): a store may drop the state after that.
    pub full_at_ms: i64,
}

/// At `now_ms`, a node with the limits `specs` gives back `give_back`
/// units it did not spend, then takes up to `want` (as many as every limit
/// has). `floor` (per limit of `specs`: when full again, unix ms) is what
/// the node knew of the budget before the store kept it: it only applies
/// to a budget the store holds nothing for, and never makes it fuller.
pub fn lease(
    stored: &[Entry],
    specs: &[Spec],
    floor: &[i64],
    now_ms: i64,
    want: u64,
    give_back: u64,
) -> Leased {
    let b = Budget::new(specs);
    {
        let mut tat = b.tat.lock();
        for (i, spec) in specs.iter().enumerate() {
            if let Some(e) = stored.iter().find(|e| e.spec == *spec) {
                tat[i] = e.tat;
            }
        }
    }
    if stored.is_empty() && floor.len() == specs.len() {
        b.restore(floor);
    }
    if give_back > 0 {
        b.give_back(give_back);
    }
    let granted = if want > 0 { b.lease(now_ms, want) } else { 0 };
    let remaining = b.remaining(now_ms);
    let tat = b.tat.lock();
    let mut entries: Vec<Entry> = specs
        .iter()
        .zip(tat.iter())
        .map(|(spec, tat)| Entry {
            spec: *spec,
            tat: *tat,
        })
        .collect();
    entries.extend(
        stored
            .iter()
            .filter(|e| !specs.contains(&e.spec) && e.tat > e.spec.scaled(now_ms))
            .take(LIMITS_MAX),
    );
    entries.retain(|e| e.tat > e.spec.scaled(now_ms));
    let full_at_ms = entries
        .iter()
        .map(|e| i64::try_from(e.tat.div_ceil(u128::from(e.spec.limit))).unwrap_or(i64::MAX))
        .max()
        .unwrap_or(0);
    Leased {
        granted,
        remaining,
        entries,
        full_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn spec(limit: u64, period_ms: i64) -> Spec {
        Spec { limit, period_ms }
    }

    #[test]
    fn state_round_trips_and_damage_is_refused() {
        let e = vec![
            Entry {
                spec: spec(10, HOUR),
                tat: 12_345_678_901_234_567_890,
            },
            Entry {
                spec: spec(1, 1000),
                tat: 0,
            },
        ];
        assert_eq!(decode(&encode(&e)).unwrap(), e);
        assert_eq!(decode(&[]).unwrap(), vec![]);
        assert!(encode(&[]).is_empty());
        let bytes = encode(&e);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(decode(&v2).is_err());
        let mut zero = bytes;
        zero[1..9].copy_from_slice(&0u64.to_le_bytes());
        assert!(decode(&zero).is_err());
    }

    #[test]
    fn leases_take_what_every_limit_has_and_give_backs_return_it() {
        let specs = [spec(10, HOUR)];
        let now = 1_700_000_000_000;
        let first = lease(&[], &specs, &[], now, 4, 0);
        assert_eq!((first.granted, first.remaining), (4, 6));
        let second = lease(&first.entries, &specs, &[], now, 8, 0);
        assert_eq!((second.granted, second.remaining), (6, 0));
        let none = lease(&second.entries, &specs, &[], now, 1, 0);
        assert_eq!(none.granted, 0);
        // Three unspent come back and can be leased again.
        let back = lease(&none.entries, &specs, &[], now, 0, 3);
        assert_eq!((back.granted, back.remaining), (0, 3));
        // An hour later it is full, and nothing needs keeping.
        let later = lease(&back.entries, &specs, &[], now + HOUR, 0, 0);
        assert_eq!(later.remaining, 10);
        assert!(later.entries.is_empty());
        assert_eq!(later.full_at_ms, 0);
        assert_eq!(second.full_at_ms, now + HOUR);
    }

    #[test]
    fn unchanged_limits_keep_their_state_and_disagreeing_nodes_keep_each_others() {
        let now = 1_700_000_000_000;
        let old = [spec(10, HOUR)];
        let new = [spec(10, HOUR), spec(100, 24 * HOUR)];
        let spent = lease(&[], &old, &[], now, 10, 0);
        // The update added a daily limit: the hourly one stays spent.
        let after = lease(&spent.entries, &new, &[], now, 5, 0);
        assert_eq!(after.granted, 0);
        // A node that has not seen the update yet leases with the old
        // limits: still spent (the state kept both).
        let stale = lease(&after.entries, &old, &[], now, 5, 0);
        assert_eq!(stale.granted, 0);
        assert_eq!(stale.entries.len(), 1, "{:?}", stale.entries);
        // A limit removed: the other starts full.
        let other = lease(&stale.entries, &[spec(5, HOUR)], &[], now, 5, 0);
        assert_eq!(other.granted, 5);
    }

    #[test]
    fn the_floor_applies_only_to_a_budget_the_store_does_not_hold() {
        let now = 1_700_000_000_000;
        let specs = [spec(10, HOUR)];
        // Known spent until an hour from now: nothing to lease.
        let first = lease(&[], &specs, &[now + HOUR], now, 5, 0);
        assert_eq!(first.granted, 0);
        // Held by the store: its state decides, not the floor.
        let held = lease(&[], &specs, &[], now, 1, 0);
        let next = lease(&held.entries, &specs, &[now + HOUR], now, 5, 0);
        assert_eq!(next.granted, 5);
    }
}
