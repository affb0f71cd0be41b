//! The budget on its own: exact bursts and refills, all or nothing across
//! limits, peeks, leases, what a restart keeps; and a property over random
//! traffic: no window ever passes more than the bound the module states.

use proptest::prelude::*;

use super::{Budget, Spec};

const S: i64 = 1000;

fn spec(limit: u64, period_ms: i64) -> Spec {
    Spec { limit, period_ms }
}

#[test]
fn a_burst_of_the_limit_passes_then_one_unit_per_interval() {
    let b = Budget::new(&[spec(10, 60 * S)]);
    for i in 0..10 {
        let o = b.take(0, 1);
        assert!(o.allowed, "unit {i}");
        assert_eq!(o.remaining, 9 - i);
    }
    let o = b.take(0, 1);
    assert!(!o.allowed);
    assert_eq!(o.retry_after_ms, Some(6 * S), "one unit every 6 s");
    assert_eq!(o.reset_ms, 60 * S);
    assert!(!b.take(6 * S - 1, 1).allowed);
    let o = b.take(6 * S, 1);
    assert!(o.allowed);
    assert_eq!(o.remaining, 0);
}

#[test]
fn every_limit_is_charged_or_none() {
    let b = Budget::new(&[spec(100, 60 * S), spec(3, S)]);
    for _ in 0..3 {
        assert!(b.take(0, 1).allowed);
    }
    let o = b.take(0, 1);
    assert!(!o.allowed);
    assert_eq!(o.tightest, 1);
    assert_eq!(o.retry_after_ms, Some(334), "1000/3 ms, rounded up");
    // The refusal charged the minute limit nothing: 97 left there.
    let o = b.take(S, 3);
    assert!(o.allowed);
    assert_eq!(b.lease(S, 1000), 0, "the second limit is empty");
    assert_eq!(b.take(60 * S, 0).remaining, 3);
    assert_eq!(b.save().len(), 2);
}

#[test]
fn a_cost_takes_that_many_units_and_a_cost_above_the_limit_never_passes() {
    let b = Budget::new(&[spec(5, S)]);
    let o = b.take(0, 4);
    assert!(o.allowed);
    assert_eq!(o.remaining, 1);
    let o = b.take(0, 2);
    assert!(!o.allowed);
    assert_eq!(o.remaining, 1, "refused: what was left before");
    assert_eq!(o.retry_after_ms, Some(200));
    let o = b.take(10 * S, 6);
    assert!(!o.allowed);
    assert_eq!(o.retry_after_ms, None, "6 > 5 per second: never");
}

#[test]
fn a_peek_charges_nothing() {
    let b = Budget::new(&[spec(1, S)]);
    assert!(b.take(0, 0).allowed);
    assert!(b.take(0, 0).allowed);
    assert!(b.take(0, 1).allowed);
    assert!(!b.take(0, 0).allowed);
    assert!(b.take(S, 0).allowed);
}

#[test]
fn leases_take_what_is_there_and_come_back() {
    let b = Budget::new(&[spec(10, 10 * S), spec(4, S)]);
    assert_eq!(b.lease(0, 3), 3);
    assert_eq!(b.lease(0, 3), 1, "the second limit had 1 left");
    assert_eq!(b.lease(0, 3), 0);
    assert!(!b.take(0, 1).allowed);
    b.give_back(2);
    assert_eq!(b.remaining(0), 2);
    assert!(b.take(0, 2).allowed);
}

#[test]
fn a_restart_restores_the_budget_never_a_fuller_one() {
    let b = Budget::new(&[spec(10, 60 * S)]);
    let now = 1_700_000_000_000;
    for _ in 0..7 {
        assert!(b.take(now, 1).allowed);
    }
    let saved = b.save();
    let again = Budget::new(&[spec(10, 60 * S)]);
    again.restore(&saved);
    assert_eq!(again.remaining(now), 3);
    // Restoring an older (fuller) state changes nothing.
    again.restore(&[0]);
    assert_eq!(again.remaining(now), 3);
    // Carried into a new set of limits: the same limit keeps its state.
    let more = again.carried(&[spec(2, S), spec(10, 60 * S)]);
    assert_eq!(more.remaining(now), 2);
    assert!(more.take(now, 2).allowed);
    assert_eq!(more.take(now, 0).tightest, 0);
    assert_eq!(more.lease(now + S, 10), 1, "the minute limit has 1 left");
}

proptest! {
    /// Over any window [a, b] of a random schedule, the units allowed never
    /// pass `limit + (b - a) * limit / period`; and a request is refused
    /// only when the units allowed in the `period` before it (plus itself)
    /// would pass `limit` + what refilled, i.e. the budget does not refuse
    /// early: an idle bucket always admits a cost within the limit.
    #[test]
    fn no_window_passes_the_stated_bound(
        limit in 1u64..20,
        period_s in 1i64..5,
        steps in proptest::collection::vec((0i64..700, 0u64..4), 1..200),
    ) {
        let period = period_s * S;
        let b = Budget::new(&[spec(limit, period)]);
        let mut now = 0;
        let mut passed: Vec<(i64, u64)> = Vec::new();
        for (dt, cost) in steps {
            now += dt;
            let idle = passed.last().is_none_or(|(t, _)| now - t >= period);
            let o = b.take(now, cost);
            if idle && cost >= 1 && cost <= limit {
                prop_assert!(o.allowed, "an idle bucket refused {cost} of {limit}");
            }
            if o.allowed && cost > 0 {
                passed.push((now, cost));
            }
            if let Some(wait) = o.retry_after_ms {
                prop_assert!(wait >= 0);
            }
        }
        for (i, (a, _)) in passed.iter().enumerate() {
            let mut sum: u128 = 0;
            for (t, c) in &passed[i..] {
                sum += u128::from(*c);
                let bound = u128::from(limit) * u128::from(period.unsigned_abs())
                    + u128::from((t - a).unsigned_abs()) * u128::from(limit);
                prop_assert!(
                    sum * u128::from(period.unsigned_abs()) <= bound,
                    "{sum} units in [{a}, {t}] with {limit} per {period} ms"
                );
            }
        }
    }
}
