//! The audit log: every admin mutation, allowed or refused, is appended with
//! who, what, which token, when and the outcome, never a secret; only
//! account admins (and root) read it, paged; it survives a restart.

mod common;

use common::*;
use keyward::pb::v1 as pb;
use keyward::pb::v1::audit_client::AuditClient;
use tonic::Code;

async fn events(
    s: &TestServer,
    caller: &str,
    account_id: u64,
    page_size: u32,
) -> Result<Vec<pb::AuditEvent>, tonic::Status> {
    let mut client = AuditClient::new(s.channel.clone());
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_audit_events(auth(
                pb::ListAuditEventsRequest {
                    account_id,
                    page_size,
                    page_token,
                },
                caller,
            ))
            .await?
            .into_inner();
        assert!(page.events.len() <= page_size.max(1) as usize || page_size == 0);
        out.extend(page.events);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn every_mutation_is_audited_and_only_admins_read_it() {
    let dir = temp();
    let s = TestServer::start(dir.path()).await;
    let (a, admin) = s.account("A").await;
    let (b, admin_b) = s.account("B").await;
    let dt = s
        .register(&admin, a, DOMAIN, "d.example", None)
        .await
        .expect("domain token");
    s.register(&admin, a, PROJECT, "p", None).await;
    let t = s
        .create(&admin, a, "worker", vec![grant(PROJECT, "p", ADMIN)])
        .await
        .unwrap();
    let tid = t.token.as_ref().unwrap().id;
    s.tokens()
        .pause_token(auth(
            pb::PauseTokenRequest {
                account_id: a,
                token_id: tid,
            },
            &admin,
        ))
        .await
        .unwrap();
    let reset = s
        .tokens()
        .reset_token(auth(
            pb::ResetTokenRequest {
                account_id: a,
                token_id: tid,
                expires_at: None,
                grace: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    // Refused: the last token of a domain; an escalation by a project admin.
    let dtid = dt.token.as_ref().unwrap().id;
    let r = s.delete(&admin, a, dtid).await;
    assert_code(r, Code::FailedPrecondition);
    let p_admin = s
        .create(&admin, a, "p admin", vec![grant(PROJECT, "p", ADMIN)])
        .await
        .unwrap()
        .secret;
    assert_code(
        s.create(
            &p_admin,
            a,
            "escalate",
            vec![grant(ACCOUNT, &a.to_string(), VIEWER)],
        )
        .await,
        Code::PermissionDenied,
    );

    let log = events(&s, &admin, a, 3).await.expect("admin reads the log");
    let admin_id = keyward::token::parse(&admin).unwrap().id;
    let summary: Vec<(&str, &str, u64)> = log
        .iter()
        .map(|e| (e.action.as_str(), e.outcome.as_str(), e.token_id))
        .collect();
    let new_id = reset.token.as_ref().unwrap().id;
    assert_eq!(
        summary,
        vec![
            ("CreateAccount", "OK", admin_id),
            ("RegisterResource", "OK", dtid),
            ("RegisterResource", "OK", 0),
            ("CreateToken", "OK", tid),
            ("PauseToken", "OK", tid),
            ("ResetToken", "OK", tid),
            ("DeleteToken", "FAILED_PRECONDITION", dtid),
            ("CreateToken", "OK", new_id + 1),
            ("CreateToken", "PERMISSION_DENIED", 0),
        ]
    );
    assert!(log.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    assert_eq!(
        log[0].actor_name, "root",
        "the account's log starts with its creation by root"
    );
    assert_eq!(log[1].resource, "domain/d.example");
    assert_eq!(log[1].actor_name, "A admin token");
    assert_eq!(log[8].actor_name, "p admin");
    assert!(log[6].detail.contains("last token"), "{}", log[6].detail);
    assert!(log.iter().all(|e| e.account_id == a && e.at.is_some()));
    // Never a secret.
    let bytes = prost::Message::encode_to_vec(&pb::ListAuditEventsResponse {
        events: log.clone(),
        next_page_token: String::new(),
    });
    for secret in [&admin, &t.secret, &reset.secret, &dt.secret, &p_admin] {
        assert!(!bytes.windows(20).any(|w| w == &secret.as_bytes()[14..34]));
    }
    // B's log holds only B's events; root reads any account's log.
    let b_log = events(&s, &admin_b, b, 100).await.unwrap();
    assert_eq!(
        b_log.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        vec!["CreateAccount"]
    );
    assert_eq!(events(&s, &s.root(), b, 100).await.unwrap(), b_log);
    // Only account admins read it.
    assert_code(events(&s, &p_admin, a, 10).await, Code::PermissionDenied);
    assert_code(events(&s, &admin_b, a, 10).await, Code::PermissionDenied);
    assert_code(events(&s, "kw_garbage", a, 10).await, Code::Unauthenticated);
    s.stop().await.unwrap();

    // Durable: the same log after a restart, and new ids continue above it.
    let s = TestServer::start(dir.path()).await;
    let again = events(&s, &admin, a, 100).await.unwrap();
    assert_eq!(again, log);
    s.register(&admin, a, PROJECT, "q", None).await;
    let after = events(&s, &admin, a, 100).await.unwrap();
    assert_eq!(after.len(), log.len() + 1);
    assert!(after.last().unwrap().id > log.last().unwrap().id);
    s.stop().await.unwrap();
}
