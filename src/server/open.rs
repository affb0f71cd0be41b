//! What [`run`](super::run) opens before it serves: the files it is given
//! (routes, TLS; a bad one refuses the start before anything else is
//! opened), then the store the options pick ([`StoreMode`]) and the engine
//! over it.
//!
//! Wiring (L7): may import any module below `server`.

use std::path::Path;
use std::sync::Arc;

use crate::engine::Engine;
use crate::routes::Routes;
use crate::service::ext_authz::SharedRoutes;
use crate::store::{SledStore, Store, StoreError};
use crate::tls::{Hangup, Tls};
use crate::token::DigestKey;

use super::{Follow, Options, Postgres, ServeError};

/// Where a node's state comes from, as its options pick it.
pub(super) enum StoreMode<'a> {
    /// The embedded sled store in `--data-dir`.
    Sled,
    /// A PostgreSQL database shared with other nodes (`--store`).
    Postgres(&'a Postgres),
    /// Another keyward's replication stream (`--follow`): no store at all.
    Follow(&'a Follow),
}

impl<'a> StoreMode<'a> {
    /// The mode of `opts`; following wins (the flags exclude each other).
    pub(super) fn of(opts: &'a Options) -> Self {
        if let Some(follow) = &opts.follow {
            StoreMode::Follow(follow)
        } else if let Some(pg) = &opts.postgres {
            StoreMode::Postgres(pg)
        } else {
            StoreMode::Sled
        }
    }
}

/// The files a node is given, loaded and checked.
pub(super) struct Files {
    /// The ext_authz routes in force (the reload job replaces them).
    pub routes: Arc<SharedRoutes>,
    /// How many routes the file held at start (the `keyward_routes` gauge).
    pub route_count: usize,
    /// TLS on both ports and the SIGHUP stream that reloads it (none:
    /// plaintext).
    pub tls: Option<(Arc<Tls>, Hangup)>,
    /// GitHub's secret-scanning keys (none: leak reports are off).
    pub leak_keys: Option<Arc<crate::leak_report::KeysFile>>,
}

/// Loads the routes file, the TLS files and the leak report keys: a bad
/// one refuses the start, before the store is opened. SIGHUP is listened
/// to from here on.
pub(super) fn load_files(opts: &Options) -> Result<Files, ServeError> {
    let routes = match &opts.routes_file {
        Some(path) => crate::routes::load(path)?,
        None => Routes::default(),
    };
    let route_count = routes.len();
    let tls = match &opts.tls {
        Some(files) => Some((Tls::start(files.clone())?, Hangup::listen())),
        None => None,
    };
    // A follower's --tls-ca too (it is re-read at every connect).
    if let (Some(_), Some(ca)) = (&opts.follow, &opts.tls_ca) {
        crate::tls::read_ca("--tls-ca", ca)?;
    }
    let leak_keys = match &opts.leak_report_keys {
        Some(path) => Some(Arc::new(
            crate::leak_report::KeysFile::open(path).map_err(ServeError::LeakReportKeys)?,
        )),
        None => None,
    };
    Ok(Files {
        routes: Arc::new(SharedRoutes::new(routes)),
        route_count,
        tls,
        leak_keys,
    })
}

/// The engine over the store the options pick, not loaded yet.
pub(super) struct Opened {
    /// The engine (every call UNAVAILABLE until it is loaded or, on a
    /// follower, until the first snapshot is in).
    pub engine: Arc<Engine>,
    /// Nothing stored yet: loading creates the root token.
    pub is_new: bool,
    /// PostgreSQL: where to LISTEN for the other nodes' commits.
    pub listen: Option<(tokio_postgres::Config, crate::store::postgres::Tls)>,
}

/// Opens the store of `opts` (none for a follower) and builds the engine.
pub(super) async fn open(opts: &Options) -> Result<Opened, ServeError> {
    match StoreMode::of(opts) {
        StoreMode::Sled => open_sled(opts).await,
        StoreMode::Postgres(pg) => open_postgres(opts, pg).await,
        StoreMode::Follow(follow) => open_follower(opts, follow),
    }
}

/// What the store is, as errors name it (never a connection string).
pub(super) fn store_name(opts: &Options) -> String {
    if opts.postgres.is_some() {
        "the PostgreSQL database (--store)".into()
    } else {
        opts.data_dir.display().to_string()
    }
}

/// A store failure, naming the store.
pub(super) fn store_error(opts: &Options) -> impl Fn(StoreError) -> ServeError + '_ {
    move |source| ServeError::Store {
        path: store_name(opts),
        source,
    }
}

/// The digest key file; created when missing if `create`.
fn digest_key(opts: &Options, create: bool) -> Result<DigestKey, ServeError> {
    DigestKey::load_or_create(&opts.digest_key_file, create).map_err(|source| {
        ServeError::DigestKey {
            path: opts.digest_key_file.display().to_string(),
            source,
        }
    })
}

async fn open_sled(opts: &Options) -> Result<Opened, ServeError> {
    let is_default_key = opts.digest_key_file == opts.data_dir.join("digest.key");
    let dir = opts.data_dir.clone();
    let opened = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        Ok::<_, std::io::Error>(open_sled_store(&dir))
    })
    .await
    .map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
    let (store, is_new) = opened.map_err(store_error(opts))?;
    let key = digest_key(opts, is_default_key || is_new)?;
    let store: Arc<dyn Store> = Arc::new(store);
    let engine = Engine::new(store, key, opts.clock.clone(), opts.settings.clone());
    Ok(Opened {
        engine,
        is_new,
        listen: None,
    })
}

/// The sled store in `dir`, and whether it is new.
fn open_sled_store(dir: &Path) -> Result<(SledStore, bool), StoreError> {
    let store = SledStore::open(dir)?;
    let is_new = store.is_new()?;
    Ok((store, is_new))
}

async fn open_postgres(opts: &Options, pg: &Postgres) -> Result<Opened, ServeError> {
    std::fs::create_dir_all(&opts.data_dir)?;
    let store = crate::store::postgres::PgStore::connect(&pg.store)
        .await
        .map_err(store_error(opts))?;
    let key = digest_key(opts, true)?;
    let before = store
        .record_digest_key(&key.id()[..])
        .await
        .map_err(store_error(opts))?;
    if before.is_some_and(|b| b != key.id()) {
        tracing::warn!(
            "the last node to start on this database had another digest key: \
             tokens it learnt are verified here with argon2 once; \
             give every node the same --digest-key-file"
        );
    }
    let listen = Some(store.listen_target());
    let store: Arc<dyn Store> = Arc::new(store);
    let freshness = crate::upstream::Freshness::new(pg.stale_after, pg.serve_stale);
    let engine = Engine::new_shared(
        store,
        key,
        opts.clock.clone(),
        opts.settings.clone(),
        freshness,
    );
    // A new database gets its root token from whichever node commits
    // first; the others find it there.
    Ok(Opened {
        engine,
        is_new: true,
        listen,
    })
}

fn open_follower(opts: &Options, follow: &Follow) -> Result<Opened, ServeError> {
    // A follower writes nothing: the primary's digest key if one is given
    // (so digests verify), else a throwaway one (argon2 on each token's
    // first use).
    let key = if opts.digest_key_file.exists() {
        digest_key(opts, false)?
    } else {
        DigestKey::generate()
    };
    let state = crate::upstream::FollowerState::new(
        follow.primary.clone(),
        follow.stale_after,
        follow.serve_stale,
    );
    let engine = Engine::new_follower(key, opts.clock.clone(), opts.settings.clone(), state);
    Ok(Opened {
        engine,
        is_new: false,
        listen: None,
    })
}
