//! Where a node's state comes from when it does not own its store: the
//! primary it follows ([`FollowerState`]) or the database it shares with
//! other nodes ([`Freshness`]), when that source was last heard from, and
//! whether answers may still be given ([`Upstream::refusal`]).
//!
//! Layer L2: imports only the vocabulary (`clock`).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// When a source (a PostgreSQL node's database, a follower's primary) was
/// last heard from, and what to do past the staleness bound.
#[derive(Debug)]
pub struct Freshness {
    /// Failing closed after this long without a word from the source.
    pub stale_after_ms: i64,
    /// Keep answering from memory when stale, instead of failing.
    pub serve_stale: bool,
    /// Engine clock, unix ms; 0 never.
    last_heard_ms: AtomicI64,
}

impl Freshness {
    /// Nothing heard yet.
    pub fn new(stale_after: Duration, serve_stale: bool) -> Self {
        Freshness {
            stale_after_ms: crate::clock::duration_ms(stale_after),
            serve_stale,
            last_heard_ms: AtomicI64::new(0),
        }
    }

    /// The source answered at `now_ms`.
    pub fn heard(&self, now_ms: i64) {
        self.last_heard_ms.store(now_ms, Ordering::Release);
    }

    /// Milliseconds since the source last answered.
    pub fn silence_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.last_heard_ms.load(Ordering::Acquire))
    }

    /// Whether answers may be given now: within the bound, or told to
    /// serve stale answers.
    pub fn may_serve(&self, now_ms: i64) -> bool {
        self.serve_stale || self.silence_ms(now_ms) <= self.stale_after_ms
    }
}

/// What a follower knows of its primary.
#[derive(Debug)]
pub struct FollowerState {
    /// The primary's gRPC address (named in refusals of admin calls).
    pub primary: String,
    /// When the primary was last heard from, and the staleness bound.
    pub freshness: Freshness,
    /// The epoch of the state held.
    pub epoch: AtomicU64,
    /// The revision applied.
    pub revision: AtomicU64,
    /// The primary's revision, as last heard.
    pub primary_revision: AtomicU64,
    /// The primary's clock when it sent the last event (unix ms).
    pub primary_sent_ms: AtomicI64,
    /// True once the primary's state is in: a snapshot applied, or the
    /// commits missed since the state kept on disk (a resume).
    pub synced: AtomicBool,
    /// The fingerprint of the primary's digest key, as its last snapshot
    /// said (kept in the state file; empty until known).
    pub primary_key_id: parking_lot::Mutex<Vec<u8>>,
}

impl FollowerState {
    /// A follower of `primary` that has heard nothing yet.
    pub fn new(primary: String, stale_after: Duration, serve_stale: bool) -> Self {
        FollowerState {
            primary,
            freshness: Freshness::new(stale_after, serve_stale),
            epoch: AtomicU64::new(0),
            revision: AtomicU64::new(0),
            primary_revision: AtomicU64::new(0),
            primary_sent_ms: AtomicI64::new(0),
            synced: AtomicBool::new(false),
            primary_key_id: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Milliseconds since the primary was last heard from.
    pub fn silence_ms(&self, now_ms: i64) -> i64 {
        self.freshness.silence_ms(now_ms)
    }

    /// Whether answers may be given now: synced, and not past the bound
    /// (unless serving stale is allowed).
    pub fn may_serve(&self, now_ms: i64) -> bool {
        self.synced.load(Ordering::Acquire) && self.freshness.may_serve(now_ms)
    }
}

/// Where this node's state comes from.
#[derive(Debug)]
pub enum Upstream {
    /// Its own store (sled): nothing to wait for.
    Own,
    /// A primary it follows over replication.
    Primary(FollowerState),
    /// A database it shares with other nodes (PostgreSQL).
    Database(Freshness),
}

impl Upstream {
    /// The follower state, when following a primary.
    pub fn follower(&self) -> Option<&FollowerState> {
        match self {
            Upstream::Primary(f) => Some(f),
            _ => None,
        }
    }

    /// The shared database's freshness, on a node of one.
    pub fn database(&self) -> Option<&Freshness> {
        match self {
            Upstream::Database(f) => Some(f),
            _ => None,
        }
    }

    /// The source's freshness on a node that does not own its store (a
    /// follower's primary, a PostgreSQL node's database): such a node
    /// spends sending limits from leases.
    pub fn source(&self) -> Option<&Freshness> {
        match self {
            Upstream::Own => None,
            Upstream::Primary(p) => Some(&p.freshness),
            Upstream::Database(f) => Some(f),
        }
    }

    /// Why answers may not be given at `now_ms`, if they may not: the
    /// source has not been heard from within the staleness bound (or, for
    /// a primary, no snapshot is in yet) and serving stale answers is off.
    pub fn refusal(&self, now_ms: i64) -> Option<String> {
        let (source, f) = match self {
            Upstream::Database(f) if !f.may_serve(now_ms) => ("the database".to_string(), f),
            Upstream::Primary(p) if !p.may_serve(now_ms) => {
                (format!("the primary {}", p.primary), &p.freshness)
            }
            _ => return None,
        };
        Some(format!(
            "no word from {source} for {} ms (bound {} ms): failing closed",
            f.silence_ms(now_ms),
            f.stale_after_ms
        ))
    }
}
