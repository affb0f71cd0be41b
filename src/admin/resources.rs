//! Resources: projects, their sandboxes, and domains (each with a token of
//! its own), registered under a parent the caller holds at ADMIN; deleted
//! with their descendants and every grant on them.

use super::AuditSubject;
use crate::access::derived_name;
use crate::engine::{Engine, Mint, NewToken};
use crate::error::{Error, Result};
use crate::index::Change;
use crate::model::{self, Grant, Kind, Level, ResourceKey};
use crate::pb::store::ResourceRecord;
use crate::pb::v1 as pb;
use crate::wire::{checked_page_size, resource_cursor, Page};

impl Engine {
    /// RegisterResource: a project, sandbox or domain; a domain gets a token.
    pub async fn register_resource(
        &self,
        caller: u64,
        req: pb::RegisterResourceRequest,
    ) -> Result<pb::RegisterResourceResponse> {
        let subject = AuditSubject::resource(req.account_id, req.resource.as_ref());
        let result = self.register(caller, &req).await;
        let created = |r: &pb::RegisterResourceResponse| {
            let token = r.domain_token.as_ref().and_then(|t| t.token.as_ref());
            (0, token.map_or(0, |t| t.id))
        };
        self.audit(caller, "RegisterResource", subject, result, created)
            .await
    }

    async fn register(
        &self,
        caller: u64,
        req: &pb::RegisterResourceRequest,
    ) -> Result<pb::RegisterResourceResponse> {
        let resource = model::resource_from_wire("resource", req.resource.as_ref())?;
        let parent = parent_of(&resource, req)?;
        let mint = if resource.kind == Kind::Domain {
            Mint::Token
        } else {
            Mint::No
        };
        let done = self
            .mutate(caller, mint, |p| {
                let account = p
                    .access
                    .may_register(p.idx, req.account_id, &resource, &parent)?;
                let mut changes = vec![Change::PutResource(ResourceRecord {
                    account_id: account.id,
                    resource_type: resource.kind.to_wire(),
                    id: resource.id.to_string(),
                    parent_type: parent.kind.to_wire(),
                    parent_id: parent.id.to_string(),
                })];
                if mint == Mint::Token {
                    let token = p.mint(NewToken {
                        account_id: account.id,
                        name: derived_name(&resource.id, p.idx.next_token_id),
                        created_by: p.access.caller().name.to_string(),
                        grants: vec![Grant {
                            resource: resource.clone(),
                            level: Level::Admin,
                        }],
                        scopes: p.access.caller().scopes().to_vec(),
                        expires_at_ms: None,
                        replaces: 0,
                    });
                    changes.insert(0, p.counters(0, 1));
                    changes.push(Change::PutToken(token));
                }
                Ok((changes, ()))
            })
            .await?;
        if crate::logs::ADMIN_CHANGES.admit() {
            tracing::info!(account.id = req.account_id, resource = %resource, "resource registered");
        }
        let domain_token = done
            .secret
            .map(|secret| self.with_secret(Some(secret)))
            .transpose()?;
        Ok(pb::RegisterResourceResponse {
            resource: Some(resource.to_wire()),
            domain_token,
        })
    }

    /// DeleteResource: the resource, its descendants, and every grant on them.
    pub async fn delete_resource(
        &self,
        caller: u64,
        req: pb::DeleteResourceRequest,
    ) -> Result<pb::DeleteResourceResponse> {
        let subject = AuditSubject::resource(req.account_id, req.resource.as_ref());
        let result = self.delete_resource_now(caller, &req).await;
        self.audit(caller, "DeleteResource", subject, result, |_| (0, 0))
            .await
    }

    async fn delete_resource_now(
        &self,
        caller: u64,
        req: &pb::DeleteResourceRequest,
    ) -> Result<pb::DeleteResourceResponse> {
        let resource = model::resource_from_wire("resource", req.resource.as_ref())?;
        if resource.kind == Kind::Account {
            return Err(Error::invalid(
                "resource.type",
                "an account cannot be deleted as a resource",
            ));
        }
        let done = self
            .mutate(caller, Mint::No, |p| {
                let account = p
                    .access
                    .may_delete_resource(p.idx, req.account_id, &resource)?;
                let mut deleted = vec![resource.clone()];
                if resource.kind == Kind::Project {
                    deleted.extend(
                        account.resources[Kind::Sandbox.slot()]
                            .iter()
                            .filter(|(_, node)| node.parent.as_deref() == Some(&*resource.id))
                            .map(|(id, _)| ResourceKey::new(Kind::Sandbox, id.clone())),
                    );
                }
                let mut changes: Vec<Change> = deleted
                    .iter()
                    .map(|key| Change::DeleteResource {
                        account_id: account.id,
                        key: key.clone(),
                    })
                    .collect();
                let mut dropped = 0u32;
                for id in account.tokens.iter() {
                    let Some(t) = p.idx.tokens.get(&id) else {
                        continue;
                    };
                    let before = t.grants().len();
                    if !t.grants().iter().any(|g| deleted.contains(&g.resource)) {
                        continue;
                    }
                    let mut record = t.to_record(p.idx.key());
                    record.grants.retain(|g| {
                        !deleted
                            .iter()
                            .any(|d| d.kind.to_wire() == g.resource_type && *d.id == g.resource_id)
                    });
                    dropped += u32::try_from(before - record.grants.len()).unwrap_or(u32::MAX);
                    changes.push(Change::PutToken(record));
                }
                Ok((changes, (deleted, dropped)))
            })
            .await?;
        let (deleted, dropped) = done.answer;
        if crate::logs::ADMIN_CHANGES.admit() {
            tracing::info!(account.id = req.account_id, resource = %resource, grants_dropped = dropped, "resource deleted");
        }
        Ok(pb::DeleteResourceResponse {
            deleted: deleted.iter().map(ResourceKey::to_wire).collect(),
            grants_dropped: dropped,
        })
    }

    /// ListResources: those the caller holds any grant covering, by type
    /// then id, paged (the page token is the last resource's `type:id`).
    pub fn list_resources(
        &self,
        caller: u64,
        req: &pb::ListResourcesRequest,
    ) -> Result<pb::ListResourcesResponse> {
        let size = checked_page_size(req.page_size)?;
        let after = resource_cursor(&req.page_token)?;
        let idx = self.view();
        let access = self.access(&idx, caller)?;
        let account = access.account(&idx, req.account_id)?;
        let mut page = Page::new(size);
        let account_key = ResourceKey::account(account.id);
        'kinds: for kind in [Kind::Project, Kind::Sandbox, Kind::Domain] {
            let from = match after {
                Some((k, _)) if k.slot() > kind.slot() => continue,
                Some((k, id)) if k == kind => Some(id),
                _ => None,
            };
            let mut ids: Vec<_> = account.resources[kind.slot()]
                .iter()
                .filter(|(id, _)| from.is_none_or(|from| &***id > from))
                .collect();
            ids.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (id, node) in ids {
                let key = ResourceKey::new(kind, id.clone());
                if access.level_on(&idx, account, &key).is_none() {
                    continue;
                }
                let parent = match &node.parent {
                    Some(p) => ResourceKey::new(Kind::Project, p.clone()),
                    None => account_key.clone(),
                };
                let info = pb::ResourceInfo {
                    resource: Some(key.to_wire()),
                    parent: Some(parent.to_wire()),
                };
                if !page.push(info) {
                    break 'kinds;
                }
            }
        }
        let next_page_token = page.next_token(|r| {
            r.resource
                .as_ref()
                .map(|k| format!("{}:{}", k.r#type, k.id))
                .unwrap_or_default()
        });
        Ok(pb::ListResourcesResponse {
            resources: page.items,
            next_page_token,
        })
    }
}

/// The parent a new resource is registered under: a sandbox names its
/// project; a project or domain belongs to its account (given or not).
fn parent_of(resource: &ResourceKey, req: &pb::RegisterResourceRequest) -> Result<ResourceKey> {
    Ok(match (resource.kind, req.parent.as_ref()) {
        (Kind::Account, _) => {
            return Err(Error::invalid(
                "resource.type",
                "accounts are created with CreateAccount",
            ))
        }
        (Kind::Sandbox, None) => {
            return Err(Error::invalid(
                "parent",
                "a sandbox needs its project as parent",
            ))
        }
        (Kind::Sandbox, Some(p)) => {
            let p = model::resource_from_wire("parent", Some(p))?;
            if p.kind != Kind::Project {
                return Err(Error::invalid(
                    "parent.type",
                    "the parent of a sandbox must be a PROJECT",
                ));
            }
            p
        }
        (_, Some(p)) => {
            let p = model::resource_from_wire("parent", Some(p))?;
            if p != ResourceKey::account(req.account_id) {
                return Err(Error::invalid(
                    "parent",
                    "the parent of a project or domain is its account; leave it unset",
                ));
            }
            p
        }
        (_, None) => ResourceKey::account(req.account_id),
    })
}
