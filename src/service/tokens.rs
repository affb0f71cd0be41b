//! `keyward.v1.Tokens`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::pb::v1::{self as pb, tokens_server::Tokens};
use crate::service::credential;

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
        let caller = self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?;
        Ok(Response::new(
            self.engine.create_token(caller, req.into_inner()).await?,
        ))
    }

    async fn get_token(
        &self,
        req: Request<pb::GetTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let caller = self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?;
        Ok(Response::new(self.engine.get_token(caller, req.get_ref())?))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let caller = self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?;
        Ok(Response::new(
            self.engine.list_tokens(caller, req.get_ref())?,
        ))
    }

    async fn update_token(
        &self,
        req: Request<pb::UpdateTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let caller = self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?;
        Ok(Response::new(
            self.engine.update_token(caller, req.into_inner()).await?,
        ))
    }

    async fn reset_token(
        &self,
        req: Request<pb::ResetTokenRequest>,
    ) -> Result<Response<pb::TokenWithSecret>, Status> {
        let caller = self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?;
        Ok(Response::new(
            self.engine.reset_token(caller, req.into_inner()).await?,
        ))
    }

    async fn pause_token(
        &self,
        req: Request<pb::PauseTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let caller = self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?;
        let r = req.get_ref();
        Ok(Response::new(
            self.engine
                .set_paused(caller, r.account_id, r.token_id, true)
                .await?,
        ))
    }

    async fn resume_token(
        &self,
        req: Request<pb::ResumeTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let caller = self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?;
        let r = req.get_ref();
        Ok(Response::new(
            self.engine
                .set_paused(caller, r.account_id, r.token_id, false)
                .await?,
        ))
    }

    async fn delete_token(
        &self,
        req: Request<pb::DeleteTokenRequest>,
    ) -> Result<Response<pb::DeleteTokenResponse>, Status> {
        let caller = self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?;
        Ok(Response::new(
            self.engine.delete_token(caller, req.get_ref()).await?,
        ))
    }
}
