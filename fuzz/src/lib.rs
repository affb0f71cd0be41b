//! What each fuzz target checks, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`, nightly) and their stable mirror
//! `tests/fuzz_inputs.rs` (which includes this file with `#[path]`, so that
//! `cargo test` replays the corpus and proptest's inputs through exactly the
//! same checks). It therefore uses only crates both have: keyward, prost,
//! prost-types, tonic, tokio and crc32fast; and it names its own modules
//! with `super::` paths, never `crate::` (in the test it is a module, not
//! the crate).
//!
//! Every check takes arbitrary bytes, must not panic, and asserts that what
//! keyward accepts is sane:
//!
//! - [`token_input`]: the token parser (and the credential header it is read
//!   from) against a separate reference implementation of the format.
//! - [`grpc_request`]: prost `decode` of every `keyward.v1` request message
//!   (the first byte picks which), a decode/encode round trip, then the
//!   validation the service applies to it, each compared with a reference
//!   rule; invalid input is always `INVALID_ARGUMENT`, never `INTERNAL`.
//! - [`authorize`]: an `AuthorizeRequest` through the real in-memory hot
//!   path (`Engine::authorize_cached`) of a small world, each decision
//!   compared with a reference decision for that world.
//! - [`store_records`]: a sequence of store records (what `Store::load`
//!   yields) decoded and applied to an `Index`, `TokenState` record round
//!   trips, and decisions over whatever the records built.
//! - [`routes_file`]: the ext_authz routes file parser and its matcher.
//! - [`ext_authz_check`]: an Envoy `CheckRequest` through the real
//!   ext_authz service of the same world, checked against the reference.
//! - [`rest_time`]: the JSON facades' RFC 3339 parser and formatters.
//!
//! One module per target (`token_parse`, `grpc_requests`, `authorize`,
//! `store_records`, `routes_file`, `ext_authz_check`, `rest_time`), the
//! world the decision targets share (`world`), the helpers every check
//! uses (`common`) and the corpus seeds (`seeds`); what the targets and the
//! test call is re-exported here.

mod authorize;
mod common;
mod ext_authz_check;
mod grpc_requests;
mod rest_time;
mod routes_file;
mod seeds;
mod store_records;
mod token_parse;
mod world;

pub use authorize::authorize;
pub use common::{decode_round_trip, NOW_MS};
pub use ext_authz_check::{ext_authz_check, ext_authz_decision};
pub use grpc_requests::{grpc_request, request_input};
pub use rest_time::rest_time;
pub use routes_file::routes_file;
pub use seeds::seeds;
pub use store_records::store_records;
pub use token_parse::{check_token_str, reference_parse, reference_token, token_input};
pub use world::{reference_decision, world};
