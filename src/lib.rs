//! keyward: issues and manages API tokens for a family of mail services, and
//! answers, as fast as a no-op gRPC call, "may this token do this, on this
//! resource, at this level?".
//!
//! # Layout
//!
//! Layers, bottom first; a module imports only its own layer and those
//! below (`tests/architecture.rs` checks it, and that no file under `src/`
//! passes 600 lines). To find where a rule lives, read the file names.
//!
//! - L0 Vocabulary: [`pb`] (generated code only), [`clock`] (injectable
//!   time), [`error`] (domain errors, their gRPC codes and the deny-reason
//!   table), [`model`] (kinds, levels, grants, scopes, input limits,
//!   canonical domains), [`token`] (format, redacted secrets, argon2id, the
//!   verified digest), [`logs`] (the budget of log lines callers can
//!   cause; the subscriber), [`metrics`] (handles, registered once),
//!   [`net`] (what both ports' accept loops share), [`heap`] (freed
//!   memory back to the OS after bulk loads), [`ratelimit`] (a
//!   token's sending-limit budget: GCRA, exact, all or nothing).
//! - L1 State: [`index`] (everything in memory, rebuilt from an ordered
//!   stream of [`index::Change`]s, whose wire codec it owns; node names
//!   interned for `last_used_by`) and [`store`]
//!   (the narrow storage trait; sled and PostgreSQL).
//! - L2 Shapes: [`wire`] (timestamps, pages, records as served), [`feed`]
//!   (every commit, for followers), [`upstream`] (a follower's primary or
//!   a node's database, and how fresh it is), [`credential`] (the caller's
//!   token from metadata or headers), [`routes`] (the ext_authz route
//!   file and its strict path rules), [`leak_report`] (GitHub's
//!   secret-scanning reports: the keys file, the signature, the items, the
//!   replay window).
//! - L3 Rules: [`authz`] (the pure decision for one Authorize question) and
//!   [`access`] (the admin rules: who may see, grant, change, delete).
//! - L4 [`engine`]: the shared state behind every surface: authenticate,
//!   authorize, mutate (lock, live caller, commit), upkeep, the usage
//!   writer (a thread of the lowest priority, paced), catch-up.
//! - L5 Operations: [`admin`] (accounts, resources, tokens, audit: each a
//!   plan for `Engine::mutate`, audited by itself), [`replication`] (the
//!   primary's feed served, a follower following and reporting its uses,
//!   and keeping its state on disk to resume from), [`tls`] (certificate
//!   files loaded, checked, reloaded; TLS accept loops).
//! - L6 Surfaces: [`service`] (one thin file per gRPC service), [`rest`] (the
//!   Mailtrap and MailerSend facades), [`http`] (the HTTP port: probes,
//!   metrics, facades), [`admission`] (a gRPC request takes an in-flight
//!   slot only once its message has arrived; the in-flight cap and the
//!   request timeout).
//! - L7 Wiring: [`config`] (flags and `KEYWARD_*`, validated once),
//!   [`server`] (open the store, serve, wait, drain, flush), [`seed`] (bulk
//!   seeding for benchmarks), [`storemove`] (copy a store between sled and
//!   PostgreSQL, back up and restore: the library behind `keyward store`),
//!   [`cli`] (the command line: `serve`, and the operator subcommands,
//!   gRPC clients of a running keyward).

pub mod access;
pub mod admin;
pub mod admission;
pub mod authz;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credential;
pub mod engine;
pub mod error;
pub mod feed;
pub mod heap;
pub mod http;
pub mod index;
pub mod leak_report;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod net;
pub mod pb;
pub mod ratelimit;
pub mod replication;
pub mod rest;
pub mod routes;
pub mod seed;
pub mod server;
pub mod service;
pub mod store;
pub mod storemove;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod wire;
