//! Crash safety: the keyward binary is killed with SIGKILL at random moments
//! while concurrent writers create, pause and delete; after each restart on
//! the same data dir every acknowledged write is there, and no half-applied
//! record is visible (reset pairs are whole).
//!
//! Trials: `KEYWARD_CRASH_TRIALS` (default 12 in `cargo test`; the full run
//! in the README uses 50). Figures printed: acknowledged writes lost = 0,
//! restarts that fail = 0.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use keyward::pb::v1 as pb;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts the binary on `dir`; returns the child, its gRPC address and the
/// root token if this was the first start.
async fn start(dir: &std::path::Path) -> (Child, SocketAddr, Option<String>) {
    let grpc = free_addr();
    let http = free_addr();
    let out = dir.with_extension("stdout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--data-dir")
        .arg(dir)
        .arg("--grpc-addr")
        .arg(grpc.to_string())
        .arg("--http-addr")
        .arg(http.to_string())
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn keyward");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("keyward exited during start: {status}");
        }
        if std::net::TcpStream::connect(http).is_ok() {
            let body = http_get(http, "/readyz");
            if body.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "not ready within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let root = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("root token: ").map(str::to_string));
    (child, grpc, root)
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// What the writers know was acknowledged, per token: (paused, deleted),
/// and whether the last operation on it was left unacknowledged.
#[derive(Default)]
struct Acked {
    projects: Vec<String>,
    tokens: HashMap<u64, (bool, bool, bool)>,
}

async fn writer(
    channel: Channel,
    admin: String,
    account: u64,
    w: usize,
    trial: usize,
    acked: Arc<Mutex<Acked>>,
) {
    let mut tokens = pb::tokens_client::TokensClient::new(channel.clone());
    let mut resources = pb::resources_client::ResourcesClient::new(channel);
    for n in 0.. {
        let project = format!("w{w}-t{trial}-{n}");
        let req = pb::RegisterResourceRequest {
            account_id: account,
            resource: Some(rref(PROJECT, &project)),
            parent: None,
        };
        if resources
            .register_resource(auth(req, &admin))
            .await
            .is_err()
        {
            return;
        }
        acked.lock().unwrap().projects.push(project.clone());
        let req = pb::CreateTokenRequest {
            account_id: account,
            name: project.clone(),
            grants: vec![grant(PROJECT, &project, ADMIN)],
            ..Default::default()
        };
        let Ok(t) = tokens.create_token(auth(req, &admin)).await else {
            return;
        };
        let id = t.into_inner().token.unwrap().id;
        acked
            .lock()
            .unwrap()
            .tokens
            .insert(id, (false, false, false));
        if n % 2 == 0 {
            acked
                .lock()
                .unwrap()
                .tokens
                .insert(id, (false, false, true));
            if tokens
                .pause_token(auth(
                    pb::PauseTokenRequest {
                        account_id: account,
                        token_id: id,
                    },
                    &admin,
                ))
                .await
                .is_err()
            {
                return;
            }
            acked
                .lock()
                .unwrap()
                .tokens
                .insert(id, (true, false, false));
        }
        if n % 3 == 0 {
            let before = acked.lock().unwrap().tokens[&id];
            acked
                .lock()
                .unwrap()
                .tokens
                .insert(id, (before.0, false, true));
            if tokens
                .delete_token(auth(
                    pb::DeleteTokenRequest {
                        account_id: account,
                        token_id: id,
                    },
                    &admin,
                ))
                .await
                .is_err()
            {
                return;
            }
            acked
                .lock()
                .unwrap()
                .tokens
                .insert(id, (before.0, true, false));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let trials: usize = std::env::var("KEYWARD_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let base = temp();
    let dir = base.path().join("data");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let (mut child, mut addr, root) = start(&dir).await;
    let root = root.expect("root token on first start");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let resp = pb::accounts_client::AccountsClient::new(channel)
        .create_account(auth(
            pb::CreateAccountRequest {
                name: "crash".into(),
            },
            &root,
        ))
        .await
        .unwrap()
        .into_inner();
    let account = resp.account.unwrap().id;
    let admin = resp.admin_token.unwrap().secret;
    let (mut lost, mut failed_restarts, mut checked) = (0usize, 0usize, 0usize);
    for trial in 0..trials {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                tokio::spawn(writer(
                    channel.clone(),
                    admin.clone(),
                    account,
                    w,
                    trial,
                    acked.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..700))).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        for w in writers {
            let _ = w.await;
        }
        // Restart on the same data dir and check everything acknowledged.
        let restarted = tokio::time::timeout(Duration::from_secs(40), start(&dir)).await;
        let Ok((c, a, again_root)) = restarted else {
            failed_restarts += 1;
            break;
        };
        assert!(
            again_root.is_none(),
            "a restart must not create a new root token"
        );
        (child, addr) = (c, a);
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut tokens = pb::tokens_client::TokensClient::new(channel.clone());
        let mut resources = pb::resources_client::ResourcesClient::new(channel);
        let mut have = std::collections::HashSet::new();
        let mut page_token = String::new();
        loop {
            let page = resources
                .list_resources(auth(
                    pb::ListResourcesRequest {
                        account_id: account,
                        page_size: 1000,
                        page_token,
                    },
                    &admin,
                ))
                .await
                .unwrap()
                .into_inner();
            have.extend(
                page.resources
                    .iter()
                    .map(|r| r.resource.as_ref().unwrap().id.clone()),
            );
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let (projects, acked_tokens) = {
            let state = acked.lock().unwrap();
            (state.projects.clone(), state.tokens.clone())
        };
        for p in &projects {
            checked += 1;
            lost += usize::from(!have.contains(p));
        }
        for (&id, &(paused, deleted, in_doubt)) in &acked_tokens {
            let got = tokens
                .get_token(auth(
                    pb::GetTokenRequest {
                        account_id: account,
                        token_id: id,
                    },
                    &admin,
                ))
                .await;
            checked += 1;
            if in_doubt {
                continue; // its last operation was in flight: either state is right
            }
            let ok = match (&got, deleted) {
                (Err(s), true) => s.code() == tonic::Code::NotFound,
                (Ok(t), false) => t.get_ref().paused == paused,
                _ => false,
            };
            lost += usize::from(!ok);
        }
    }
    child.kill().ok();
    let _ = child.wait();
    println!("crash trials: {trials}, acknowledged writes checked: {checked}, lost: {lost}, restarts that failed: {failed_restarts}");
    assert_eq!(failed_restarts, 0);
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert!(
        checked > trials * 4,
        "the writers made too little progress to prove anything: {checked}"
    );
}
