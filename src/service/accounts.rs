//! `keyward.v1.Accounts`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::engine::{AuditSubject, Engine};
use crate::pb::v1::{self as pb, accounts_server::Accounts};
use crate::service::credential;

/// The Accounts service.
#[derive(Debug, Clone)]
pub struct AccountsService {
    /// Shared engine.
    pub engine: Arc<Engine>,
}

#[tonic::async_trait]
impl Accounts for AccountsService {
    async fn create_account(
        &self,
        req: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::CreateAccountResponse>, Status> {
        let caller = self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?;
        let result = self.engine.create_account(caller, req.into_inner()).await;
        let created = |r: &pb::CreateAccountResponse| {
            let token = r.admin_token.as_ref().and_then(|t| t.token.as_ref());
            (
                r.account.as_ref().map_or(0, |a| a.id),
                token.map_or(0, |t| t.id),
            )
        };
        let audited = self.engine.audited(
            caller,
            "CreateAccount",
            AuditSubject::default(),
            result,
            created,
        );
        Ok(Response::new(audited.await?))
    }

    async fn get_account(
        &self,
        req: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let caller = self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?;
        Ok(Response::new(
            self.engine.get_account(caller, req.get_ref())?,
        ))
    }

    async fn list_accounts(
        &self,
        req: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let caller = self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?;
        Ok(Response::new(
            self.engine.list_accounts(caller, req.get_ref())?,
        ))
    }
}
