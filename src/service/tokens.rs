//! `keyward.v1.Tokens`. Every mutation is appended to the audit log.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::engine::{AuditSubject, Engine};
use crate::pb::v1::{self as pb, tokens_server::Tokens};
use crate::service::credential;

/// The Tokens service.
#[derive(Debug, Clone)]
pub struct TokensService {
    /// Shared engine.
    pub engine: Arc<Engine>,
}

/// The audit subject of a call on one token.
fn on_token(account_id: u64, token_id: u64) -> AuditSubject {
    AuditSubject {
        account_id,
        token_id,
        resource: String::new(),
    }
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
        let req = req.into_inner();
        let subject = on_token(req.account_id, 0);
        let result = self.engine.create_token(caller, req).await;
        let created = |t: &pb::TokenWithSecret| (0, t.token.as_ref().map_or(0, |t| t.id));
        Ok(Response::new(
            self.engine
                .audited(caller, "CreateToken", subject, result, created)
                .await?,
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
        let req = req.into_inner();
        let subject = on_token(req.account_id, req.token_id);
        let result = self.engine.update_token(caller, req).await;
        Ok(Response::new(
            self.engine
                .audited(caller, "UpdateToken", subject, result, |_| (0, 0))
                .await?,
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
        let req = req.into_inner();
        let subject = on_token(req.account_id, req.token_id);
        let result = self.engine.reset_token(caller, req).await;
        Ok(Response::new(
            self.engine
                .audited(caller, "ResetToken", subject, result, |_| (0, 0))
                .await?,
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
        let result = self
            .engine
            .set_paused(caller, r.account_id, r.token_id, true)
            .await;
        let subject = on_token(r.account_id, r.token_id);
        Ok(Response::new(
            self.engine
                .audited(caller, "PauseToken", subject, result, |_| (0, 0))
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
        let result = self
            .engine
            .set_paused(caller, r.account_id, r.token_id, false)
            .await;
        let subject = on_token(r.account_id, r.token_id);
        Ok(Response::new(
            self.engine
                .audited(caller, "ResumeToken", subject, result, |_| (0, 0))
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
        let r = req.get_ref();
        let result = self.engine.delete_token(caller, r).await;
        let subject = on_token(r.account_id, r.token_id);
        Ok(Response::new(
            self.engine
                .audited(caller, "DeleteToken", subject, result, |_| (0, 0))
                .await?,
        ))
    }
}
