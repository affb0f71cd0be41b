//! `keyward.v1.Tokens`. The operations (and their audit events) are the
//! engine's, shared with the REST facades.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::pb::v1::{self as pb, tokens_server::Tokens};
use crate::service::caller;

/// The Tokens service.
#[derive(Debug, Clone)]
pub struct TokensService {
    /// Shared engine.
    pub engine: Arc<Engine>,
}

#[tonic::async_trait]
impl Tokens for TokensService {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::TokenWithSecret>, Status> {
        let caller = caller(&self.engine, &req).await?;
        let created = self.engine.create_token(caller, req.into_inner()).await?;
        Ok(Response::new(created))
    }

    async fn get_token(
        &self,
        req: Request<pb::GetTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let caller = caller(&self.engine, &req).await?;
        Ok(Response::new(self.engine.get_token(caller, req.get_ref())?))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let caller = caller(&self.engine, &req).await?;
        Ok(Response::new(
            self.engine.list_tokens(caller, req.get_ref())?,
        ))
    }

    async fn update_token(
        &self,
        req: Request<pb::UpdateTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let caller = caller(&self.engine, &req).await?;
        let updated = self.engine.update_token(caller, req.into_inner()).await?;
        Ok(Response::new(updated))
    }

    async fn reset_token(
        &self,
        req: Request<pb::ResetTokenRequest>,
    ) -> Result<Response<pb::TokenWithSecret>, Status> {
        let caller = caller(&self.engine, &req).await?;
        let reset = self.engine.reset_token(caller, req.into_inner()).await?;
        Ok(Response::new(reset))
    }

    async fn pause_token(
        &self,
        req: Request<pb::PauseTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let caller = caller(&self.engine, &req).await?;
        let r = req.get_ref();
        let paused = self
            .engine
            .set_paused(caller, r.account_id, r.token_id, true)
            .await?;
        Ok(Response::new(paused))
    }

    async fn resume_token(
        &self,
        req: Request<pb::ResumeTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let caller = caller(&self.engine, &req).await?;
        let r = req.get_ref();
        let resumed = self
            .engine
            .set_paused(caller, r.account_id, r.token_id, false)
            .await?;
        Ok(Response::new(resumed))
    }

    async fn delete_token(
        &self,
        req: Request<pb::DeleteTokenRequest>,
    ) -> Result<Response<pb::DeleteTokenResponse>, Status> {
        let caller = caller(&self.engine, &req).await?;
        let deleted = self.engine.delete_token(caller, req.get_ref()).await?;
        Ok(Response::new(deleted))
    }

    async fn report_leak(
        &self,
        req: Request<pb::ReportLeakRequest>,
    ) -> Result<Response<pb::ReportLeakResponse>, Status> {
        let caller = caller(&self.engine, &req).await?;
        let answer = self.engine.report_leak(caller, req.get_ref()).await?;
        Ok(Response::new(answer))
    }
}
