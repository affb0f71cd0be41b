//! The admin operations, one file per kind of thing they act on. Each is
//! a thin sequence: validate the request, then one [`Engine::mutate`]
//! whose plan asks `access` for the rules and returns the changes, then
//! the answer; every call, refused or not, is recorded in the audit log
//! by the operation itself, so the gRPC services and the REST facades call
//! the same functions and write the same events.
//!
//! Layer L5: imports `engine`, `access`, `wire`, `index` and the
//! vocabulary; never a surface (`service`, `rest`).

mod accounts;
mod audit;
mod backup;
mod leaks;
mod resources;
mod tokens;

pub use audit::AuditSubject;
pub use leaks::{LeakReporter, REPORT_LEAK};

use crate::access::Access;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::pb::v1 as pb;
use crate::token::Secret;
use crate::wire::token_to_wire;

impl Engine {
    /// The live access of `caller` in `idx`, as of now.
    pub(crate) fn access<'i>(&self, idx: &'i Index, caller: u64) -> Result<Access<'i>> {
        Access::of(idx, caller, self.now_ms())
    }

    /// A token as served, after the commit that changed it.
    fn token_view(&self, id: u64) -> Result<pb::Token> {
        self.view()
            .tokens
            .get(&id)
            .map(token_to_wire)
            .ok_or_else(|| Error::NotFound(format!("token {id} not found")))
    }

    /// A minted token as served, with its secret (the one time it is
    /// shown).
    fn with_secret(&self, secret: Option<(u64, Secret)>) -> Result<pb::TokenWithSecret> {
        let (id, full) =
            secret.ok_or_else(|| Error::Internal("a minting call made no token".into()))?;
        let idx = self.view();
        let t = idx
            .tokens
            .get(&id)
            .ok_or_else(|| Error::Internal("new token missing after commit".into()))?;
        Ok(pb::TokenWithSecret {
            token: Some(token_to_wire(t)),
            secret: full.expose().to_string(),
        })
    }
}
