//! Target `authorize`: an `AuthorizeRequest` through the real in-memory
//! hot path (`Engine::authorize_cached`) of the [`world`](super::world),
//! each decision compared with the reference decision.

use keyward::engine::Cached;
use keyward::model::limits;
use keyward::pb::v1 as pb;
use keyward::service::authorizer::check_of;
use keyward::token;
use pb::DenyReason;
use prost::Message;

use super::world::{reference_decision, world};

/// An `AuthorizeRequest` through the real in-memory hot path of [`world`].
/// A token field `@<n>` is replaced by the world's n-th real token (a fuzzer
/// cannot forge a secret); decisions on real tokens are compared with
/// [`reference_decision`], and anything else must be denied.
pub fn authorize(data: &[u8]) {
    let Ok(mut req) = pb::AuthorizeRequest::decode(data) else {
        return;
    };
    let w = world();
    let spec = req
        .token
        .strip_prefix('@')
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| w.tokens.get(n));
    if let Some(spec) = spec {
        req.token.clone_from(&spec.secret);
    }
    let Ok(check) = check_of("", &req) else {
        return;
    };
    let decision = match w.engine.authorize_cached(&req.token, &check) {
        Cached::Decided(d) => d,
        Cached::NeedsArgon2 { .. } => {
            panic!("every token of the world has a verified digest: no argon2")
        }
    };
    let result = if decision.allowed {
        Ok(())
    } else {
        Err(decision.reason)
    };
    let known = w.tokens.iter().find(|t| t.secret == req.token);
    match known {
        Some(t) => {
            let parsed = token::parse(&t.secret).expect("a real token parses");
            assert_eq!(decision.token_id, parsed.id);
            assert_eq!(decision.account_id, t.account);
            assert_eq!(
                result,
                reference_decision(w, t, &check),
                "decision for token #{} on {:?}",
                w.tokens
                    .iter()
                    .position(|o| o.secret == t.secret)
                    .unwrap_or(0),
                check
            );
        }
        None => {
            let well_formed =
                req.token.len() <= limits::TOKEN_MAX && token::parse(&req.token).is_some();
            let want = if well_formed {
                DenyReason::UnknownToken
            } else {
                DenyReason::Malformed
            };
            assert_eq!(result, Err(want), "a token the world does not hold");
            assert_eq!(decision.account_id, 0);
        }
    }
}
