//! Interned values a million tokens share ([`Rights`]): what a token may
//! access (its grants and scopes, often the same "ADMIN on this project"
//! for thousands of an account's tokens) and the name of the token that
//! created it (one admin token creates many). Together they are one thin
//! pointer in the token, and the hot path reads rights many tokens keep in
//! cache.
//!
//! One table per process, like node names (records become
//! token state in many places with no index at hand). Values no token holds
//! any more are dropped when a table has doubled since it was last pruned,
//! so it stays within twice the distinct values in use.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

use super::{Grant, ScopeGrant};

/// Values kept before a table's first prune.
const PRUNE_FROM: usize = 1024;

/// One table of shared values.
struct Table<T> {
    values: HashSet<Entry<T>>,
    pruned_at: usize,
    /// The value asked for last: records come in runs that share one (a
    /// load or a snapshot, in id order: the tokens one admin made), and
    /// comparing with it costs less than hashing.
    last: Option<Entry<T>>,
}

/// A value in a table (a local type, so that it can be looked up by what
/// its value is looked up by).
#[derive(PartialEq, Eq, Hash)]
struct Entry<T>(Arc<T>);

impl<T: Hash + Eq> Table<T> {
    fn new() -> Mutex<Self> {
        Mutex::new(Self {
            values: HashSet::new(),
            pruned_at: 0,
            last: None,
        })
    }

    /// The shared value equal to `key`, made by `make` if new.
    fn get<Q>(&mut self, key: &Q, make: impl FnOnce() -> T) -> Arc<T>
    where
        Entry<T>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(last) = self.last.as_ref().filter(|l| (*l).borrow() == key) {
            return last.0.clone();
        }
        let v = match self.values.get(key) {
            Some(v) => v.0.clone(),
            None => {
                if self.values.len() >= PRUNE_FROM.max(2 * self.pruned_at) {
                    // Only the table holds these (and `last`, one more).
                    self.last = None;
                    self.values.retain(|v| Arc::strong_count(&v.0) > 1);
                    self.pruned_at = self.values.len();
                }
                let v = Arc::new(make());
                self.values.insert(Entry(v.clone()));
                v
            }
        };
        self.last = Some(Entry(v.clone()));
        v
    }
}

/// A token's grants, feature scopes and creator, shared with every token
/// that has the same three (one pointer in the token).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Rights(Arc<RightsSet>);

/// The shared part of [`Rights`].
#[derive(PartialEq, Eq, Hash)]
pub struct RightsSet {
    grants: Box<[Grant]>,
    scopes: Box<[ScopeGrant]>,
    creator: Box<str>,
}

/// A lookup key for [`RightsSet`] without building one.
#[derive(PartialEq, Eq)]
struct RightsKey<'a> {
    grants: &'a [Grant],
    scopes: &'a [ScopeGrant],
    creator: &'a str,
}

impl<'a> Borrow<dyn KeyOf + 'a> for Entry<RightsSet> {
    fn borrow(&self) -> &(dyn KeyOf + 'a) {
        &*self.0
    }
}

/// What a rights set is looked up by (its parts, borrowed).
trait KeyOf {
    fn key(&self) -> RightsKey<'_>;
}

impl KeyOf for RightsSet {
    fn key(&self) -> RightsKey<'_> {
        RightsKey {
            grants: &self.grants,
            scopes: &self.scopes,
            creator: &self.creator,
        }
    }
}

impl KeyOf for RightsKey<'_> {
    fn key(&self) -> RightsKey<'_> {
        RightsKey {
            grants: self.grants,
            scopes: self.scopes,
            creator: self.creator,
        }
    }
}

impl PartialEq for dyn KeyOf + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn KeyOf + '_ {}

impl Hash for dyn KeyOf + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

// `RightsSet`'s derived Hash must agree with `RightsKey`'s: both hash the
// three parts in order.
impl Hash for RightsKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.grants.hash(state);
        self.scopes.hash(state);
        self.creator.hash(state);
    }
}

static RIGHTS: LazyLock<Mutex<Table<RightsSet>>> = LazyLock::new(Table::new);

impl Rights {
    /// The shared rights equal to these grants, scopes and creator (added
    /// if new).
    pub fn new(grants: &[Grant], scopes: &[ScopeGrant], creator: &str) -> Self {
        let key = RightsKey {
            grants,
            scopes,
            creator,
        };
        Rights(RIGHTS.lock().get(&key as &dyn KeyOf, || RightsSet {
            grants: grants.into(),
            scopes: scopes.into(),
            creator: creator.into(),
        }))
    }

    /// These rights with other grants.
    pub fn with_grants(&self, grants: &[Grant]) -> Self {
        Self::new(grants, self.scopes(), self.creator())
    }

    /// These rights with other scopes.
    pub fn with_scopes(&self, scopes: &[ScopeGrant]) -> Self {
        Self::new(self.grants(), scopes, self.creator())
    }

    /// The name of the token that created the token.
    pub fn creator(&self) -> &str {
        &self.0.creator
    }

    /// What the token may access, in the order granted.
    pub fn grants(&self) -> &[Grant] {
        &self.0.grants
    }

    /// Its feature scopes; empty = unrestricted.
    pub fn scopes(&self) -> &[ScopeGrant] {
        &self.0.scopes
    }
}

impl Default for Rights {
    fn default() -> Self {
        Self::new(&[], &[], "")
    }
}

impl std::fmt::Debug for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rights")
            .field("grants", &self.grants())
            .field("scopes", &self.scopes())
            .field("creator", &self.creator())
            .finish()
    }
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

    fn scope(i: u8) -> ScopeGrant {
        ScopeGrant {
            name: i,
            level: Level::Viewer,
        }
    }

    #[test]
    fn equal_rights_share_one_allocation_and_unused_ones_go() {
        let a = Rights::new(&[grant("intern-a"), grant("intern-b")], &[scope(1)], "c");
        let b = Rights::new(&[grant("intern-a"), grant("intern-b")], &[scope(1)], "c");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        let c = Rights::new(&[grant("intern-b"), grant("intern-a")], &[scope(1)], "c");
        assert!(!Arc::ptr_eq(&a.0, &c.0), "order is part of the list");
        let d = Rights::new(&[grant("intern-a"), grant("intern-b")], &[], "c");
        assert!(!Arc::ptr_eq(&a.0, &d.0), "scopes are part of the rights");
        assert!(d.scopes().is_empty());
        assert_eq!(a.grants(), &[grant("intern-a"), grant("intern-b")][..]);
        assert_eq!(a.scopes(), &[scope(1)][..]);
        assert!(Rights::default().grants().is_empty());
        // Many sets nobody keeps: the table does not grow without bound.
        for i in 0..10 * PRUNE_FROM {
            drop(Rights::new(&[grant(&format!("intern-gone-{i}"))], &[], "c"));
        }
        assert!(RIGHTS.lock().values.len() <= 4 * PRUNE_FROM);
        // Rights still held survive the prunes.
        assert!(Arc::ptr_eq(
            &a.0,
            &Rights::new(&[grant("intern-a"), grant("intern-b")], &[scope(1)], "c").0
        ));
    }

    #[test]
    fn the_creator_is_part_of_the_rights() {
        let a = Rights::new(&[grant("intern-c")], &[], "intern-creator");
        let b = Rights::new(&[grant("intern-c")], &[], &String::from("intern-creator"));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a.creator(), "intern-creator");
        let c = Rights::new(&[grant("intern-c")], &[], "intern-other");
        assert!(!Arc::ptr_eq(&a.0, &c.0));
        let d = a.with_grants(&[grant("intern-d")]);
        assert_eq!(
            (d.creator(), d.grants()),
            ("intern-creator", &[grant("intern-d")][..])
        );
        let e = a.with_scopes(&[scope(2)]);
        assert_eq!(
            (e.creator(), e.scopes()),
            ("intern-creator", &[scope(2)][..])
        );
    }
}
