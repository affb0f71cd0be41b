//! `keyward.v1.Tokens`, and the token operations it shares with the HTTP
//! facades ([`ops`]): every mutation, from either surface, runs the same
//! rules and is appended to the audit log the same way.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::pb::v1::{self as pb, tokens_server::Tokens};
use crate::service::credential;

/// The audited token mutations, for an authenticated caller.
pub mod ops {
    use crate::engine::{AuditSubject, Engine};
    use crate::error::Result;
    use crate::pb::v1 as pb;

    /// The audit subject of a call on one token.
    fn on_token(account_id: u64, token_id: u64) -> AuditSubject {
        AuditSubject {
            account_id,
            token_id,
            resource: String::new(),
        }
    }

    /// CreateToken.
    pub async fn create(
        engine: &Engine,
        caller: u64,
        req: pb::CreateTokenRequest,
    ) -> Result<pb::TokenWithSecret> {
        let subject = on_token(req.account_id, 0);
        let result = engine.create_token(caller, req).await;
        let created = |t: &pb::TokenWithSecret| (0, t.token.as_ref().map_or(0, |t| t.id));
        engine
            .audited(caller, "CreateToken", subject, result, created)
            .await
    }

    /// UpdateToken.
    pub async fn update(
        engine: &Engine,
        caller: u64,
        req: pb::UpdateTokenRequest,
    ) -> Result<pb::Token> {
        let subject = on_token(req.account_id, req.token_id);
        let result = engine.update_token(caller, req).await;
        engine
            .audited(caller, "UpdateToken", subject, result, |_| (0, 0))
            .await
    }

    /// ResetToken.
    pub async fn reset(
        engine: &Engine,
        caller: u64,
        req: pb::ResetTokenRequest,
    ) -> Result<pb::TokenWithSecret> {
        let subject = on_token(req.account_id, req.token_id);
        let result = engine.reset_token(caller, req).await;
        engine
            .audited(caller, "ResetToken", subject, result, |_| (0, 0))
            .await
    }

    /// PauseToken (`paused`) or ResumeToken.
    pub async fn set_paused(
        engine: &Engine,
        caller: u64,
        account_id: u64,
        token_id: u64,
        paused: bool,
    ) -> Result<pb::Token> {
        let result = engine
            .set_paused(caller, account_id, token_id, paused)
            .await;
        let action = if paused { "PauseToken" } else { "ResumeToken" };
        engine
            .audited(
                caller,
                action,
                on_token(account_id, token_id),
                result,
                |_| (0, 0),
            )
            .await
    }

    /// DeleteToken.
    pub async fn delete(
        engine: &Engine,
        caller: u64,
        req: &pb::DeleteTokenRequest,
    ) -> Result<pb::DeleteTokenResponse> {
        let result = engine.delete_token(caller, req).await;
        let subject = on_token(req.account_id, req.token_id);
        engine
            .audited(caller, "DeleteToken", subject, result, |_| (0, 0))
            .await
    }
}

/// The Tokens service.
#[derive(Debug, Clone)]
pub struct TokensService {
    /// Shared engine.
    pub engine: Arc<Engine>,
}

impl TokensService {
    async fn caller<T>(&self, req: &Request<T>) -> Result<u64, Status> {
        Ok(self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?)
    }
}

#[tonic::async_trait]
impl Tokens for TokensService {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::TokenWithSecret>, Status> {
        let caller = self.caller(&req).await?;
        let created = ops::create(&self.engine, caller, req.into_inner()).await?;
        Ok(Response::new(created))
    }

    async fn get_token(
        &self,
        req: Request<pb::GetTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let caller = self.caller(&req).await?;
        Ok(Response::new(self.engine.get_token(caller, req.get_ref())?))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let caller = self.caller(&req).await?;
        Ok(Response::new(
            self.engine.list_tokens(caller, req.get_ref())?,
        ))
    }

    async fn update_token(
        &self,
        req: Request<pb::UpdateTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let caller = self.caller(&req).await?;
        let updated = ops::update(&self.engine, caller, req.into_inner()).await?;
        Ok(Response::new(updated))
    }

    async fn reset_token(
        &self,
        req: Request<pb::ResetTokenRequest>,
    ) -> Result<Response<pb::TokenWithSecret>, Status> {
        let caller = self.caller(&req).await?;
        let reset = ops::reset(&self.engine, caller, req.into_inner()).await?;
        Ok(Response::new(reset))
    }

    async fn pause_token(
        &self,
        req: Request<pb::PauseTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let caller = self.caller(&req).await?;
        let r = req.get_ref();
        let paused = ops::set_paused(&self.engine, caller, r.account_id, r.token_id, true).await?;
        Ok(Response::new(paused))
    }

    async fn resume_token(
        &self,
        req: Request<pb::ResumeTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let caller = self.caller(&req).await?;
        let r = req.get_ref();
        let resumed =
            ops::set_paused(&self.engine, caller, r.account_id, r.token_id, false).await?;
        Ok(Response::new(resumed))
    }

    async fn delete_token(
        &self,
        req: Request<pb::DeleteTokenRequest>,
    ) -> Result<Response<pb::DeleteTokenResponse>, Status> {
        let caller = self.caller(&req).await?;
        let deleted = ops::delete(&self.engine, caller, req.get_ref()).await?;
        Ok(Response::new(deleted))
    }
}
