//! keyward: issues and manages API tokens for a family of mail services, and
//! answers, as fast as a no-op gRPC call, "may this token do this, on this
//! resource, at this level?".
//!
//! # Layout
//!
//! - [`config`]: every setting, from flags and `KEYWARD_*` env, validated once.
//! - [`server`]: wiring: store, engine, gRPC (limits, health, reflection), HTTP, shutdown.
//! - [`admission`]: a gRPC request takes an in-flight slot only once its message has arrived.
//! - [`service`]: one thin file per gRPC service: decode, call the engine, encode.
//! - [`engine`]: the shared state; authenticate a token, decide, commit.
//! - [`admin`]: the admin rules (visibility, no escalation, lifecycle).
//! - [`authz`]: the pure decision for one Authorize question.
//! - [`index`]: the in-memory state, rebuilt from an ordered stream of changes.
//! - [`store`]: the narrow storage trait and its sled backend.
//! - [`token`]: token format, redacted secrets, argon2id, the verified digest.
//! - [`model`]: resource kinds, levels, grants, scopes, input validation.
//! - [`error`]: domain errors and their mapping to gRPC status codes.
//! - [`http`]: the HTTP port: its own accept loop (header deadline, connection cap), probes, metrics, the REST facades' own limit.
//! - [`tls`]: TLS on both ports: certificate files loaded, checked, reloaded on change.
//! - [`metrics`]: metric handles, registered once.
//! - [`logs`]: the budget of log lines callers can cause (rate limit, clipped values),
//!   and the subscriber, with its caps on dependencies that log stored records.
//! - [`clock`]: injectable time.
//! - [`seed`]: bulk seeding of a data dir, for benchmarks only.
//! - [`pb`]: generated code only.

pub mod access;
pub mod admin;
pub mod admission;
pub mod authz;
pub mod clock;
pub mod config;
pub mod credential;
pub mod engine;
pub mod error;
pub mod feed;
pub mod http;
pub mod index;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod pb;
pub mod replication;
pub mod rest;
pub mod routes;
pub mod seed;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod wire;
