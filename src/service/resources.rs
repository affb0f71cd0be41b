//! `keyward.v1.Resources`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::pb::v1::{self as pb, resources_server::Resources};
use crate::service::caller;

/// The Resources service.
#[derive(Debug, Clone)]
pub struct ResourcesService {
    /// Shared engine.
    pub engine: Arc<Engine>,
}

#[tonic::async_trait]
impl Resources for ResourcesService {
    async fn register_resource(
        &self,
        req: Request<pb::RegisterResourceRequest>,
    ) -> Result<Response<pb::RegisterResourceResponse>, Status> {
        let caller = caller(&self.engine, &req).await?;
        let registered = self
            .engine
            .register_resource(caller, req.into_inner())
            .await?;
        Ok(Response::new(registered))
    }

    async fn delete_resource(
        &self,
        req: Request<pb::DeleteResourceRequest>,
    ) -> Result<Response<pb::DeleteResourceResponse>, Status> {
        let caller = caller(&self.engine, &req).await?;
        let deleted = self
            .engine
            .delete_resource(caller, req.into_inner())
            .await?;
        Ok(Response::new(deleted))
    }

    async fn list_resources(
        &self,
        req: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        let caller = caller(&self.engine, &req).await?;
        Ok(Response::new(
            self.engine.list_resources(caller, req.get_ref())?,
        ))
    }
}
