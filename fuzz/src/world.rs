//! The small world the `authorize`, `routes_file` and `ext_authz_check`
//! targets decide in: accounts, resources and tokens built through the real
//! admin path on an engine with no store, and the reference decision
//! (written from the README's rules, not from `authz.rs`).

use std::sync::{Arc, OnceLock};

use keyward::authz::Check;
use keyward::clock::ManualClock;
use keyward::engine::{Engine, Settings};
use keyward::error::Error;
use keyward::index::Change;
use keyward::model::{Kind, Level};
use keyward::pb::store as rec;
use keyward::pb::v1 as pb;
use keyward::service::ext_authz::{ExtAuthzService, SharedRoutes};
use keyward::store::{BoxFuture, Store, StoreError};
use keyward::token::DigestKey;
use pb::DenyReason;

use super::common::ok;
use super::grpc_requests::check_domain;
use super::routes_file::WORLD_ROUTES;

/// Keeps nothing: the world of [`authorize`] lives in the index only.
struct NoStore;

/// A write that keeps nothing.
struct NoTxn;

impl keyward::store::WriteTxn for NoTxn {
    fn commit<'a>(
        self: Box<Self>,
        _changes: &'a [Change],
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }
}

impl Store for NoStore {
    fn load(
        &self,
        key: keyward::token::DigestKey,
    ) -> BoxFuture<'_, Result<keyward::store::Loaded, StoreError>> {
        Box::pin(async move {
            Ok(keyward::store::Loaded {
                index: keyward::index::Index::new(key),
                revision: 0,
            })
        })
    }
    fn begin(&self, _applied: u64) -> BoxFuture<'_, Result<keyward::store::Begun, StoreError>> {
        Box::pin(async {
            let txn: Box<dyn keyward::store::WriteTxn> = Box::new(NoTxn);
            Ok((txn, Vec::new()))
        })
    }
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn append_audit<'a>(
        &'a self,
        _e: &'a rec::AuditRecord,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn list_audit(
        &self,
        _a: u64,
        _after: u64,
        _l: usize,
    ) -> BoxFuture<'_, Result<Vec<rec::AuditRecord>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn last_audit_id(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }
}

/// What the reference knows of one token of the world.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// The token string.
    pub secret: String,
    /// Its account (0 for root).
    pub account: u64,
    /// (kind, id, level) of each grant.
    pub grants: Vec<(Kind, String, Level)>,
    /// (scope, level); empty = unrestricted.
    pub scopes: Vec<(&'static str, Level)>,
    /// Paused.
    pub paused: bool,
    /// Past its expiry.
    pub expired: bool,
}

/// A small world built through the real admin path, and what the reference
/// needs to decide in it.
pub struct World {
    /// Runs the async surfaces (ext_authz Check) of the world.
    pub rt: tokio::runtime::Runtime,
    /// The engine (no store behind it).
    pub engine: Arc<Engine>,
    /// The Envoy ext_authz service over the engine, with [`WORLD_ROUTES`].
    pub ext_authz: ExtAuthzService,
    /// Every token, by position; `@<n>` in a token field names the n-th.
    pub tokens: Vec<TokenSpec>,
    /// (account, kind, id, parent project) of every registered resource.
    pub resources: Vec<(u64, Kind, String, Option<String>)>,
    /// Account ids.
    pub accounts: Vec<u64>,
}

fn build_world() -> World {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let clock = Arc::new(ManualClock::new());
    let settings = Settings {
        verify_concurrency: 1,
        ..Settings::default()
    };
    let engine = Engine::new(
        Arc::new(NoStore),
        DigestKey::from_bytes([7; 32]),
        clock.clone(),
        settings,
    );
    let world = rt.block_on(async {
        let root = ok(
            engine
                .load(true)
                .await
                .map_err(|e| Error::Internal(e.to_string())),
            "load",
        )
        .expect("a new store makes a root token");
        let root = root.expose().to_string();
        let root_id = ok(engine.authenticate_caller(Some(&root)).await, "root");
        let mut tokens = Vec::new();
        let mut resources = Vec::new();
        let mut accounts = Vec::new();
        let grant = |kind: pb::ResourceType, id: &str, level: pb::AccessLevel| pb::Grant {
            resource: Some(pb::ResourceRef {
                r#type: kind as i32,
                id: id.into(),
            }),
            level: level as i32,
        };
        for (name, project, domain) in [("acme", "p1", "example.com"), ("other", "p2", "other.com")]
        {
            let created = ok(
                engine
                    .create_account(root_id, pb::CreateAccountRequest { name: name.into() })
                    .await,
                "account",
            );
            let account = created.account.expect("account").id;
            accounts.push(account);
            let admin = created.admin_token.expect("admin token").secret;
            let admin_id = ok(engine.authenticate_caller(Some(&admin)).await, "admin");
            resources.push((account, Kind::Account, account.to_string(), None));
            tokens.push(TokenSpec {
                secret: admin.clone(),
                account,
                grants: vec![(Kind::Account, account.to_string(), Level::Admin)],
                scopes: vec![],
                paused: false,
                expired: false,
            });
            let register = |kind: pb::ResourceType, id: &str, parent: Option<&str>| {
                engine.register_resource(
                    admin_id,
                    pb::RegisterResourceRequest {
                        account_id: account,
                        resource: Some(pb::ResourceRef {
                            r#type: kind as i32,
                            id: id.into(),
                        }),
                        parent: parent.map(|p| pb::ResourceRef {
                            r#type: pb::ResourceType::Project as i32,
                            id: p.into(),
                        }),
                    },
                )
            };
            ok(
                register(pb::ResourceType::Project, project, None).await,
                "project",
            );
            resources.push((account, Kind::Project, project.into(), None));
            let sandbox = format!("{project}-sandbox");
            ok(
                register(pb::ResourceType::Sandbox, &sandbox, Some(project)).await,
                "sandbox",
            );
            resources.push((account, Kind::Sandbox, sandbox, Some(project.to_string())));
            let domain_token = ok(
                register(pb::ResourceType::Domain, domain, None).await,
                "domain",
            )
            .domain_token
            .expect("a domain comes with a token");
            resources.push((account, Kind::Domain, domain.into(), None));
            tokens.push(TokenSpec {
                secret: domain_token.secret,
                account,
                grants: vec![(Kind::Domain, domain.into(), Level::Admin)],
                scopes: vec![],
                paused: false,
                expired: false,
            });
            if name != "acme" {
                continue;
            }
            // A viewer on the project, a scope-restricted sender, a paused
            // admin and an admin that expires.
            let create = |name: &str,
                          grants: Vec<pb::Grant>,
                          scopes: Vec<pb::Scope>,
                          expires: Option<i64>| {
                engine.create_token(
                    admin_id,
                    pb::CreateTokenRequest {
                        rate_limits: Default::default(),
                        account_id: account,
                        name: name.into(),
                        grants,
                        scopes,
                        expires_at: expires.map(keyward::wire::ts),
                    },
                )
            };
            let viewer = ok(
                create(
                    "viewer",
                    vec![grant(
                        pb::ResourceType::Project,
                        project,
                        pb::AccessLevel::Viewer,
                    )],
                    vec![],
                    None,
                )
                .await,
                "viewer",
            );
            tokens.push(TokenSpec {
                secret: viewer.secret,
                account,
                grants: vec![(Kind::Project, project.into(), Level::Viewer)],
                scopes: vec![],
                paused: false,
                expired: false,
            });
            let scoped = ok(
                create(
                    "scoped",
                    vec![
                        grant(pb::ResourceType::Domain, domain, pb::AccessLevel::Admin),
                        grant(pb::ResourceType::Project, project, pb::AccessLevel::Admin),
                    ],
                    vec![
                        pb::Scope {
                            name: "email".into(),
                            level: Level::Admin.to_wire(),
                        },
                        pb::Scope {
                            name: "domains".into(),
                            level: Level::Viewer.to_wire(),
                        },
                    ],
                    None,
                )
                .await,
                "scoped",
            );
            tokens.push(TokenSpec {
                secret: scoped.secret,
                account,
                grants: vec![
                    (Kind::Domain, domain.into(), Level::Admin),
                    (Kind::Project, project.into(), Level::Admin),
                ],
                scopes: vec![("email", Level::Admin), ("domains", Level::Viewer)],
                paused: false,
                expired: false,
            });
            let account_admin = || {
                vec![grant(
                    pb::ResourceType::Account,
                    &account.to_string(),
                    pb::AccessLevel::Admin,
                )]
            };
            let paused = ok(
                create("paused", account_admin(), vec![], None).await,
                "paused",
            );
            let paused_id = paused.token.as_ref().expect("token").id;
            ok(
                engine.set_paused(admin_id, account, paused_id, true).await,
                "pause",
            );
            tokens.push(TokenSpec {
                secret: paused.secret,
                account,
                grants: vec![(Kind::Account, account.to_string(), Level::Admin)],
                scopes: vec![],
                paused: true,
                expired: false,
            });
            let hour = 3_600_000;
            let expiring = ok(
                create(
                    "expiring",
                    account_admin(),
                    vec![],
                    Some(engine.now_ms() + hour),
                )
                .await,
                "expiring",
            );
            tokens.push(TokenSpec {
                secret: expiring.secret,
                account,
                grants: vec![(Kind::Account, account.to_string(), Level::Admin)],
                scopes: vec![],
                paused: false,
                expired: true,
            });
        }
        tokens.push(TokenSpec {
            secret: root,
            account: 0,
            grants: vec![],
            scopes: vec![],
            paused: false,
            expired: false,
        });
        (tokens, resources, accounts)
    });
    let (tokens, resources, accounts) = world;
    let routes =
        keyward::routes::parse("world.toml", WORLD_ROUTES).expect("the world's routes parse");
    let world = World {
        rt,
        ext_authz: ExtAuthzService {
            engine: engine.clone(),
            routes: Arc::new(SharedRoutes::new(routes)),
        },
        engine,
        tokens,
        resources,
        accounts,
    };
    // Two hours later: the expiring token has expired. The clock does not
    // move again, so decisions are repeatable.
    clock.advance_ms(2 * 3_600_000);
    world
}

/// The world of [`authorize`], built once per process.
pub fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(build_world)
}

/// The reference decision for an authentic token of the world, written
/// from the rules in the README rather than from `authz.rs`.
pub fn reference_decision(w: &World, t: &TokenSpec, check: &Check<'_>) -> Result<(), DenyReason> {
    // Any spelling of a domain names the same domain; what is not a host
    // name names nothing registered.
    let canonical;
    let domain_check;
    let check = if check.kind == Kind::Domain {
        canonical = check_domain(check.id).unwrap_or_default();
        domain_check = Check {
            id: &canonical,
            ..*check
        };
        &domain_check
    } else {
        check
    };
    if t.paused {
        return Err(DenyReason::Paused);
    }
    if t.expired {
        return Err(DenyReason::Expired);
    }
    if t.account == 0 {
        return Err(DenyReason::NoGrant);
    }
    // The chain from the resource up to the account, if it is the token's.
    let own = |kind: Kind, id: &str| {
        w.resources
            .iter()
            .find(|(a, k, i, _)| *a == t.account && *k == kind && i == id)
    };
    let chain: Vec<(Kind, String)> = match own(check.kind, check.id) {
        Some((_, kind, id, parent)) => {
            let mut c = vec![(*kind, id.clone())];
            if let Some(p) = parent {
                c.push((Kind::Project, p.clone()));
            }
            c.push((Kind::Account, t.account.to_string()));
            c
        }
        None => {
            // An ACCOUNT id names an account by its number.
            let elsewhere = if check.kind == Kind::Account {
                check
                    .id
                    .parse::<u64>()
                    .is_ok_and(|n| w.accounts.contains(&n))
            } else {
                w.resources
                    .iter()
                    .any(|(_, k, i, _)| *k == check.kind && i == check.id)
            };
            return Err(if elsewhere {
                DenyReason::WrongAccount
            } else {
                DenyReason::UnknownResource
            });
        }
    };
    let held = t
        .grants
        .iter()
        .filter(|(k, i, _)| chain.iter().any(|(ck, ci)| ck == k && ci == i))
        .map(|g| g.2)
        .max();
    if held.is_none_or(|h| h < check.level) {
        return Err(DenyReason::NoGrant);
    }
    if !t.scopes.is_empty()
        && !t
            .scopes
            .iter()
            .any(|(name, level)| *name == check.scope && *level >= check.level)
    {
        return Err(DenyReason::Scope);
    }
    Ok(())
}
