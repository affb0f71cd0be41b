//! Interned grant lists: tokens with the same grants (often thousands of an
//! account's, all "ADMIN on this project") share one allocation, so a
//! token holds one pointer and the hot path reads grants many tokens keep
//! in cache.
//!
//! One table per process, like node names (records become token state in
//! many places with no index at hand). Lists no token holds any more are
//! dropped when the table has doubled since it was last pruned, so it stays
//! within twice the distinct lists in use.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

use super::Grant;

/// A token's grants, shared with every token that has the same.
pub type Grants = Arc<[Grant]>;

struct Table {
    lists: HashSet<Grants>,
    pruned_at: usize,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(|| {
    Mutex::new(Table {
        lists: HashSet::new(),
        pruned_at: 0,
    })
});

/// Lists kept before the first prune.
const PRUNE_FROM: usize = 1024;

/// The shared list equal to `grants` (added if new).
pub fn grants(grants: &[Grant]) -> Grants {
    if grants.is_empty() {
        static EMPTY: LazyLock<Grants> = LazyLock::new(|| Arc::from(Vec::new()));
        return EMPTY.clone();
    }
    let mut t = TABLE.lock();
    if let Some(g) = t.lists.get(grants) {
        return g.clone();
    }
    if t.lists.len() >= PRUNE_FROM.max(2 * t.pruned_at) {
        // Only the table holds these.
        t.lists.retain(|g| Arc::strong_count(g) > 1);
        t.pruned_at = t.lists.len();
    }
    let g: Grants = Arc::from(grants);
    t.lists.insert(g.clone());
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Level, ResourceKey};

    fn grant(id: &str) -> Grant {
        Grant {
            resource: ResourceKey::new(Kind::Project, id),
            level: Level::Admin,
        }
    }

    #[test]
    fn equal_lists_share_one_allocation_and_unused_ones_go() {
        let a = grants(&[grant("intern-a"), grant("intern-b")]);
        let b = grants(&[grant("intern-a"), grant("intern-b")]);
        assert!(Arc::ptr_eq(&a, &b));
        let c = grants(&[grant("intern-b"), grant("intern-a")]);
        assert!(!Arc::ptr_eq(&a, &c), "order is part of the list");
        assert!(grants(&[]).is_empty());
        // Many lists nobody keeps: the table does not grow without bound.
        for i in 0..10 * PRUNE_FROM {
            drop(grants(&[grant(&format!("intern-gone-{i}"))]));
        }
        assert!(TABLE.lock().lists.len() <= 4 * PRUNE_FROM);
        // A list still held survives the prunes.
        assert!(Arc::ptr_eq(
            &a,
            &grants(&[grant("intern-a"), grant("intern-b")])
        ));
    }
}
