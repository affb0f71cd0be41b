//! Interned values a million tokens share: what a token may access
//! ([`Rights`]: its grants and scopes, often the same "ADMIN on this
//! project" for thousands of an account's tokens) and the name of the
//! token that created it ([`Creator`]). Each is one thin pointer in the
//! token, and the hot path reads rights many tokens keep in cache.
//!
//! One table per kind and per process, like node names (records become
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
        })
    }

    /// The shared value equal to `key`, made by `make` if new.
    fn get<Q>(&mut self, key: &Q, make: impl FnOnce() -> T) -> Arc<T>
    where
        Entry<T>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(v) = self.values.get(key) {
            return v.0.clone();
        }
        if self.values.len() >= PRUNE_FROM.max(2 * self.pruned_at) {
            // Only the table holds these.
            self.values.retain(|v| Arc::strong_count(&v.0) > 1);
            self.pruned_at = self.values.len();
        }
        let v = Arc::new(make());
        self.values.insert(Entry(v.clone()));
        v
    }
}

/// A token's grants and feature scopes, shared with every token that has
/// the same (one pointer in the token).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Rights(Arc<RightsSet>);

/// The shared part of [`Rights`].
#[derive(PartialEq, Eq, Hash)]
pub struct RightsSet {
    grants: Box<[Grant]>,
    scopes: Box<[ScopeGrant]>,
}

/// A lookup key for [`RightsSet`] without building one.
#[derive(PartialEq, Eq)]
struct RightsKey<'a> {
    grants: &'a [Grant],
    scopes: &'a [ScopeGrant],
}

impl<'a> Borrow<dyn KeyOf + 'a> for Entry<RightsSet> {
    fn borrow(&self) -> &(dyn KeyOf + 'a) {
        &*self.0
    }
}

impl Borrow<str> for Entry<Box<str>> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// What a rights set is looked up by (its lists, borrowed).
trait KeyOf {
    fn key(&self) -> RightsKey<'_>;
}

impl KeyOf for RightsSet {
    fn key(&self) -> RightsKey<'_> {
        RightsKey {
            grants: &self.grants,
            scopes: &self.scopes,
        }
    }
}

impl KeyOf for RightsKey<'_> {
    fn key(&self) -> RightsKey<'_> {
        RightsKey {
            grants: self.grants,
            scopes: self.scopes,
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
// two slices in order.
impl Hash for RightsKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.grants.hash(state);
        self.scopes.hash(state);
    }
}

static RIGHTS: LazyLock<Mutex<Table<RightsSet>>> = LazyLock::new(Table::new);

impl Rights {
    /// The shared rights equal to these grants and scopes (added if new).
    pub fn new(grants: &[Grant], scopes: &[ScopeGrant]) -> Self {
        let key = RightsKey { grants, scopes };
        Rights(RIGHTS.lock().get(&key as &dyn KeyOf, || RightsSet {
            grants: grants.into(),
            scopes: scopes.into(),
        }))
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
        Self::new(&[], &[])
    }
}

impl std::fmt::Debug for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rights")
            .field("grants", &self.grants())
            .field("scopes", &self.scopes())
            .finish()
    }
}

/// The name of the token that created a token, shared with every token it
/// created (one pointer in the token).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Creator(Arc<Box<str>>);

static CREATORS: LazyLock<Mutex<Table<Box<str>>>> = LazyLock::new(Table::new);

impl Creator {
    /// The shared name equal to `name` (added if new).
    pub fn new(name: &str) -> Self {
        Creator(CREATORS.lock().get(name, || name.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Creator {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Creator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Creator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
        let a = Rights::new(&[grant("intern-a"), grant("intern-b")], &[scope(1)]);
        let b = Rights::new(&[grant("intern-a"), grant("intern-b")], &[scope(1)]);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        let c = Rights::new(&[grant("intern-b"), grant("intern-a")], &[scope(1)]);
        assert!(!Arc::ptr_eq(&a.0, &c.0), "order is part of the list");
        let d = Rights::new(&[grant("intern-a"), grant("intern-b")], &[]);
        assert!(!Arc::ptr_eq(&a.0, &d.0), "scopes are part of the rights");
        assert!(d.scopes().is_empty());
        assert_eq!(a.grants(), &[grant("intern-a"), grant("intern-b")][..]);
        assert_eq!(a.scopes(), &[scope(1)][..]);
        assert!(Rights::default().grants().is_empty());
        // Many sets nobody keeps: the table does not grow without bound.
        for i in 0..10 * PRUNE_FROM {
            drop(Rights::new(&[grant(&format!("intern-gone-{i}"))], &[]));
        }
        assert!(RIGHTS.lock().values.len() <= 4 * PRUNE_FROM);
        // Rights still held survive the prunes.
        assert!(Arc::ptr_eq(
            &a.0,
            &Rights::new(&[grant("intern-a"), grant("intern-b")], &[scope(1)]).0
        ));
    }

    #[test]
    fn equal_creators_share_one_name() {
        let a = Creator::new("intern-creator");
        let b = Creator::new(&String::from("intern-creator"));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(&*a, "intern-creator");
        assert_eq!(format!("{a}"), "intern-creator");
        for i in 0..10 * PRUNE_FROM {
            drop(Creator::new(&format!("intern-creator-{i}")));
        }
        assert!(CREATORS.lock().values.len() <= 4 * PRUNE_FROM);
        assert!(Arc::ptr_eq(&a.0, &Creator::new("intern-creator").0));
    }
}
