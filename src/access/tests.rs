//! The admin rules on their own: an index built from changes, no engine,
//! no store, no clock. The end-to-end answers (over gRPC and the REST
//! facades) are in tests/rules.rs and tests/containment.rs.

use super::{derived_name, keeps_every_domain, may_change_expiry, Access};
use crate::error::Error;
use crate::index::{Change, Index, TokenState};
use crate::model::{Grant, Kind, Level, ResourceKey, ScopeGrant, SCOPE_NAMES};
use crate::pb::store::{AccountRecord, ResourceRecord, TokenRecord};
use crate::token::DigestKey;

const NOW: i64 = 1_000_000;
const ACCOUNT: u64 = 1;
const OTHER: u64 = 2;

fn grant(kind: Kind, id: &str, level: Level) -> Grant {
    let resource = if kind == Kind::Account {
        ResourceKey::account(id.parse().expect("account id"))
    } else {
        ResourceKey::new(kind, id)
    };
    Grant { resource, level }
}

fn scope(name: &str, level: Level) -> ScopeGrant {
    let name = SCOPE_NAMES
        .iter()
        .position(|n| *n == name)
        .expect("a scope name");
    ScopeGrant {
        name: u8::try_from(name).expect("few scopes"),
        level,
    }
}

/// Two accounts; account 1 has domains a.example and b.example and
/// project p.
fn world() -> Index {
    let mut idx = Index::new(DigestKey::from_bytes([7; 32]));
    idx.apply(&Change::Counters {
        next_account_id: 3,
        next_token_id: 1_000,
    });
    for id in [ACCOUNT, OTHER] {
        idx.apply(&Change::PutAccount(AccountRecord {
            id,
            name: format!("account {id}"),
            created_at_ms: 1,
            ..AccountRecord::default()
        }));
    }
    for (kind, id) in [
        (Kind::Domain, "a.example"),
        (Kind::Domain, "b.example"),
        (Kind::Project, "p"),
    ] {
        idx.apply(&Change::PutResource(ResourceRecord {
            account_id: ACCOUNT,
            resource_type: kind.to_wire(),
            id: id.into(),
            parent_type: Kind::Account.to_wire(),
            parent_id: ACCOUNT.to_string(),
        }));
    }
    put(&mut idx, 1, 0, |t| t.set_root(true));
    idx
}

/// Adds token `id` of `account`, shaped by `edit`.
fn put(idx: &mut Index, id: u64, account: u64, edit: impl FnOnce(&mut TokenState)) {
    let record = TokenRecord {
        id,
        account_id: account,
        name: format!("token {id}"),
        ..Default::default()
    };
    let mut state = TokenState::from_record(&record, idx.key());
    edit(&mut state);
    let record = state.to_record(idx.key());
    idx.apply(&Change::PutToken(record));
}

fn denied(e: Error) -> String {
    match e {
        Error::PermissionDenied(m) => m,
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
}

#[test]
fn only_a_live_token_has_access() {
    let mut idx = world();
    put(&mut idx, 2, ACCOUNT, |t| t.set_paused(true));
    put(&mut idx, 3, ACCOUNT, |t| t.set_expires_at_ms(Some(NOW)));
    put(&mut idx, 4, ACCOUNT, |t| t.set_replaced_by(5));
    put(&mut idx, 5, ACCOUNT, |_| {});
    let unauthenticated = |id| matches!(Access::of(&idx, id, NOW), Err(Error::Unauthenticated(_)));
    assert!(unauthenticated(2), "paused");
    assert!(unauthenticated(3), "expired");
    assert!(unauthenticated(99), "unknown");
    // A reset token only authorizes: as an admin caller it is refused and
    // told to use its replacement.
    let reset = Access::of(&idx, 4, NOW).map(|_| ()).unwrap_err();
    assert!(denied(reset).contains("replaced by token 5"));
    assert!(Access::of(&idx, 5, NOW).is_ok());
}

#[test]
fn nothing_crosses_accounts_and_root_reaches_all() {
    let mut idx = world();
    put(&mut idx, 2, ACCOUNT, |t| {
        t.set_grants(&[grant(Kind::Account, "1", Level::Admin)]);
    });
    let admin = Access::of(&idx, 2, NOW).expect("live");
    assert!(admin.account(&idx, ACCOUNT).is_ok());
    assert!(denied(admin.account(&idx, OTHER).unwrap_err()).contains("account 2"));
    let root = Access::of(&idx, 1, NOW).expect("root");
    assert!(root.account(&idx, OTHER).is_ok());
    assert!(root.require_root("create accounts").is_ok());
    assert_eq!(
        denied(admin.require_root("create accounts").unwrap_err()),
        "only the root token can create accounts"
    );
}

#[test]
fn a_token_outside_the_callers_reach_does_not_exist_for_it() {
    let mut idx = world();
    // Token 2 holds ADMIN on a.example only; token 3 holds b.example.
    put(&mut idx, 2, ACCOUNT, |t| {
        t.set_grants(&[grant(Kind::Domain, "a.example", Level::Admin)]);
    });
    put(&mut idx, 3, ACCOUNT, |t| {
        t.set_grants(&[grant(Kind::Domain, "b.example", Level::Admin)]);
    });
    let a = Access::of(&idx, 2, NOW).expect("live");
    assert!(a.token(&idx, ACCOUNT, 2).is_ok(), "its own token");
    let err = a.token(&idx, ACCOUNT, 3).map(|_| ()).unwrap_err();
    let unknown = a.token(&idx, ACCOUNT, 99).map(|_| ()).unwrap_err();
    // The same answer as an id never issued, with only the id differing.
    assert!(matches!(err, Error::NotFound(_)));
    assert_eq!(
        err.to_string().replace('3', "N"),
        unknown.to_string().replace("99", "N")
    );
    // No escalation: it cannot grant what it does not hold at ADMIN.
    let account = a.account(&idx, ACCOUNT).expect("account");
    let b = [grant(Kind::Domain, "b.example", Level::Viewer)];
    assert!(denied(a.check_grantable(&idx, account, &b, &[]).unwrap_err()).contains("b.example"));
    let p = [grant(Kind::Project, "nope", Level::Viewer)];
    assert!(matches!(
        a.check_grantable(&idx, account, &p, &[]),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn scopes_limit_what_a_caller_may_manage_and_grant() {
    let mut idx = world();
    let account_admin = vec![grant(Kind::Account, "1", Level::Admin)];
    put(&mut idx, 2, ACCOUNT, |t| {
        t.set_grants(&account_admin);
        t.set_scopes(&[scope("email", Level::Admin)]);
    });
    put(&mut idx, 3, ACCOUNT, |t| {
        t.set_grants(&account_admin);
        t.set_scopes(&[scope("tokens", Level::Admin), scope("email", Level::Viewer)]);
    });
    let email_only = Access::of(&idx, 2, NOW).expect("live");
    assert!(denied(email_only.token_account(&idx, ACCOUNT).unwrap_err()).contains("tokens scope"));
    assert!(denied(email_only.may_read_audit(&idx, ACCOUNT).unwrap_err()).contains("unrestricted"));
    let tokens = Access::of(&idx, 3, NOW).expect("live");
    let account = tokens
        .token_account(&idx, ACCOUNT)
        .expect("may manage tokens");
    // Within its scopes, yes; unrestricted (no scopes), or above its level, no.
    let viewer = [scope("email", Level::Viewer)];
    assert!(tokens.check_grantable(&idx, account, &[], &viewer).is_ok());
    assert!(tokens.check_grantable(&idx, account, &[], &[]).is_err());
    let admin = [scope("email", Level::Admin)];
    assert!(tokens.check_grantable(&idx, account, &[], &admin).is_err());
    // And it cannot see a token with scopes it does not hold.
    assert!(matches!(
        tokens.token(&idx, ACCOUNT, 2).map(|_| ()),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn the_root_token_cannot_be_changed() {
    // The root token belongs to account 0, which no call can create, so
    // over the API this rule is behind "account 0 not found"; it holds on
    // its own too.
    let mut idx = world();
    idx.apply(&Change::PutAccount(AccountRecord {
        id: 0,
        name: "root's".into(),
        created_at_ms: 1,
        ..AccountRecord::default()
    }));
    let root = Access::of(&idx, 1, NOW).expect("root");
    for verb in ["edited", "paused", "deleted"] {
        match root.token_to_change(&idx, 0, 1, verb).map(|_| ()) {
            Err(Error::FailedPrecondition(m)) => {
                assert_eq!(m, format!("the root token cannot be {verb}"));
            }
            other => panic!("{verb}: {other:?}"),
        }
    }
}

#[test]
fn a_domain_keeps_a_live_admin_token() {
    let mut idx = world();
    let a_admin = vec![grant(Kind::Domain, "a.example", Level::Admin)];
    put(&mut idx, 2, ACCOUNT, |t| t.set_grants(&a_admin));
    // A viewer, an expired admin and a reset admin do not count as holders
    // of ADMIN.
    put(&mut idx, 3, ACCOUNT, |t| {
        t.set_grants(&[grant(Kind::Domain, "a.example", Level::Viewer)]);
    });
    put(&mut idx, 4, ACCOUNT, |t| {
        t.set_grants(&a_admin);
        t.set_expires_at_ms(Some(NOW - 1));
    });
    put(&mut idx, 5, ACCOUNT, |t| {
        t.set_grants(&a_admin);
        t.set_replaced_by(6);
    });
    let account = idx.accounts.get(&ACCOUNT).expect("account");
    let target = idx.tokens.get(&2).expect("token 2");
    let refused = keeps_every_domain(&idx, account, target, &[], NOW).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "token 2 is the last token with ADMIN on domain a.example; it must keep it"
    );
    // Keeping the grant is fine.
    assert!(keeps_every_domain(&idx, account, target, &a_admin, NOW).is_ok());
    // A second live ADMIN frees token 2.
    put(&mut idx, 7, ACCOUNT, |t| t.set_grants(&a_admin));
    let account = idx.accounts.get(&ACCOUNT).expect("account");
    let target = idx.tokens.get(&2).expect("token 2");
    assert!(keeps_every_domain(&idx, account, target, &[], NOW).is_ok());
}

#[test]
fn derived_names_do_not_grow_with_resets() {
    assert_eq!(derived_name("example.com", 7), "example.com token 7");
    assert_eq!(
        derived_name("example.com token 7", 9),
        "example.com token 9"
    );
    assert_eq!(derived_name("ci token", 9), "ci token token 9");
    assert_eq!(derived_name("a token b", 9), "a token b token 9");
}

#[test]
fn an_expiry_edit_never_brings_a_token_back() {
    let mut idx = world();
    put(&mut idx, 2, ACCOUNT, |_| {});
    put(&mut idx, 3, ACCOUNT, |t| t.set_expires_at_ms(Some(NOW)));
    put(&mut idx, 4, ACCOUNT, |t| {
        t.set_expires_at_ms(Some(NOW + 100));
        t.set_replaced_by(5);
    });
    let token = |id| idx.tokens.get(&id).expect("token");
    // A live token: set, move or clear freely.
    for e in [Some(NOW + 1), Some(NOW + 10_000), None] {
        assert!(may_change_expiry(token(2), e, NOW).is_ok());
    }
    // An expired one stays expired.
    let refused = may_change_expiry(token(3), None, NOW).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "token 3 has expired; its expiry cannot change"
    );
    // A reset one: earlier (or the same) only.
    assert!(may_change_expiry(token(4), Some(NOW + 1), NOW).is_ok());
    assert!(may_change_expiry(token(4), Some(NOW + 100), NOW).is_ok());
    for e in [Some(NOW + 101), None] {
        let refused = may_change_expiry(token(4), e, NOW).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "token 4 was reset (replaced by token 5); its expiry can only move earlier"
        );
    }
}

#[test]
fn only_an_unrestricted_account_admin_or_root_changes_an_account() {
    let mut idx = world();
    put(&mut idx, 2, ACCOUNT, |t| {
        t.set_grants(&[grant(Kind::Account, "1", Level::Admin)]);
    });
    put(&mut idx, 3, ACCOUNT, |t| {
        t.set_grants(&[grant(Kind::Account, "1", Level::Admin)]);
        t.set_scopes(&[scope("tokens", Level::Admin)]);
    });
    put(&mut idx, 4, ACCOUNT, |t| {
        t.set_grants(&[grant(Kind::Account, "1", Level::Viewer)]);
    });
    put(&mut idx, 5, ACCOUNT, |t| {
        t.set_grants(&[grant(Kind::Domain, "a.example", Level::Admin)]);
    });
    let may = |caller, account| {
        let a = Access::of(&idx, caller, NOW).expect("live");
        a.may_update_account(&idx, account).map(|acct| acct.id)
    };
    assert_eq!(may(2, ACCOUNT).expect("account admin"), ACCOUNT);
    assert_eq!(may(1, OTHER).expect("root"), OTHER);
    assert!(denied(may(3, ACCOUNT).unwrap_err()).contains("unrestricted by scopes"));
    assert!(denied(may(4, ACCOUNT).unwrap_err()).contains("account admins"));
    assert!(denied(may(5, ACCOUNT).unwrap_err()).contains("account admins"));
    assert!(denied(may(2, OTHER).unwrap_err()).contains("no access to account"));
}
