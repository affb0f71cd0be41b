//! Unit tests of the index's last-use merge and node names.

use super::{newer_use, nodes, Change, Index};
use crate::pb::store::TokenRecord;
use crate::token::DigestKey;

/// An empty index whose id counter admits every id that fits.
fn index() -> Index {
    let mut idx = Index::new(DigestKey::from_bytes([7; 32]));
    idx.apply(&Change::Counters {
        next_account_id: 1,
        next_token_id: super::ID_LIMIT,
    });
    idx
}

fn record(id: u64, used_ms: i64, by: &str) -> TokenRecord {
    TokenRecord {
        id,
        account_id: 0,
        name: "t".into(),
        last_used_at_ms: used_ms,
        last_used_by: by.into(),
        ..Default::default()
    }
}

#[test]
fn the_newer_use_wins_with_its_node() {
    assert_eq!(newer_use((1_000, 1), (2_000, 2)), (2_000, 2));
    assert_eq!(newer_use((3_000, 1), (2_000, 2)), (3_000, 1));
    // A tie keeps what this node knows.
    assert_eq!(newer_use((2_000, 1), (2_000, 2)), (2_000, 1));
    assert_eq!(newer_use((0, 0), (0, 3)), (0, 0));
}

/// A record written elsewhere (another PostgreSQL node, the primary) meets
/// a use seen here: whichever is newer stays, with the node that saw it.
#[test]
fn put_token_keeps_the_newer_use() {
    let mut idx = index();
    let (here, there) = (nodes::intern("node-here"), nodes::intern("node-there"));
    idx.apply(&Change::PutToken(record(5, 1_000, "node-there")));
    let last = |idx: &Index| idx.tokens.get(&5).map(|t| t.last_use());
    assert_eq!(last(&idx), Some((1_000, there)));

    idx.tokens.get(&5).unwrap().touch(5_000, here);
    // An older record: ours stays.
    idx.apply(&Change::PutToken(record(5, 3_000, "node-there")));
    assert_eq!(last(&idx), Some((5_000, here)));
    // A newer one: theirs, with their node.
    idx.apply(&Change::PutToken(record(5, 9_000, "node-there")));
    assert_eq!(last(&idx), Some((9_000, there)));

    // And back to a record with the node's name.
    let r = idx.tokens.get(&5).unwrap().to_record(idx.key());
    assert_eq!(
        (r.last_used_at_ms, r.last_used_by.as_str()),
        (9_000, "node-there")
    );
}

/// A reported use becomes the last use only when newer; a local use within
/// the same second changes nothing (one store per second per token).
#[test]
fn a_reported_use_moves_only_forward() {
    let mut idx = index();
    idx.apply(&Change::PutToken(record(2, 10_000, "")));
    let t = idx.tokens.get(&2).unwrap();
    assert_eq!(t.last_use(), (10_000, 0));
    let f = nodes::intern("follower-1");
    assert!(!t.record_use(9_000, f));
    assert_eq!(t.last_use(), (10_000, 0));
    assert!(t.record_use(12_000, f));
    assert_eq!(t.last_use(), (12_000, f));
    t.touch(12_500, nodes::intern("primary"));
    assert_eq!(t.last_use(), (12_000, f));
    assert!(
        t.use_unsaved(0),
        "a reported use is not saved by being seen"
    );
    t.mark_use_saved(12_000);
    assert!(!t.use_unsaved(0));
}

/// The last use saved is kept to the second: the writer's granularity
/// counts from it, and a use in the saved one's second counts as saved.
#[test]
fn the_saved_use_is_kept_to_the_second() {
    let mut idx = index();
    idx.apply(&Change::PutToken(record(2, 10_400, "")));
    let t = idx.tokens.get(&2).unwrap();
    assert!(!t.use_unsaved(0), "as stored");
    assert!(t.record_use(10_900, 0));
    assert!(!t.use_unsaved(0), "the same second as the saved use");
    assert!(t.record_use(11_000, 0));
    assert!(t.use_unsaved(0));
    assert!(!t.use_unsaved(60_000), "within the granularity");
    assert!(t.record_use(71_000, 0));
    assert!(t.use_unsaved(60_000));
    t.mark_use_saved(71_000);
    t.mark_use_saved(20_000);
    assert!(!t.use_unsaved(0), "an older mark does not undo a newer one");
    // A record written again keeps the newer mark of the entry it replaces.
    idx.apply(&Change::PutToken(record(2, 30_000, "")));
    assert!(!idx.tokens.get(&2).unwrap().use_unsaved(0));
}

/// Ids an entry cannot hold in 4 bytes (never issued: a damaged store)
/// are not held, and the token's older state is not served in its place.
#[test]
fn a_record_whose_ids_do_not_fit_is_not_held() {
    let mut idx = index();
    idx.apply(&Change::PutToken(record(2, 10_000, "")));
    assert!(idx.tokens.get(&2).is_some());
    for (field, bad) in [
        (
            "account_id",
            TokenRecord {
                account_id: 1 << 32,
                ..record(2, 10_000, "")
            },
        ),
        (
            "replaced_by",
            TokenRecord {
                replaced_by: u64::MAX,
                ..record(2, 10_000, "")
            },
        ),
        (
            "replaces",
            TokenRecord {
                replaces: super::ID_LIMIT,
                ..record(2, 10_000, "")
            },
        ),
    ] {
        idx.apply(&Change::PutToken(record(2, 10_000, "")));
        idx.apply(&Change::PutToken(bad));
        assert!(idx.tokens.get(&2).is_none(), "{field}");
        assert!(
            idx.accounts.values().all(|a| !a.tokens.contains(2)),
            "{field}"
        );
    }
    idx.apply(&Change::PutToken(record(super::ID_LIMIT, 10_000, "")));
    assert!(idx.tokens.is_empty());
    let mut fits = record(3, 10_000, "");
    fits.replaced_by = super::ID_LIMIT - 1;
    idx.apply(&Change::PutToken(fits));
    assert_eq!(
        idx.tokens.get(&3).unwrap().replaced_by(),
        super::ID_LIMIT - 1
    );
}

/// Token ids index a dense table: a record whose id is at or beyond the
/// id counter (a damaged snapshot, change row or state file; keyward never
/// issues one) is not held, and the table does not grow toward it.
#[test]
fn a_token_beyond_the_id_counter_is_not_held() {
    let mut idx = Index::new(DigestKey::from_bytes([7; 32]));
    idx.apply(&Change::Counters {
        next_account_id: 1,
        next_token_id: 10,
    });
    idx.apply(&Change::PutToken(record(3, 10_000, "")));
    assert!(idx.tokens.get(&3).is_some());
    for beyond in [10, 1_000_000] {
        idx.apply(&Change::PutToken(record(beyond, 10_000, "")));
        assert!(idx.tokens.get(&beyond).is_none(), "{beyond}");
        assert!(idx.accounts.values().all(|a| !a.tokens.contains(beyond)));
    }
    assert_eq!(idx.tokens.len(), 1);
    assert!(idx.tokens.slots() <= 10, "{} slots", idx.tokens.slots());
    // The counter moves first (as every mint commits it): then it is held.
    idx.apply(&Change::Counters {
        next_account_id: 1,
        next_token_id: 11,
    });
    idx.apply(&Change::PutToken(record(10, 10_000, "")));
    assert!(idx.tokens.get(&10).is_some());
}

#[test]
fn node_names_are_checked_and_interned() {
    for good in ["a", "primary-0", "pod.ns_1", &"x".repeat(64)] {
        assert!(nodes::is_valid(good), "{good}");
    }
    for bad in ["", "a b", "é", "a/b", &"x".repeat(65), "a\n"] {
        assert!(!nodes::is_valid(bad), "{bad:?}");
        assert_eq!(nodes::intern(bad), 0, "{bad:?}");
    }
    let a = nodes::intern("sidecar-a");
    assert_ne!(a, 0);
    assert_eq!(nodes::intern("sidecar-a"), a);
    assert_ne!(nodes::intern("sidecar-b"), a);
    assert_eq!(nodes::name(a), "sidecar-a");
    assert_eq!(nodes::name(0), "");
    assert_eq!(nodes::name(u32::MAX), "");
}

/// A token entry does not grow unnoticed (a follower holds a million):
/// 176 bytes, no padding (the hash, digest, last 4 and flags have no
/// alignment; ids are 4 bytes), and an empty table slot costs no more.
#[test]
fn a_token_entry_stays_compact() {
    use super::TokenState;
    use std::mem::size_of;
    assert_eq!(size_of::<Option<TokenState>>(), size_of::<TokenState>());
    assert!(
        size_of::<TokenState>() <= 176,
        "{}",
        size_of::<TokenState>()
    );
}
