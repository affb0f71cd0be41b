//! Node names (`--node-name`), interned: a token's last use names the node
//! that saw it by a small id ([`intern`]), not a `String` per token, since a
//! follower holds a million tokens and a handful of node names.
//!
//! One table per process: records are converted to and from token state in
//! many places with no engine at hand, and a name means the same node for
//! every engine. Bounded: at most [`NODES_MAX`] names (a fleet of sidecars
//! whose pods come and go, each with a new host name, over a primary's
//! life); past that a new name is kept as unknown (id 0) and logged once.
//!
//! Part of the index (layer L1).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;
use rustc_hash::FxHashMap as HashMap;

/// Most distinct node names kept (about 100 bytes each).
pub const NODES_MAX: usize = 65_536;

/// Longest node name, in bytes.
pub const NAME_MAX: usize = 64;

/// Names by id (id 0, the unknown node, is the empty name) and back.
struct Table {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
}

static TABLE: LazyLock<RwLock<Table>> = LazyLock::new(|| {
    RwLock::new(Table {
        names: vec![Arc::from("")],
        ids: HashMap::default(),
    })
});

/// Set once the table is full (the warning is logged once).
static FULL: AtomicBool = AtomicBool::new(false);

/// Whether `name` will do as a node name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn is_valid(name: &str) -> bool {
    (1..=NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The id of `name`, added if new. The empty name, an invalid one (never
/// written by keyward) and any new name once the table is full are 0,
/// unknown.
pub fn intern(name: &str) -> u32 {
    if name.is_empty() || !is_valid(name) {
        return 0;
    }
    if let Some(&id) = TABLE.read().ids.get(name) {
        return id;
    }
    let mut t = TABLE.write();
    if let Some(&id) = t.ids.get(name) {
        return id;
    }
    if t.names.len() >= NODES_MAX {
        if !FULL.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max = NODES_MAX,
                "too many distinct node names: last uses by further nodes are kept without their node"
            );
        }
        return 0;
    }
    let Ok(id) = u32::try_from(t.names.len()) else {
        return 0;
    };
    let name: Arc<str> = Arc::from(name);
    t.names.push(name.clone());
    t.ids.insert(name, id);
    id
}

/// The name of node `id` (empty for 0 or an id never handed out).
pub fn name(id: u32) -> String {
    if id == 0 {
        return String::new();
    }
    TABLE
        .read()
        .names
        .get(id as usize)
        .map(|n| n.to_string())
        .unwrap_or_default()
}
