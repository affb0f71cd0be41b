//! `keyward.v1.Audit`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::pb::v1::{self as pb, audit_server::Audit};
use crate::service::caller;

/// The Audit service.
#[derive(Debug, Clone)]
pub struct AuditService {
    /// Shared engine.
    pub engine: Arc<Engine>,
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = caller(&self.engine, &req).await?;
        Ok(Response::new(
            self.engine.list_audit_events(caller, req.get_ref()).await?,
        ))
    }
}
