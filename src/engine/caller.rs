//! The admin caller: a credential proven (the digest, or argon2 under
//! its budget), then its live access read. Every admin surface (gRPC, the
//! REST facades) starts here.

use super::{AuthnFailure, Engine};
use crate::access::Access;
use crate::error::{Error, Result};

impl Engine {
    /// Authenticates an admin caller's credential; returns its token id.
    pub async fn authenticate_caller(&self, credential: Option<&str>) -> Result<u64> {
        if let Some(f) = self.follower() {
            return Err(Error::FailedPrecondition(format!(
                "this keyward is a read-only follower of {}: send admin calls to the primary",
                f.primary
            )));
        }
        self.ensure_ready()?;
        let credential = credential.ok_or_else(|| {
            Error::Unauthenticated(
                "missing credential: send `authorization: Bearer <token>` or `api-token: <token>`"
                    .into(),
            )
        })?;
        let id = match self.authenticate(credential).await {
            Err(AuthnFailure::Unknown) if self.unseen_token(credential) => {
                // A token made on another node of the shared store a
                // moment ago: read what this node missed (shared with other
                // such callers, rate-bounded), and retry.
                self.catch_up_unseen().await;
                self.authenticate(credential).await
            }
            other => other,
        };
        let id = id?;
        let now = self.now_ms();
        let idx = self.index.read();
        Access::of(&idx, id, now)?.caller().touch(now, self.node);
        Ok(id)
    }

    /// The account a caller belongs to; `None` for the root token.
    pub fn home_account(&self, caller_id: u64) -> Result<Option<u64>> {
        let idx = self.index.read();
        let caller = Access::of(&idx, caller_id, self.now_ms())?.caller();
        Ok((!caller.root()).then_some(caller.account_id()))
    }
}
