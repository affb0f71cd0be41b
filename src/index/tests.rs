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

/// A hash in keyward's shape: kept in binary, so thousands of these
/// tokens take no slot in the table of other hashes, which
/// `token::phc`'s tests measure while these run.
const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

fn record(id: u64, used_ms: i64, by: &str) -> TokenRecord {
    TokenRecord {
        id,
        account_id: 0,
        name: "t".into(),
        phc_hash: PHC.into(),
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

/// Token ids index the table: a record whose id is at or beyond the
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
    assert!(
        idx.tokens.slots() <= super::TokenTable::PAGE,
        "{} slots",
        idx.tokens.slots()
    );
    // The counter moves first (as every mint commits it): then it is held.
    idx.apply(&Change::Counters {
        next_account_id: 1,
        next_token_id: 11,
    });
    idx.apply(&Change::PutToken(record(10, 10_000, "")));
    assert!(idx.tokens.get(&10).is_some());
}

/// The table's memory follows the tokens it holds, not the largest id: a
/// token far above the rest (an id counter moved far ahead by damage: a
/// state file, a snapshot, a change row) costs one page of entries, and a
/// page whose tokens are all deleted (old ids, after resets and deletes)
/// is given back.
#[test]
fn the_table_holds_pages_of_tokens_not_every_id_below_the_largest() {
    let mut idx = index();
    idx.apply(&Change::PutToken(record(3, 10_000, "")));
    idx.apply(&Change::PutToken(record(2_000_000, 10_000, "")));
    assert!(idx.tokens.get(&2_000_000).is_some());
    assert!(idx.tokens.get(&1_999_999).is_none());
    assert!(
        idx.tokens.slots() <= 2 * super::TokenTable::PAGE,
        "{} slots for 2 tokens",
        idx.tokens.slots()
    );
    for id in 1..=20_000 {
        idx.apply(&Change::PutToken(record(id, 10_000, "")));
    }
    for id in 1..=16_384 {
        idx.apply(&Change::DeleteToken(id));
    }
    assert_eq!(idx.tokens.len(), 20_000 - 16_384 + 1);
    assert!(
        idx.tokens.slots() <= 3 * super::TokenTable::PAGE,
        "{} slots for 3,617 tokens in ids 16,385..=20,000 and 2,000,000",
        idx.tokens.slots()
    );
    let ids: Vec<u64> = idx.tokens.values().map(|t| t.id()).collect();
    let want: Vec<u64> = (16_385..=20_000).chain([2_000_000]).collect();
    assert_eq!(ids, want);
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

mod table {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::{index, record, Change};

    #[derive(Debug, Clone)]
    enum Op {
        Put(u64),
        Delete(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Ids over a few pages (so pages empty out and come back), a few
        // far away and a few at the limit.
        let id = prop_oneof![
            8 => 0u64..20_000,
            1 => 1_000_000u64..1_000_010,
            1 => super::super::ID_LIMIT - 2..super::super::ID_LIMIT + 2,
        ];
        prop_oneof![
            3 => id.clone().prop_map(Op::Put),
            2 => id.prop_map(Op::Delete),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the order of puts and deletes, the table answers as a
        /// `BTreeSet` of the ids below the limit does: lookups, ranges,
        /// slices, its length; and it holds a page only for ids it holds.
        #[test]
        fn the_table_behaves_as_an_ordered_map_of_the_ids_it_holds(
            ops in proptest::collection::vec(op(), 0..600),
            from in 0u64..21_000,
            width in 0u64..30_000,
            n in 1usize..50,
        ) {
            let (mut idx, mut model) = (index(), BTreeSet::new());
            for op in ops {
                match op {
                    Op::Put(id) => {
                        idx.apply(&Change::PutToken(record(id, 1, "")));
                        if id < super::super::ID_LIMIT {
                            model.insert(id);
                        }
                    }
                    Op::Delete(id) => {
                        idx.apply(&Change::DeleteToken(id));
                        model.remove(&id);
                    }
                }
            }
            prop_assert_eq!(idx.tokens.len(), model.len());
            let ids = |it: &mut dyn Iterator<Item = &crate::index::TokenState>| {
                it.map(|t| t.id()).collect::<Vec<_>>()
            };
            prop_assert_eq!(ids(&mut idx.tokens.values()), model.iter().copied().collect::<Vec<_>>());
            let to = from + width;
            let want: Vec<u64> = model.range(from..to).copied().collect();
            prop_assert_eq!(&ids(&mut idx.tokens.range(from, to)), &want);
            let (slice, next) = idx.tokens.slice(from, to, n);
            prop_assert_eq!(slice.iter().map(|t| t.id()).collect::<Vec<_>>(), want.iter().copied().take(n).collect::<Vec<_>>());
            prop_assert_eq!(next, want.get(n).copied().unwrap_or(to));
            prop_assert_eq!(idx.tokens.get(&from).is_some(), model.contains(&from));
            let pages: BTreeSet<u64> = model.iter().map(|id| id / super::super::TokenTable::PAGE as u64).collect();
            prop_assert_eq!(idx.tokens.slots(), pages.len() * super::super::TokenTable::PAGE);
            prop_assert!(model.last().is_none_or(|&last| idx.tokens.id_end() > last));
        }
    }
}
