//! Sending limits on many nodes: followers lease budget from the primary
//! in chunks (`Replication/Lease`). A primary and 3 followers under
//! concurrent load never allow more than the stated bound, counted over
//! the whole run (limit + elapsed × limit / period + one chunk per
//! follower); a follower cut off from its primary spends only its lease,
//! then refuses; past the staleness bound it fails closed, or (told to
//! serve stale) decides from its own copy of the budget; a follower that
//! stops gives its unspent lease back. (PostgreSQL nodes: lease_pg.rs.)

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::lease::*;
use common::*;
use keyward::clock::ManualClock;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

async fn follower(
    primary: SocketAddr,
    pdir: &Path,
    dir: &Path,
    clock: Arc<ManualClock>,
) -> TestServer {
    follower_with(primary, pdir, dir, clock, false).await
}

async fn follower_with(
    primary: SocketAddr,
    pdir: &Path,
    dir: &Path,
    clock: Arc<ManualClock>,
    serve_stale: bool,
) -> TestServer {
    let opts = follower_options(
        dir,
        clock.clone(),
        primary,
        &pdir.join("digest.key"),
        serve_stale,
    );
    TestServer::start_with(opts, clock)
        .await
        .expect("follower starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_and_three_followers_stay_within_the_bound() {
    let (pdir, d1, d2, d3) = (temp(), temp(), temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let limit = 320; // chunk: 320 / 16 = 20
    let chunk = 20;
    let secret = token(&p, limit).await;
    let mut fs = Vec::new();
    for d in [&d1, &d2, &d3] {
        let f = follower(p.grpc, pdir.path(), d.path(), p.clock.clone()).await;
        knows(&f, &secret).await;
        fs.push(f);
    }
    let first = two_phases(
        &[&p, &fs[0], &fs[1], &fs[2]],
        &secret,
        &p.clock,
        (limit, chunk, 3),
        limit + 3 * chunk,
        "lease",
    )
    .await;
    assert!(
        first[1..].iter().all(|&n| n > 0),
        "every follower allowed some: {first:?}"
    );
}

/// A TCP proxy that can be dropped (cutting every connection).
struct Proxy {
    addr: SocketAddr,
    conns: Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(to: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns: Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let c = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                c.lock().push(tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                }));
            }
        });
        Proxy {
            addr,
            conns,
            accept,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().drain(..) {
            c.abort();
        }
    }
}

#[tokio::test]
async fn a_cut_off_follower_spends_only_its_lease() {
    let (pdir, fdir) = (temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let secret = token(&p, 160).await; // chunk: 10
    let proxy = Proxy::start(p.grpc).await;
    let f = follower(proxy.addr, pdir.path(), fdir.path(), p.clock.clone()).await;
    knows(&f, &secret).await;
    // The first allow takes a lease of one chunk (one bounded wait).
    let d = f
        .authorizer()
        .authorize(req(&secret))
        .await
        .unwrap()
        .into_inner();
    assert!(d.allowed, "{d:?}");
    assert_eq!(
        d.remaining,
        Some(159),
        "one chunk leased, one unit spent: its lease and what the primary has left"
    );
    drop(proxy);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let allowed = allowed_of(&f, &secret, 15).await;
    assert_eq!(allowed, 9, "the rest of its lease, then refusals");
    // The primary still has what was not leased: 160 - 10.
    let mut r = req(&secret);
    r.cost = Some(0);
    let d = p.authorizer().authorize(r).await.unwrap().into_inner();
    assert_eq!(d.remaining, Some(150));
}

/// Past `--stale-after` with `--stale-mode serve`, a cut-off follower
/// spends its lease, then decides from its own copy of the budget: the
/// limit again, on its own (documented); with `closed` it fails closed.
#[tokio::test]
async fn a_stale_follower_told_to_serve_falls_back_on_its_own_budget() {
    let (pdir, fdir, cdir) = (temp(), temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let secret = token(&p, 160).await; // chunk: 10
    let proxy = Proxy::start(p.grpc).await;
    let f = follower_with(proxy.addr, pdir.path(), fdir.path(), p.clock.clone(), true).await;
    let closed = follower_with(proxy.addr, pdir.path(), cdir.path(), p.clock.clone(), false).await;
    knows(&f, &secret).await;
    knows(&closed, &secret).await;
    assert!(
        f.authorizer()
            .authorize(req(&secret))
            .await
            .unwrap()
            .get_ref()
            .allowed
    );
    drop(proxy);
    p.clock.advance_ms(31_000);
    let mut allowed = 0;
    for _ in 0..200 {
        if f.authorizer()
            .authorize(req(&secret))
            .await
            .unwrap()
            .get_ref()
            .allowed
        {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 9 + 160, "the lease's 9, then its own full budget");
    let r = closed.authorizer().authorize(req(&secret)).await;
    assert_eq!(r.unwrap_err().code(), tonic::Code::Unavailable);
}

/// A follower that stops cleanly gives its unspent lease back.
#[tokio::test]
async fn a_stopping_follower_gives_its_lease_back() {
    let (pdir, fdir) = (temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let secret = token(&p, 160).await; // chunk: 10
    let mut opts = follower_options(
        fdir.path(),
        p.clock.clone(),
        p.grpc,
        &pdir.path().join("digest.key"),
        false,
    );
    // The lease stays until the stop even on a loaded machine (an idle
    // give-back in flight when the stop comes is not what this checks).
    opts.settings.lease_idle = std::time::Duration::from_secs(3600);
    let f = TestServer::start_with(opts, p.clock.clone())
        .await
        .expect("follower starts");
    knows(&f, &secret).await;
    assert_eq!(allowed_of(&f, &secret, 1).await, 1);
    let mut r = req(&secret);
    r.cost = Some(0);
    let before = p
        .authorizer()
        .authorize(r.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.remaining, Some(150), "one chunk leased");
    f.stop().await.unwrap();
    let after = p.authorizer().authorize(r).await.unwrap().into_inner();
    assert_eq!(after.remaining, Some(159), "the 9 unspent came back");
}
