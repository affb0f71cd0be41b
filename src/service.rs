//! The gRPC services: thin layers that decode the request, take the caller's
//! credential from metadata ([`crate::credential`]), call the engine (the
//! admin operations audit themselves), and encode the answer.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod authorizer;
pub mod ext_authz;
pub mod resources;
pub mod tokens;

pub use crate::credential::{credential, pick_credential};

use tonic::{Request, Status};

use crate::engine::Engine;

/// The admin caller of a gRPC request: its credential authenticated, its
/// token live.
pub(crate) async fn caller<T>(engine: &Engine, req: &Request<T>) -> Result<u64, Status> {
    Ok(engine
        .authenticate_caller(credential(req.metadata()))
        .await?)
}
