//! An account and its resources, as the index holds them.

use rustc_hash::FxHashMap as HashMap;

use crate::model::{Kind, Policy};
use crate::pb::store::{AccountRecord, ResourceRecord};

/// A registered resource's place in the tree.
#[derive(Debug, Clone)]
pub struct ResourceNode {
    /// The parent project of a sandbox; `None` when the parent is the account.
    pub parent: Option<Box<str>>,
}

/// An account and what it owns.
#[derive(Debug)]
pub struct AccountState {
    /// Account id.
    pub id: u64,
    /// The id in decimal: the id of its ACCOUNT resource, kept to compare
    /// grants without formatting on the hot path.
    pub id_str: Box<str>,
    /// Display name.
    pub name: String,
    /// Creation time, unix ms.
    pub created_at_ms: i64,
    /// Registered resources per kind (slot = `Kind::slot`); the account
    /// resource itself is implicit.
    pub resources: [HashMap<Box<str>, ResourceNode>; 4],
    /// Ids of the account's tokens, ordered for paging.
    pub tokens: super::IdSet,
    /// The rules for its tokens' expiry.
    pub policy: Policy,
}

impl AccountState {
    /// An empty account, until [`AccountState::set`] gives it its record.
    pub fn new(id: u64) -> Self {
        AccountState {
            id,
            id_str: id.to_string().into(),
            name: String::new(),
            created_at_ms: 0,
            resources: Default::default(),
            tokens: super::IdSet::new(),
            policy: Policy::default(),
        }
    }

    /// Takes the stored record's fields (what it owns stays).
    pub fn set(&mut self, r: &AccountRecord) {
        self.name.clone_from(&r.name);
        self.created_at_ms = r.created_at_ms;
        self.policy = Policy::of(r);
    }

    /// The stored record of the account.
    pub fn to_record(&self) -> AccountRecord {
        let mut r = AccountRecord {
            id: self.id,
            name: self.name.clone(),
            created_at_ms: self.created_at_ms,
            ..AccountRecord::default()
        };
        self.policy.store(&mut r);
        r
    }

    /// The stored records of its resources (a sandbox names its project
    /// as parent, anything else the account): what rebuilds them.
    pub fn resource_records(&self) -> impl Iterator<Item = ResourceRecord> + '_ {
        Kind::ALL.into_iter().flat_map(move |kind| {
            self.resources[kind.slot()].iter().map(move |(id, node)| {
                let (parent_type, parent_id) = match &node.parent {
                    Some(p) => (Kind::Project.to_wire(), p.to_string()),
                    None => (Kind::Account.to_wire(), self.id_str.to_string()),
                };
                ResourceRecord {
                    account_id: self.id,
                    resource_type: kind.to_wire(),
                    id: id.to_string(),
                    parent_type,
                    parent_id,
                }
            })
        })
    }
}
