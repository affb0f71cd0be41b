//! `keyward accounts ...`, `keyward resources ...` and `keyward audit`: one
//! gRPC call each (listings: every page), printed by `render`.

use std::process::ExitCode;

use serde_json::json;
use tonic::transport::Channel;

use super::connect::{channel, with_token, Token};
use super::exit::CliError;
use super::parse::{wire_duration, ResourceArg};
use super::render::{self, emit, emit_json};
use super::{AccountsCmd, ClientArgs, ResourcesCmd};
use crate::pb::v1 as pb;
use crate::pb::v1::accounts_client::AccountsClient;
use crate::pb::v1::audit_client::AuditClient;
use crate::pb::v1::authorizer_client::AuthorizerClient;
use crate::pb::v1::resources_client::ResourcesClient;

/// The channel and the caller's token of one command.
pub struct Session {
    /// To the server.
    pub channel: Channel,
    /// The caller's credential.
    pub token: Token,
}

impl Session {
    /// Reads the credential (first: a missing one needs no server), then
    /// connects.
    pub async fn open(args: &ClientArgs) -> Result<Session, CliError> {
        let token = Token::credential(args)?;
        Ok(Session {
            channel: channel(args).await?,
            token,
        })
    }

    /// A request carrying the caller's token.
    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>, CliError> {
        with_token(message, &self.token)
    }

    /// `--account`, or the credential's own account (Introspect).
    pub async fn account(&self, args: &ClientArgs) -> Result<u64, CliError> {
        if let Some(id) = args.account {
            return Ok(id);
        }
        let token = AuthorizerClient::new(self.channel.clone())
            .introspect(pb::IntrospectRequest {
                token: self.token.expose().to_string(),
            })
            .await?
            .into_inner()
            .token
            .unwrap_or_default();
        if token.account_id == 0 {
            return Err(CliError::Usage(
                "--account ID is needed: the credential (the root token) belongs to no account"
                    .into(),
            ));
        }
        Ok(token.account_id)
    }
}

/// `keyward accounts ...`
pub async fn accounts(args: &ClientArgs, action: AccountsCmd) -> Result<ExitCode, CliError> {
    let s = Session::open(args).await?;
    let mut client = AccountsClient::new(s.channel.clone());
    match action {
        AccountsCmd::Create { name } => {
            let out = client
                .create_account(s.request(pb::CreateAccountRequest { name })?)
                .await?
                .into_inner();
            let account = out.account.unwrap_or_default();
            let admin = out.admin_token.unwrap_or_default();
            let token = admin.token.unwrap_or_default();
            if args.json {
                emit_json(&json!({
                    "account": render::account_json(&account),
                    "admin_token": {"token": render::token_json(&token), "secret": admin.secret},
                }))?;
            } else {
                emit(&render::accounts_table(std::slice::from_ref(&account)))?;
                emit(&format!(
                    "\nits ADMIN token {} \"{}\" (shown once):",
                    token.id, token.name
                ))?;
                emit(&admin.secret)?;
            }
        }
        AccountsCmd::List => {
            let mut accounts = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_accounts(s.request(pb::ListAccountsRequest {
                        page_size: 1000,
                        page_token,
                    })?)
                    .await?
                    .into_inner();
                accounts.extend(page.accounts);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if args.json {
                let list: Vec<_> = accounts.iter().map(render::account_json).collect();
                emit_json(&json!({ "accounts": list }))?;
            } else {
                emit(&render::accounts_table(&accounts))?;
            }
        }
        AccountsCmd::Get { id } => {
            let account = client
                .get_account(s.request(pb::GetAccountRequest { account_id: id })?)
                .await?
                .into_inner();
            print_account(args, &account)?;
        }
        AccountsCmd::Update {
            id,
            name,
            max_token_lifetime,
            require_expiry,
        } => {
            let mut paths = Vec::new();
            if name.is_some() {
                paths.push("name".to_string());
            }
            if max_token_lifetime.is_some() {
                paths.push("policy.max_token_lifetime".to_string());
            }
            if require_expiry.is_some() {
                paths.push("policy.require_expiry".to_string());
            }
            if paths.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give --name, --max-token-lifetime or --require-expiry"
                        .into(),
                ));
            }
            let account = client
                .update_account(
                    s.request(pb::UpdateAccountRequest {
                        account_id: id,
                        name: name.unwrap_or_default(),
                        policy: Some(pb::AccountPolicy {
                            max_token_lifetime: max_token_lifetime
                                .filter(|d| !d.is_zero())
                                .map(wire_duration),
                            require_expiry: require_expiry.unwrap_or(false),
                        }),
                        update_mask: Some(prost_types::FieldMask { paths }),
                    })?,
                )
                .await?
                .into_inner();
            print_account(args, &account)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_account(args: &ClientArgs, account: &pb::Account) -> Result<(), CliError> {
    if args.json {
        emit_json(&render::account_json(account))
    } else {
        emit(&render::accounts_table(std::slice::from_ref(account)))
    }
}

/// `keyward resources ...`
pub async fn resources(args: &ClientArgs, action: ResourcesCmd) -> Result<ExitCode, CliError> {
    let s = Session::open(args).await?;
    let account_id = s.account(args).await?;
    let mut client = ResourcesClient::new(s.channel.clone());
    match action {
        ResourcesCmd::Register { kind, id, parent } => {
            let resource = ResourceArg { kind, id };
            let out = client
                .register_resource(s.request(pb::RegisterResourceRequest {
                    account_id,
                    resource: Some(resource.to_wire()),
                    parent: parent.as_ref().map(ResourceArg::to_wire),
                })?)
                .await?
                .into_inner();
            // The answer names no parent: the one given, else the account.
            let info = pb::ResourceInfo {
                resource: out.resource,
                parent: Some(parent.as_ref().map_or_else(
                    || pb::ResourceRef {
                        r#type: crate::model::Kind::Account.to_wire(),
                        id: account_id.to_string(),
                    },
                    ResourceArg::to_wire,
                )),
            };
            if args.json {
                emit_json(&json!({
                    "resource": render::resource_json(info.resource.as_ref()),
                    "domain_token": out.domain_token.map(|d| json!({
                        "token": render::token_json(&d.token.unwrap_or_default()),
                        "secret": d.secret,
                    })),
                }))?;
            } else {
                emit(&render::resources_table(std::slice::from_ref(&info)))?;
                if let Some(d) = out.domain_token {
                    let token = d.token.unwrap_or_default();
                    emit(&format!(
                        "\nthe domain's token {} \"{}\" (shown once):",
                        token.id, token.name
                    ))?;
                    emit(&d.secret)?;
                }
            }
        }
        ResourcesCmd::List => {
            let mut resources = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_resources(s.request(pb::ListResourcesRequest {
                        account_id,
                        page_size: 1000,
                        page_token,
                    })?)
                    .await?
                    .into_inner();
                resources.extend(page.resources);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if args.json {
                let list: Vec<_> = resources
                    .iter()
                    .map(|r| {
                        let mut v = render::resource_json(r.resource.as_ref());
                        v["parent"] = render::resource_json(r.parent.as_ref());
                        v
                    })
                    .collect();
                emit_json(&json!({ "resources": list }))?;
            } else {
                emit(&render::resources_table(&resources))?;
            }
        }
        ResourcesCmd::Delete { kind, id } => {
            let out = client
                .delete_resource(s.request(pb::DeleteResourceRequest {
                    account_id,
                    resource: Some(ResourceArg { kind, id }.to_wire()),
                })?)
                .await?
                .into_inner();
            if args.json {
                let deleted: Vec<_> = out
                    .deleted
                    .iter()
                    .map(|r| render::resource_json(Some(r)))
                    .collect();
                emit_json(&json!({"deleted": deleted, "grants_dropped": out.grants_dropped}))?;
            } else {
                let deleted: Vec<_> = out
                    .deleted
                    .iter()
                    .map(|r| render::resource_text(Some(r)))
                    .collect();
                emit(&render::fields(&[
                    ("deleted", deleted.join(" ")),
                    ("grants dropped", out.grants_dropped.to_string()),
                ]))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `keyward audit`: every page, the newest `limit` events kept.
pub async fn audit(args: &ClientArgs, limit: usize) -> Result<ExitCode, CliError> {
    let s = Session::open(args).await?;
    let account_id = s.account(args).await?;
    let mut client = AuditClient::new(s.channel.clone());
    let mut events = std::collections::VecDeque::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_audit_events(s.request(pb::ListAuditEventsRequest {
                account_id,
                page_size: 1000,
                page_token,
            })?)
            .await?
            .into_inner();
        for event in page.events {
            events.push_back(event);
            if events.len() > limit {
                events.pop_front();
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let events: Vec<_> = events.into();
    if args.json {
        let list: Vec<_> = events.iter().map(render::event_json).collect();
        emit_json(&json!({ "events": list }))?;
    } else {
        emit(&render::events_table(&events))?;
    }
    Ok(ExitCode::SUCCESS)
}
