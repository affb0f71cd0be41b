//! Target `store_records`: a sequence of store records (what `Store::load`
//! yields) decoded and applied to an `Index`, `TokenState` record round
//! trips, and decisions over whatever the records built.

use keyward::authz::{self, Check};
use keyward::index::{Change, Index, TokenState, TokenTable};
use keyward::model::{Kind, Level, ResourceKey, SCOPE_NAMES};
use keyward::pb::store as rec;
use keyward::token::DigestKey;

use super::common::{decode_round_trip, NOW_MS};

/// What the store load yields, one record per item: `[kind][len u16 le][bytes]`.
/// Kinds: 0 account, 1 resource, 2 token, 3 delete token (8 bytes of id),
/// 4 counters (16 bytes), 5 audit event, 6 delete resource (a resource record).
pub fn store_records(data: &[u8]) {
    let key = DigestKey::from_bytes([7; 32]);
    let mut index = Index::new(key.clone());
    let mut rest = data;
    let mut applied = 0usize;
    while rest.len() >= 3 && applied < 256 {
        let kind = rest[0];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
        let body = &rest[3..(3 + len).min(rest.len())];
        rest = &rest[(3 + len).min(rest.len())..];
        let change = match kind % 7 {
            0 => decode_round_trip::<rec::AccountRecord>(body).map(Change::PutAccount),
            1 => decode_round_trip::<rec::ResourceRecord>(body).map(Change::PutResource),
            2 => decode_round_trip::<rec::TokenRecord>(body).map(|r| {
                check_token_record(&r, &key);
                Change::PutToken(r)
            }),
            3 => Some(Change::DeleteToken(u64::from_le_bytes(pad8(body)))),
            4 => {
                let mut b = [0u8; 16];
                let n = body.len().min(16);
                b[..n].copy_from_slice(&body[..n]);
                Some(Change::Counters {
                    next_account_id: u64::from_be_bytes(b[..8].try_into().expect("8")),
                    next_token_id: u64::from_be_bytes(b[8..].try_into().expect("8")),
                })
            }
            5 => {
                decode_round_trip::<rec::AuditRecord>(body);
                None
            }
            _ => decode_round_trip::<rec::ResourceRecord>(body).and_then(|r| {
                Some(Change::DeleteResource {
                    account_id: r.account_id,
                    key: ResourceKey::new(Kind::from_wire(r.resource_type)?, r.id.as_str()),
                })
            }),
        };
        let Some(change) = change else { continue };
        // Any id: the table makes a page (704 KiB) only for an id it holds,
        // so 256 records cost at most 256 pages, whatever the counter says.
        index.apply(&change);
        applied += 1;
    }
    check_index(&index);
}

fn pad8(b: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    let n = b.len().min(8);
    out[..n].copy_from_slice(&b[..n]);
    out
}

/// A token record through `TokenState`: the fields kept as they are, only
/// valid grants and scopes kept, the digest only under its own key, and
/// `to_record` a fixed point.
fn check_token_record(r: &rec::TokenRecord, key: &DigestKey) {
    let state = TokenState::from_record(r, key);
    // Debug never shows the hash: a marker hash must not appear in it
    // (unless the input put the marker in a field Debug does show).
    const MARKER: &str = "$argon2id$MARKER-f00d";
    let shown = format!("{:?}{:?}{:?}", r.name, r.grants, r.scopes);
    if !shown.contains("MARKER-f00d") {
        let probe = rec::TokenRecord {
            phc_hash: MARKER.into(),
            ..r.clone()
        };
        let dbg = format!("{:?}", TokenState::from_record(&probe, key));
        assert!(
            !dbg.contains("MARKER-f00d"),
            "Debug of a token shows its hash"
        );
    }
    let back = state.to_record(key);
    // Ids keyward never issues (at or above 2^32 - 1) do not fit an entry;
    // the index does not hold such a record (`Index::apply`).
    if TokenState::fits(r) {
        assert_eq!(
            (back.id, back.account_id, back.replaced_by, back.replaces),
            (r.id, r.account_id, r.replaced_by, r.replaces)
        );
    }
    assert_eq!(back.name, r.name);
    assert_eq!(back.phc_hash, r.phc_hash);
    // The last 4 as stored; of a longer text (keyward never writes one)
    // its last 4 bytes that start a character.
    if r.last_4_digits.len() <= 4 {
        assert_eq!(back.last_4_digits, r.last_4_digits);
    } else {
        assert!(r.last_4_digits.ends_with(&back.last_4_digits));
        assert!((1..=4).contains(&back.last_4_digits.len()));
    }
    assert_eq!(back.created_by, r.created_by);
    assert_eq!(back.created_at_ms, r.created_at_ms);
    assert_eq!(back.expires_at_ms, r.expires_at_ms);
    assert_eq!(back.paused, r.paused);
    assert_eq!(back.last_used_at_ms, r.last_used_at_ms);
    // The node comes back as stored, or as unknown: a name keyward never
    // writes (invalid), or one past the interning table's bound.
    assert!(
        back.last_used_by == r.last_used_by || back.last_used_by.is_empty(),
        "last_used_by {:?} came back as {:?}",
        r.last_used_by,
        back.last_used_by
    );
    assert_eq!(back.root, r.root);
    let valid_grants: Vec<&rec::GrantRecord> = r
        .grants
        .iter()
        .filter(|g| (1..=4).contains(&g.resource_type) && matches!(g.level, 10 | 100))
        .collect();
    assert_eq!(back.grants.len(), valid_grants.len());
    for (b, g) in back.grants.iter().zip(valid_grants) {
        assert_eq!(b, g);
    }
    let valid_scopes: Vec<&rec::ScopeRecord> = r
        .scopes
        .iter()
        .filter(|s| SCOPE_NAMES.contains(&s.name.as_str()) && matches!(s.level, 10 | 100))
        .collect();
    assert_eq!(back.scopes.len(), valid_scopes.len());
    for (b, s) in back.scopes.iter().zip(valid_scopes) {
        assert_eq!(b, s);
    }
    let digest_kept = r.digest_key_id.as_slice() == key.id() && r.verified_digest.len() == 32;
    assert_eq!(state.digest.is_some(), digest_kept);
    if digest_kept {
        assert_eq!(back.verified_digest, r.verified_digest);
    }
    // A record keyward wrote reads back to itself.
    let again = TokenState::from_record(&back, key).to_record(key);
    assert_eq!(again, back, "to_record is not a fixed point");
}

/// Whatever the records built: every count agrees, every registered
/// resource is found from its account, and every token gets a decision on
/// every resource without a panic.
fn check_index(index: &Index) {
    assert_eq!(index.tokens.len(), index.tokens.values().count());
    // Memory follows the tokens: no page without one, each under its id.
    assert!(index.tokens.slots() <= index.tokens.len() * TokenTable::PAGE);
    for t in index.tokens.values() {
        assert!(std::ptr::eq(index.tokens.get(&t.id()).expect("held"), t));
    }
    let mut checks = Vec::new();
    for account in index.accounts.values() {
        for kind in Kind::ALL {
            let ids: Vec<String> = if kind == Kind::Account {
                vec![account.id_str.to_string()]
            } else {
                account.resources[kind.slot()]
                    .keys()
                    .map(|k| k.to_string())
                    .collect()
            };
            for id in ids {
                assert!(
                    index.is_registered(kind, &id),
                    "{kind:?} {id:?} of account {} not registered",
                    account.id
                );
                checks.push((kind, id));
            }
        }
    }
    for t in index.tokens.values().take(16) {
        for (kind, id) in checks.iter().take(32) {
            for level in [Level::Viewer, Level::Admin] {
                let check = Check {
                    kind: *kind,
                    id,
                    level,
                    scope: "email",
                    cost: 1,
                };
                let _ = authz::decide(index, t, &check, NOW_MS);
            }
        }
    }
}
