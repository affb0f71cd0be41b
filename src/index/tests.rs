//! Unit tests of the index's last-use merge and node names.

use std::sync::atomic::Ordering;

use super::{newer_use, nodes, Change, Index};
use crate::pb::store::TokenRecord;
use crate::token::DigestKey;

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
    let mut idx = Index::new(DigestKey::from_bytes([7; 32]));
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
    let mut idx = Index::new(DigestKey::from_bytes([7; 32]));
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
    assert_eq!(t.last_used_saved_ms.load(Ordering::Relaxed), 10_000);
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

/// The flags and the node id sit in what would be padding after the
/// 33-byte digest, an empty table slot costs no more than a token, and the
/// token entry does not grow unnoticed (a follower holds a million).
#[test]
fn a_token_entry_stays_compact() {
    use super::TokenState;
    use std::mem::{offset_of, size_of};
    assert_eq!(offset_of!(TokenState, paused), 33);
    assert_eq!(
        offset_of!(TokenState, id),
        40,
        "three flags and the node id fill the digest's padding"
    );
    assert_eq!(size_of::<Option<TokenState>>(), size_of::<TokenState>());
    assert!(
        size_of::<TokenState>() <= 216,
        "{}",
        size_of::<TokenState>()
    );
}
