//! `keyward.v1.Resources`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::engine::{AuditSubject, Engine};
use crate::pb::v1::{self as pb, resources_server::Resources};
use crate::service::credential;

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
        let caller = self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?;
        let req = req.into_inner();
        let subject = on_resource(req.account_id, req.resource.as_ref());
        let result = self.engine.register_resource(caller, req).await;
        let created = |r: &pb::RegisterResourceResponse| {
            (
                0,
                r.domain_token
                    .as_ref()
                    .and_then(|t| t.token.as_ref())
                    .map_or(0, |t| t.id),
            )
        };
        let audited = self
            .engine
            .audited(caller, "RegisterResource", subject, result, created);
        Ok(Response::new(audited.await?))
    }

    async fn delete_resource(
        &self,
        req: Request<pb::DeleteResourceRequest>,
    ) -> Result<Response<pb::DeleteResourceResponse>, Status> {
        let caller = self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?;
        let req = req.into_inner();
        let subject = on_resource(req.account_id, req.resource.as_ref());
        let result = self.engine.delete_resource(caller, req).await;
        let audited = self
            .engine
            .audited(caller, "DeleteResource", subject, result, |_| (0, 0));
        Ok(Response::new(audited.await?))
    }

    async fn list_resources(
        &self,
        req: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        let caller = self
            .engine
            .authenticate_caller(credential(req.metadata()))
            .await?;
        Ok(Response::new(
            self.engine.list_resources(caller, req.get_ref())?,
        ))
    }
}

/// The audit subject of a call on one resource ("type/id", bounded).
fn on_resource(account_id: u64, r: Option<&pb::ResourceRef>) -> AuditSubject {
    let resource = r
        .map(|r| {
            let kind = crate::model::Kind::from_wire(r.r#type)
                .map_or("unspecified", crate::model::Kind::as_str);
            // A domain as stored (its canonical spelling), so that one
            // domain's events read alike whatever spelling the call used.
            let id = match crate::model::Kind::from_wire(r.r#type) {
                Some(crate::model::Kind::Domain) => crate::model::canonical_host(&r.id).ok(),
                _ => None,
            };
            let id = id.unwrap_or_else(|| r.id.chars().take(100).collect::<String>().into());
            format!("{kind}/{id}")
        })
        .unwrap_or_default();
    AuditSubject {
        account_id,
        token_id: 0,
        resource,
    }
}
