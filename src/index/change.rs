//! [`Change`], the one language of committed mutations (sled, PostgreSQL,
//! the index and replication all speak it), and its wire codec
//! ([`to_wire`], [`from_wire`]) used by the PostgreSQL change log and the
//! replication stream. Imports only the vocabulary (`model`, `pb`).

use crate::model::{Kind, ResourceKey};
use crate::pb::replication::{self as rpb, change::Change as Wire};
use crate::pb::store::{AccountRecord, ResourceRecord, TokenRecord};

/// One committed mutation. The index is a pure function of the ordered
/// stream of changes, so the same stream can feed any node.
// `PutToken` is the large variant and by far the most common one (every
// token write, every snapshot record): boxing it would cost an allocation
// per token change to save bytes in short-lived commit vectors.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// An account was created or changed.
    PutAccount(AccountRecord),
    /// A resource was registered.
    PutResource(ResourceRecord),
    /// A resource was deleted (its grants are dropped by `PutToken`s in the
    /// same commit).
    DeleteResource {
        /// Owning account.
        account_id: u64,
        /// The resource.
        key: ResourceKey,
    },
    /// A token was created or changed.
    PutToken(TokenRecord),
    /// A token was deleted.
    DeleteToken(u64),
    /// The id counters moved.
    Counters {
        /// Next account id to hand out.
        next_account_id: u64,
        /// Next token id to hand out.
        next_token_id: u64,
    },
}

/// An index change on the wire.
pub fn to_wire(c: &Change) -> rpb::Change {
    let change = match c {
        Change::PutAccount(a) => Wire::PutAccount(a.clone()),
        Change::PutResource(r) => Wire::PutResource(r.clone()),
        Change::DeleteResource { account_id, key } => Wire::DeleteResource(rpb::DeletedResource {
            account_id: *account_id,
            resource_type: key.kind.to_wire(),
            id: key.id.as_str().to_string(),
        }),
        Change::PutToken(t) => Wire::PutToken(t.clone()),
        Change::DeleteToken(id) => Wire::DeleteToken(*id),
        Change::Counters {
            next_account_id,
            next_token_id,
        } => Wire::Counters(rpb::Counters {
            next_account_id: *next_account_id,
            next_token_id: *next_token_id,
        }),
    };
    rpb::Change {
        change: Some(change),
    }
}

/// A wire change as an index change; `None` if it is not one.
pub fn from_wire(c: rpb::Change) -> Option<Change> {
    Some(match c.change? {
        Wire::PutAccount(a) => Change::PutAccount(a),
        Wire::PutResource(r) => Change::PutResource(r),
        Wire::DeleteResource(d) => Change::DeleteResource {
            account_id: d.account_id,
            key: ResourceKey::new(Kind::from_wire(d.resource_type)?, d.id.as_str()),
        },
        Wire::PutToken(t) => Change::PutToken(t),
        Wire::DeleteToken(id) => Change::DeleteToken(id),
        Wire::Counters(c) => Change::Counters {
            next_account_id: c.next_account_id,
            next_token_id: c.next_token_id,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_through_the_wire() {
        let changes = vec![
            Change::Counters {
                next_account_id: 3,
                next_token_id: 9,
            },
            Change::PutAccount(AccountRecord {
                id: 2,
                name: "a".into(),
                created_at_ms: 5,
                ..AccountRecord::default()
            }),
            Change::DeleteResource {
                account_id: 2,
                key: ResourceKey::new(Kind::Domain, "example.com"),
            },
            Change::DeleteToken(7),
        ];
        for c in changes {
            let back = from_wire(to_wire(&c)).expect("decodes");
            assert_eq!(format!("{back:?}"), format!("{c:?}"));
        }
        assert!(from_wire(rpb::Change { change: None }).is_none());
    }
}
