//! `keyward tokens ...`, `keyward authorize` and `keyward introspect`: one
//! gRPC call each (a listing: every page), printed by `render`. A secret
//! (create, reset) goes to stdout once, on the last line, or into the JSON
//! document; nothing here reads one from argv (`authorize -` and
//! `report-leak` read stdin).

use std::process::ExitCode;
use std::time::SystemTime;

use serde_json::json;

use super::admin::Session;
use super::connect::{channel, Token};
use super::exit::{self, CliError};
use super::parse::{timestamp, wire_duration, GrantArg, RateLimitArg, ScopeArg};
use super::render::{self, emit, emit_json};
use super::{grant_to_wire, ClientArgs, TokensCmd};
use crate::model::limits;
use crate::pb::v1 as pb;
use crate::pb::v1::authorizer_client::AuthorizerClient;
use crate::pb::v1::tokens_client::TokensClient;

fn scope_to_wire(s: &ScopeArg) -> pb::Scope {
    pb::Scope {
        name: s.name.clone(),
        level: s.level.to_wire(),
    }
}

fn grants(grants: &[GrantArg]) -> Vec<pb::Grant> {
    grants.iter().map(grant_to_wire).collect()
}

/// Prints a token with its secret: the secret alone on the last line.
fn print_with_secret(args: &ClientArgs, out: pb::TokenWithSecret) -> Result<(), CliError> {
    let token = out.token.unwrap_or_default();
    if args.json {
        emit_json(&json!({"token": render::token_json(&token), "secret": out.secret}))
    } else {
        emit(&render::token_fields(&token))?;
        emit("\nsecret (shown once):")?;
        emit(&out.secret)
    }
}

fn print_token(args: &ClientArgs, token: &pb::Token) -> Result<(), CliError> {
    if args.json {
        emit_json(&render::token_json(token))
    } else {
        emit(&render::token_fields(token))
    }
}

/// `keyward tokens ...`
pub async fn run(args: &ClientArgs, action: TokensCmd) -> Result<ExitCode, CliError> {
    let s = Session::open(args).await?;
    // Every action but report-leak acts in an account.
    let account_id = if matches!(action, TokensCmd::ReportLeak { .. }) {
        0
    } else {
        s.account(args).await?
    };
    let mut client = TokensClient::new(s.channel.clone());
    let now = SystemTime::now();
    match action {
        TokensCmd::Create {
            name,
            grants: g,
            scopes,
            expiry,
            rate_limits,
        } => {
            let out = client
                .create_token(s.request(pb::CreateTokenRequest {
                    account_id,
                    name,
                    grants: grants(&g),
                    scopes: scopes.iter().map(scope_to_wire).collect(),
                    expires_at: expiry.get().map(|e| timestamp(e.at(now))),
                    rate_limits: rate_limits.iter().map(RateLimitArg::to_wire).collect(),
                })?)
                .await?
                .into_inner();
            print_with_secret(args, out)?;
        }
        TokensCmd::List { expiring_before } => {
            let mut tokens = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_tokens(s.request(pb::ListTokensRequest {
                        account_id,
                        page_size: 1000,
                        page_token,
                        expiring_before: expiring_before.map(timestamp),
                    })?)
                    .await?
                    .into_inner();
                tokens.extend(page.tokens);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if args.json {
                let list: Vec<_> = tokens.iter().map(render::token_json).collect();
                emit_json(&json!({ "tokens": list }))?;
            } else {
                emit(&render::tokens_table(&tokens))?;
            }
        }
        TokensCmd::Get { id } => {
            let token = client
                .get_token(s.request(pb::GetTokenRequest {
                    account_id,
                    token_id: id,
                })?)
                .await?
                .into_inner();
            print_token(args, &token)?;
        }
        TokensCmd::Update {
            id,
            name,
            grants: g,
            scopes,
            all_scopes,
            expiry,
            no_expiry,
            rate_limits,
            no_rate_limits,
        } => {
            let mut paths = Vec::new();
            if name.is_some() {
                paths.push("name");
            }
            if !g.is_empty() {
                paths.push("grants");
            }
            if !scopes.is_empty() || all_scopes {
                paths.push("scopes");
            }
            let expires = expiry.get();
            if expires.is_some() || no_expiry {
                paths.push("expires_at");
            }
            if !rate_limits.is_empty() || no_rate_limits {
                paths.push("rate_limits");
            }
            if paths.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give --name, --grant, --scope, --all-scopes, \
                     --expires-in, --expires-at, --no-expiry, --rate-limit or --no-rate-limits"
                        .into(),
                ));
            }
            let token = client
                .update_token(s.request(pb::UpdateTokenRequest {
                    account_id,
                    token_id: id,
                    name: name.unwrap_or_default(),
                    grants: grants(&g),
                    scopes: scopes.iter().map(scope_to_wire).collect(),
                    update_mask: Some(prost_types::FieldMask {
                        paths: paths.into_iter().map(String::from).collect(),
                    }),
                    expires_at: expires.map(|e| timestamp(e.at(now))),
                    rate_limits: rate_limits.iter().map(RateLimitArg::to_wire).collect(),
                })?)
                .await?
                .into_inner();
            print_token(args, &token)?;
        }
        TokensCmd::Reset { id, grace, expiry } => {
            let out = client
                .reset_token(s.request(pb::ResetTokenRequest {
                    account_id,
                    token_id: id,
                    expires_at: expiry.get().map(|e| timestamp(e.at(now))),
                    grace: grace.map(wire_duration),
                })?)
                .await?
                .into_inner();
            print_with_secret(args, out)?;
        }
        TokensCmd::Pause { id } => {
            let req = pb::PauseTokenRequest {
                account_id,
                token_id: id,
            };
            let token = client.pause_token(s.request(req)?).await?.into_inner();
            print_token(args, &token)?;
        }
        TokensCmd::Resume { id } => {
            let req = pb::ResumeTokenRequest {
                account_id,
                token_id: id,
            };
            let token = client.resume_token(s.request(req)?).await?.into_inner();
            print_token(args, &token)?;
        }
        TokensCmd::Delete { id } => {
            let req = pb::DeleteTokenRequest {
                account_id,
                token_id: id,
            };
            let out = client.delete_token(s.request(req)?).await?.into_inner();
            if args.json {
                emit_json(&json!({"token_id": out.token_id}))?;
            } else {
                emit(&render::fields(&[("deleted", out.token_id.to_string())]))?;
            }
        }
        TokensCmd::ReportLeak { url } => report_leak(args, &s, url).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `keyward tokens report-leak`: the secret from stdin.
async fn report_leak(args: &ClientArgs, s: &Session, url: Option<String>) -> Result<(), CliError> {
    // The server looks at 128 bytes; a longer line is still a report.
    let leaked = Token::from_stdin(64 * 1024)?;
    let out = TokensClient::new(s.channel.clone())
        .report_leak(s.request(pb::ReportLeakRequest {
            secret: leaked.expose().to_string(),
            url: url.unwrap_or_default(),
        })?)
        .await?
        .into_inner();
    if args.json {
        emit_json(&json!({"true_positive": out.true_positive}))?;
    } else {
        emit(&render::fields(&[(
            "verdict",
            if out.true_positive {
                "a live keyward token: paused".to_string()
            } else {
                "not a live keyward token".to_string()
            },
        )]))?;
    }
    Ok(())
}

/// `keyward authorize TOKEN TYPE:ID=LEVEL [--scope S]`: exit 0 when
/// allowed, 5 when denied (the answer printed either way).
pub async fn authorize(
    args: &ClientArgs,
    token: &str,
    check: &GrantArg,
    scope: Option<String>,
    cost: Option<u64>,
) -> Result<ExitCode, CliError> {
    let token = if token == "-" {
        Token::from_stdin(limits::TOKEN_MAX)?.expose().to_string()
    } else {
        token.to_string()
    };
    let channel = channel(args).await?;
    let answer = AuthorizerClient::new(channel)
        .authorize(pb::AuthorizeRequest {
            token,
            resource: Some(check.resource.to_wire()),
            level: check.level.to_wire(),
            scope: scope.unwrap_or_default(),
            cost,
        })
        .await?
        .into_inner();
    if args.json {
        emit_json(&render::decision_json(&answer))?;
    } else {
        emit(&render::decision_fields(&answer))?;
    }
    Ok(if answer.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::PERMISSION_DENIED)
    })
}

/// `keyward introspect [-]`: the credential's own token, or one from stdin.
pub async fn introspect(args: &ClientArgs, from_stdin: bool) -> Result<ExitCode, CliError> {
    let token = if from_stdin {
        Token::from_stdin(limits::TOKEN_MAX)?
    } else {
        Token::credential(args)?
    };
    let channel = channel(args).await?;
    let out = AuthorizerClient::new(channel)
        .introspect(pb::IntrospectRequest {
            token: token.expose().to_string(),
        })
        .await?
        .into_inner();
    print_token(args, &out.token.unwrap_or_default())?;
    Ok(ExitCode::SUCCESS)
}
