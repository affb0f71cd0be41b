//! `keyward.v1.Accounts`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::pb::v1::{self as pb, accounts_server::Accounts};
use crate::service::caller;

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
        let caller = caller(&self.engine, &req).await?;
        let created = self.engine.create_account(caller, req.into_inner()).await?;
        Ok(Response::new(created))
    }

    async fn get_account(
        &self,
        req: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let caller = caller(&self.engine, &req).await?;
        Ok(Response::new(
            self.engine.get_account(caller, req.get_ref())?,
        ))
    }

    async fn list_accounts(
        &self,
        req: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let caller = caller(&self.engine, &req).await?;
        Ok(Response::new(
            self.engine.list_accounts(caller, req.get_ref())?,
        ))
    }

    async fn update_account(
        &self,
        req: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let caller = caller(&self.engine, &req).await?;
        let account = self.engine.update_account(caller, req.into_inner()).await?;
        Ok(Response::new(account))
    }
}
