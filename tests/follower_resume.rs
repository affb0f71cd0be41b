//! A follower keeps its state in its data dir (`follower.state`) and, on
//! restart, resumes from it when the primary's history still reaches its
//! revision: no snapshot is served (the primary's count does not move),
//! and it answers with what changed while it was down from its first
//! answer on. A damaged file is discarded for a snapshot, never served
//! from; a primary that restarted (a new epoch) sends a snapshot.
//!
//! The metrics are the process's and every test here counts snapshots, so
//! the tests run one at a time.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;

use common::*;
use keyward::pb::v1 as pb;

/// One test at a time: they compare process-wide snapshot counts.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The follower's state file in `dir`.
fn state_file(dir: &Path) -> std::path::PathBuf {
    dir.join("follower.state")
}

/// A follower of `p` on `dir`, with the primary's digest key; returns once
/// it serves.
async fn follower(p: &TestServer, pdir: &Path, dir: &Path) -> TestServer {
    let opts = follower_options(
        dir,
        p.clock.clone(),
        p.grpc,
        &pdir.join("digest.key"),
        false,
    );
    TestServer::start_with(opts, p.clock.clone())
        .await
        .expect("follower starts")
}

/// (snapshots the primaries of this process served, snapshots the
/// followers of this process applied).
async fn snapshots(p: &TestServer) -> (f64, f64) {
    let m = http(p.http, "GET", "/metrics", None, None).await;
    let text = String::from_utf8_lossy(&m.body);
    (
        metric(&text, "keyward_replication_snapshots_served_total"),
        metric(&text, "keyward_follower_snapshots_total"),
    )
}

/// Waits (≤ 10 s) until `f` answers `want` for the check.
async fn converge(f: &TestServer, token: &str, level: i32, want: (bool, DenyReason)) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let d = f.check(token, PROJECT, "p1", level).await;
        if (d.allowed, d.reason) == (want.0, want.1 as i32) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the follower still answers {d:?}, want {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

const ALLOW: (bool, DenyReason) = (true, DenyReason::Unspecified);

/// Asserts `f` answers `want` now (no waiting: its first answers must
/// already be right).
async fn answers(
    f: &TestServer,
    token: &str,
    kind: pb::ResourceType,
    id: &str,
    level: i32,
    want: (bool, DenyReason),
) {
    let d = f.check(token, kind, id, level).await;
    assert_eq!(
        (d.allowed, d.reason),
        (want.0, want.1 as i32),
        "{kind:?} {id}: {d:?}"
    );
}

/// A follower stopped cleanly and started again on its data dir resumes
/// from the state it kept: the primary serves no snapshot and the
/// follower applies none, yet from its first answer on it knows what
/// changed while it was down (a pause, a delete, a new token on a new
/// resource) and what did not.
#[tokio::test]
async fn a_restarted_follower_resumes_from_its_state_without_a_snapshot() {
    let _one = SERIAL.lock().await;
    let (pdir, fdir) = (temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let viewer = vec![grant(PROJECT, "p1", VIEWER)];
    let kept = p
        .create(&admin, acct, "kept", viewer.clone())
        .await
        .unwrap();
    let paused = p
        .create(&admin, acct, "paused", viewer.clone())
        .await
        .unwrap();
    let deleted = p.create(&admin, acct, "deleted", viewer).await.unwrap();

    let f = follower(&p, pdir.path(), fdir.path()).await;
    converge(&f, &deleted.secret, VIEWER, ALLOW).await;
    f.stop().await.expect("clean stop");

    // While the follower is down: a pause, a delete, a new resource and a
    // token on it.
    p.tokens()
        .pause_token(auth(
            pb::PauseTokenRequest {
                account_id: acct,
                token_id: paused.token.as_ref().unwrap().id,
            },
            &admin,
        ))
        .await
        .unwrap();
    p.delete(&admin, acct, deleted.token.as_ref().unwrap().id)
        .await
        .unwrap();
    p.register(&admin, acct, PROJECT, "p2", None).await;
    let new = p
        .create(&admin, acct, "new", vec![grant(PROJECT, "p2", ADMIN)])
        .await
        .unwrap();

    let before = snapshots(&p).await;
    let f = follower(&p, pdir.path(), fdir.path()).await;
    answers(&f, &kept.secret, PROJECT, "p1", VIEWER, ALLOW).await;
    answers(
        &f,
        &paused.secret,
        PROJECT,
        "p1",
        VIEWER,
        (false, DenyReason::Paused),
    )
    .await;
    answers(
        &f,
        &deleted.secret,
        PROJECT,
        "p1",
        VIEWER,
        (false, DenyReason::UnknownToken),
    )
    .await;
    answers(&f, &new.secret, PROJECT, "p2", ADMIN, ALLOW).await;
    let after = snapshots(&p).await;
    assert_eq!(
        after, before,
        "(served, applied) snapshots moved across the restart: the follower did not resume"
    );
    assert!(
        before.0 >= 1.0,
        "the follower's first start was a snapshot the primary counted: {before:?}"
    );
    let fs = f.engine.follower().unwrap();
    assert_eq!(
        fs.revision.load(Ordering::Acquire),
        fs.primary_revision.load(Ordering::Acquire),
        "caught up"
    );

    // The file: only its owner may read it.
    let path = state_file(fdir.path());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&path)
            .expect("the state file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    f.stop().await.unwrap();
    p.stop().await.unwrap();
}

/// A way a state file can be damaged, and a word the warning must hold.
struct Damage {
    what: &'static str,
    apply: fn(&mut Vec<u8>),
    said: &'static str,
}

const DAMAGES: [Damage; 5] = [
    Damage {
        what: "a byte flipped in the middle",
        apply: |b| {
            let i = b.len() / 2;
            b[i] ^= 0x20;
        },
        said: "not usable",
    },
    Damage {
        what: "truncated to half",
        apply: |b| b.truncate(b.len() / 2),
        said: "truncated",
    },
    Damage {
        what: "the last byte of the checksum flipped",
        apply: |b| {
            let i = b.len() - 1;
            b[i] ^= 1;
        },
        said: "checksum mismatch",
    },
    Damage {
        what: "another format version",
        apply: |b| b[8..12].copy_from_slice(&99u32.to_be_bytes()),
        said: "format version 99",
    },
    Damage {
        what: "empty",
        apply: |b| b.clear(),
        said: "truncated",
    },
];

/// A damaged state file (a flipped byte, cut short, another version,
/// empty) is set aside with a warning naming why, and the follower takes a
/// snapshot: the primary serves one and the follower applies one for each
/// restart, and its first answers know what changed while it was down.
#[tokio::test]
async fn a_damaged_state_file_is_discarded_for_a_snapshot() {
    let _one = SERIAL.lock().await;
    let log = log_capture("info");
    let (pdir, fdir) = (temp(), temp());
    let (pdir, fdir) = (pdir.path(), fdir.path());
    let p = TestServer::start(pdir).await;
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    for Damage { what, apply, said } in DAMAGES {
        // A follower (a snapshot the first round, a resume from the
        // previous round's state after) stops cleanly: state written.
        follower(&p, pdir, fdir).await.stop().await.unwrap();
        let path = state_file(fdir);
        let mut bytes = std::fs::read(&path).expect("a state file after a clean stop");
        apply(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let t = p
            .create(&admin, acct, what, vec![grant(PROJECT, "p1", VIEWER)])
            .await
            .unwrap();

        let before = snapshots(&p).await;
        let mark = log.mark();
        let f = follower(&p, pdir, fdir).await;
        answers(&f, &t.secret, PROJECT, "p1", VIEWER, ALLOW).await;
        let after = snapshots(&p).await;
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (1.0, 1.0),
            "{what}: one snapshot served and applied"
        );
        let warned = log.lines_since(mark, "follower state file is not usable");
        assert!(
            warned
                .iter()
                .any(|l| l.contains(said) && l.contains("WARN")),
            "{what}: a warning naming why ({said}): {warned:?}"
        );
        let aside = fdir.join("follower.state.damaged");
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            bytes,
            "{what}: set aside as it was"
        );
        f.stop().await.unwrap();
    }
    p.stop().await.unwrap();
}

/// A state file in the archive format, checksummed: `source` in its
/// header, then `records`.
fn crafted_state(source: &str, records: &[keyward::store::records::Record]) -> Vec<u8> {
    use keyward::store::archive::{ArchiveWriter, Header, Position};
    let header = Header {
        created_at_ms: 1,
        source: source.into(),
        digest_key_id: Vec::new(),
        position: Some(Position {
            epoch: 1,
            revision: 1,
        }),
    };
    let mut w = ArchiveWriter::new(Vec::new(), &header).unwrap();
    for r in records {
        w.write(r).unwrap();
    }
    w.finish().unwrap().0
}

/// A follower state file holding the id counter `next` and one token,
/// `id`.
fn one_token_state(next: u64, id: u64) -> Vec<u8> {
    use keyward::pb::store::TokenRecord;
    use keyward::store::records::Record;
    let records = [
        Record::Counters {
            next_account_id: 1,
            next_token_id: next,
        },
        Record::Token(TokenRecord {
            id,
            name: "far".into(),
            ..Default::default()
        }),
    ];
    crafted_state("follower", &records)
}

/// A valid file of another kind (a store backup: the same format, source
/// "sled", audit events) is not a follower's state: set aside, snapshot.
#[tokio::test]
async fn a_backup_file_in_place_of_the_state_is_refused() {
    use keyward::pb::store::{AuditRecord, TokenRecord};
    use keyward::store::records::Record;
    let _one = SERIAL.lock().await;
    let log = log_capture("info");
    let (pdir, fdir) = (temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    for (source, audit, said) in [
        ("sled", false, "not a follower's state file"),
        ("follower", true, "audit events"),
    ] {
        let mut records = vec![
            Record::Counters {
                next_account_id: 1,
                next_token_id: 2,
            },
            Record::Token(TokenRecord {
                id: 1,
                ..Default::default()
            }),
        ];
        if audit {
            records.push(Record::Audit(AuditRecord::default()));
        }
        std::fs::write(state_file(fdir.path()), crafted_state(source, &records)).unwrap();
        let before = snapshots(&p).await;
        let mark = log.mark();
        let f = follower(&p, pdir.path(), fdir.path()).await;
        let after = snapshots(&p).await;
        assert_eq!(after.0 - before.0, 1.0, "{source}: a snapshot");
        let warned = log.lines_since(mark, "follower state file is not usable");
        assert!(
            warned.iter().any(|l| l.contains(said)),
            "{source}: {said}: {warned:?}"
        );
        f.stop().await.unwrap();
    }
    p.stop().await.unwrap();
}

/// A state file that passes its checksum but holds a token id at or beyond
/// its own id counter (keyward never writes one; token ids index a dense
/// table, and this one would ask for ~4 G entries) is set aside with the
/// reason, and the follower takes a snapshot: it neither aborts on the
/// allocation nor serves the file.
#[tokio::test]
async fn a_state_file_with_a_token_beyond_its_id_counter_is_refused() {
    let _one = SERIAL.lock().await;
    let log = log_capture("info");
    let (pdir, fdir) = (temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let file = one_token_state(2, u64::from(u32::MAX) - 1);
    std::fs::write(state_file(fdir.path()), file).unwrap();
    let before = snapshots(&p).await;
    let mark = log.mark();
    let f = follower(&p, pdir.path(), fdir.path()).await;
    let after = snapshots(&p).await;
    assert_eq!(after.0 - before.0, 1.0, "a snapshot");
    let warned = log.lines_since(mark, "follower state file is not usable");
    assert!(
        warned
            .iter()
            .any(|l| l.contains("not below the id counter")),
        "{warned:?}"
    );
    f.stop().await.unwrap();
    p.stop().await.unwrap();
}

/// A state file whose id counter is as far ahead as the store's checks
/// allow (one below 2^32), with a token just under it: it is consistent,
/// so it is loaded, and the token costs the follower one page of the
/// table, not an entry for every id below it (before: the table grew to
/// four billion entries and the process aborted, "memory allocation
/// failed").
#[tokio::test]
async fn a_state_file_with_its_id_counter_far_ahead_costs_no_memory_for_the_gap() {
    let _one = SERIAL.lock().await;
    let (pdir, fdir) = (temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let far = u64::from(u32::MAX) - 1;
    std::fs::write(state_file(fdir.path()), one_token_state(far + 1, far)).unwrap();
    let before = snapshots(&p).await;
    let f = follower(&p, pdir.path(), fdir.path()).await;
    // Another primary's epoch: the follower serves the primary's snapshot.
    let after = snapshots(&p).await;
    assert_eq!(after.0 - before.0, 1.0, "a snapshot");
    f.stop().await.unwrap();
    p.stop().await.unwrap();
}

/// A primary that restarted has a new epoch (sled: one per process), so
/// the follower's state cannot be resumed from: it takes a snapshot, and
/// answers with what the new primary holds. (On PostgreSQL the epoch is
/// the database's and outlives the process: the follower resumes.)
#[tokio::test]
async fn after_a_primary_restart_the_follower_takes_a_snapshot() {
    let _one = SERIAL.lock().await;
    let (pdir, fdir) = (temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let t = p
        .create(&admin, acct, "t", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    let f = follower(&p, pdir.path(), fdir.path()).await;
    converge(&f, &t.secret, VIEWER, ALLOW).await;
    let epoch = f.engine.follower().unwrap().epoch.load(Ordering::Acquire);
    f.stop().await.unwrap();
    let clock = p.clock.clone();
    p.stop().await.unwrap();

    let p = TestServer::start_with(options(pdir.path(), clock.clone()), clock)
        .await
        .unwrap();
    p.delete(&admin, acct, t.token.as_ref().unwrap().id)
        .await
        .unwrap();
    let before = snapshots(&p).await;
    let f = follower(&p, pdir.path(), fdir.path()).await;
    answers(
        &f,
        &t.secret,
        PROJECT,
        "p1",
        VIEWER,
        (false, DenyReason::UnknownToken),
    )
    .await;
    let after = snapshots(&p).await;
    let now = f.engine.follower().unwrap().epoch.load(Ordering::Acquire);
    if test_postgres(pdir.path()).is_some() {
        assert_eq!(now, epoch, "the database's epoch");
        assert_eq!(after, before, "resumed on the restarted node");
    } else {
        assert_ne!(now, epoch, "a new primary process, a new epoch");
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (1.0, 1.0),
            "a snapshot served and applied"
        );
    }
    f.stop().await.unwrap();
    p.stop().await.unwrap();
}

/// A TCP proxy whose target can be taken away (connections refused) and
/// given back.
struct Switch {
    addr: std::net::SocketAddr,
    to: std::sync::Arc<parking_lot::Mutex<Option<std::net::SocketAddr>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl Switch {
    async fn start(to: Option<std::net::SocketAddr>) -> Switch {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let target = std::sync::Arc::new(parking_lot::Mutex::new(to));
        let t = target.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                let Some(to) = *t.lock() else {
                    continue; // dropped: the primary is "down"
                };
                tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Switch {
            addr,
            to: target,
            _accept: accept,
        }
    }
}

/// A follower with a valid state file whose primary does not answer at
/// start stays NOT_SERVING (its state's age is unknown: fail closed) and
/// refuses Authorize with UNAVAILABLE, however often it retries; once the
/// primary answers it resumes and serves, without a snapshot.
#[tokio::test]
async fn with_no_primary_at_start_the_state_is_not_served() {
    let _one = SERIAL.lock().await;
    let (pdir, fdir) = (temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let t = p
        .create(&admin, acct, "t", vec![grant(PROJECT, "p1", VIEWER)])
        .await
        .unwrap();
    let switch = Switch::start(Some(p.grpc)).await;
    let opts = |dir: &Path| {
        follower_options(
            dir,
            p.clock.clone(),
            switch.addr,
            &pdir.path().join("digest.key"),
            true, // even told to serve stale answers
        )
    };
    let f = TestServer::start_with(opts(fdir.path()), p.clock.clone())
        .await
        .unwrap();
    converge(&f, &t.secret, VIEWER, ALLOW).await;
    f.stop().await.unwrap();

    *switch.to.lock() = None;
    let before = snapshots(&p).await;
    let m = http(p.http, "GET", "/metrics", None, None).await;
    let lost = metric(
        &String::from_utf8_lossy(&m.body),
        "keyward_follower_disconnects_total",
    );
    let mut s = spawn(opts(fdir.path())).await;
    // Until it has tried, and failed, twice.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let m = http(p.http, "GET", "/metrics", None, None).await;
        let now = metric(
            &String::from_utf8_lossy(&m.body),
            "keyward_follower_disconnects_total",
        );
        if now >= lost + 2.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no connection attempt"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(s.ready.try_recv().is_err(), "not ready without the primary");
    let r = http(s.http, "GET", "/readyz", None, None).await;
    assert_eq!(r.status, 503, "/readyz");
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let r = pb::authorizer_client::AuthorizerClient::new(ch)
        .authorize(pb::AuthorizeRequest {
            token: t.secret.clone(),
            resource: Some(rref(PROJECT, "p1")),
            level: VIEWER,
            ..Default::default()
        })
        .await;
    assert_code(r, tonic::Code::Unavailable);

    // The primary is back: the follower resumes, no snapshot.
    *switch.to.lock() = Some(p.grpc);
    tokio::time::timeout(std::time::Duration::from_secs(20), &mut s.ready)
        .await
        .expect("ready once the primary answers")
        .expect("ready");
    let after = snapshots(&p).await;
    assert_eq!(after, before, "resumed, no snapshot");
    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();
    p.stop().await.unwrap();
}

/// While it runs, the follower rewrites its state file when the revision
/// moved (every `--follower-state-interval`, here 100 ms): a follower
/// killed without a clean stop still leaves a recent state.
#[tokio::test]
async fn the_state_file_follows_the_revision_while_running() {
    let _one = SERIAL.lock().await;
    let (pdir, fdir) = (temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let mut opts = follower_options(
        fdir.path(),
        p.clock.clone(),
        p.grpc,
        &pdir.path().join("digest.key"),
        false,
    );
    if let Some(f) = opts.follow.as_mut() {
        f.state_interval = std::time::Duration::from_millis(100);
    }
    let f = TestServer::start_with(opts, p.clock.clone()).await.unwrap();
    for i in 0..3 {
        let t = p
            .create(
                &admin,
                acct,
                &format!("t{i}"),
                vec![grant(PROJECT, "p1", VIEWER)],
            )
            .await
            .unwrap();
        converge(&f, &t.secret, VIEWER, ALLOW).await;
        let want = f
            .engine
            .follower()
            .unwrap()
            .revision
            .load(Ordering::Acquire);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let on_disk = std::fs::read(state_file(fdir.path()))
                .ok()
                .and_then(|b| keyward::store::archive::verify(b.as_slice()).ok())
                .and_then(|(h, _)| h.position);
            if on_disk.is_some_and(|pos| pos.revision == want) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the file stays at {on_disk:?}, the follower is at {want}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    f.stop().await.unwrap();
    p.stop().await.unwrap();
}

/// `--follower-state-interval 0`: no state file is written, and one left
/// in the data dir is not read (a snapshot).
#[tokio::test]
async fn interval_zero_keeps_no_state() {
    let _one = SERIAL.lock().await;
    let (pdir, fdir) = (temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let opts = |interval: u64| {
        let mut o = follower_options(
            fdir.path(),
            p.clock.clone(),
            p.grpc,
            &pdir.path().join("digest.key"),
            false,
        );
        if let Some(f) = o.follow.as_mut() {
            f.state_interval = std::time::Duration::from_secs(interval);
        }
        o
    };
    let f = TestServer::start_with(opts(0), p.clock.clone())
        .await
        .unwrap();
    f.stop().await.unwrap();
    assert!(!state_file(fdir.path()).exists(), "nothing written");
    let f = TestServer::start_with(opts(10), p.clock.clone())
        .await
        .unwrap();
    f.stop().await.unwrap();
    assert!(state_file(fdir.path()).exists(), "written with an interval");
    let before = snapshots(&p).await;
    let f = TestServer::start_with(opts(0), p.clock.clone())
        .await
        .unwrap();
    let after = snapshots(&p).await;
    assert_eq!(after.0 - before.0, 1.0, "the file left there is not read");
    f.stop().await.unwrap();
    p.stop().await.unwrap();
}

/// A primary played by the test: its one `Watch` stream sends what the
/// test pushes, when it pushes it.
struct Scripted {
    events: parking_lot::Mutex<
        Option<
            tokio::sync::mpsc::Receiver<
                Result<keyward::pb::replication::WatchEvent, tonic::Status>,
            >,
        >,
    >,
    /// The (epoch, revision) the follower asked to watch from.
    asked: tokio::sync::mpsc::UnboundedSender<(u64, u64)>,
}

#[tonic::async_trait]
impl keyward::pb::replication::replication_server::Replication for Scripted {
    type WatchStream = tokio_stream::wrappers::ReceiverStream<
        Result<keyward::pb::replication::WatchEvent, tonic::Status>,
    >;

    async fn watch(
        &self,
        req: tonic::Request<keyward::pb::replication::WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        let want = req.into_inner();
        let _ = self.asked.send((want.epoch, want.revision));
        let rx = self
            .events
            .lock()
            .take()
            .ok_or_else(|| tonic::Status::unavailable("one stream only"))?;
        Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
    }

    async fn report_use(
        &self,
        _: tonic::Request<keyward::pb::replication::UseReport>,
    ) -> Result<tonic::Response<keyward::pb::replication::UseReportAck>, tonic::Status> {
        Err(tonic::Status::unimplemented("scripted"))
    }

    async fn lease(
        &self,
        _: tonic::Request<keyward::pb::replication::LeaseRequest>,
    ) -> Result<tonic::Response<keyward::pb::replication::LeaseResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("scripted"))
    }
}

/// Resumed from its state file, a follower serves only once the commits
/// it missed are in: the primary sends `Resume`, then a commit deleting a
/// token, and holds the heartbeat that follows them; the follower applies
/// the commit but is not ready until the heartbeat says nothing more is
/// missed, and then never answers from the state before the delete.
#[tokio::test]
async fn a_resumed_follower_serves_only_once_the_missed_commits_are_in() {
    use keyward::clock::Clock;
    use keyward::pb::replication::{watch_event::Kind, WatchEvent};
    let _one = SERIAL.lock().await;
    let (pdir, fdir) = (temp(), temp());
    let p = TestServer::start(pdir.path()).await;
    let (acct, admin) = p.account("Acme").await;
    p.register(&admin, acct, PROJECT, "p1", None).await;
    let viewer = vec![grant(PROJECT, "p1", VIEWER)];
    let kept = p
        .create(&admin, acct, "kept", viewer.clone())
        .await
        .unwrap();
    let gone = p.create(&admin, acct, "gone", viewer).await.unwrap();
    let f = follower(&p, pdir.path(), fdir.path()).await;
    converge(&f, &gone.secret, VIEWER, ALLOW).await;
    let fs = f.engine.follower().unwrap();
    let (epoch, revision) = (
        fs.epoch.load(Ordering::Acquire),
        fs.revision.load(Ordering::Acquire),
    );
    f.stop().await.unwrap();
    let clock = p.clock.clone();
    p.stop().await.unwrap();

    // The scripted primary, in the real one's epoch.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let (asked_tx, mut asked) = tokio::sync::mpsc::unbounded_channel();
    let scripted = Scripted {
        events: parking_lot::Mutex::new(Some(rx)),
        asked: asked_tx,
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                keyward::pb::replication::replication_server::ReplicationServer::new(scripted),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    let event = |kind: Kind, revision: u64, changes| WatchEvent {
        kind: kind as i32,
        epoch,
        revision,
        changes,
        sent_at_ms: clock.now_ms(),
        digest_key_id: Vec::new(),
    };
    let opts = follower_options(
        fdir.path(),
        clock.clone(),
        addr,
        &pdir.path().join("digest.key"),
        false,
    );
    let mut s = spawn(opts).await;
    assert_eq!(
        asked.recv().await,
        Some((epoch, revision)),
        "asked to resume from the state on disk"
    );
    let commits = || async {
        let m = http(s.http, "GET", "/metrics", None, None).await;
        metric(
            &String::from_utf8_lossy(&m.body),
            "keyward_follower_commits_total",
        )
    };
    let applied = commits().await;
    let delete = keyward::index::change::to_wire(&keyward::index::Change::DeleteToken(
        gone.token.as_ref().unwrap().id,
    ));
    tx.send(Ok(event(Kind::Resume, revision, vec![])))
        .await
        .unwrap();
    tx.send(Ok(event(Kind::Commit, revision + 1, vec![delete])))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while commits().await < applied + 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the commit is not applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        s.ready.try_recv().is_err(),
        "ready before the primary said nothing more is missed"
    );
    assert_eq!(http(s.http, "GET", "/readyz", None, None).await.status, 503);

    tx.send(Ok(event(Kind::Heartbeat, revision + 1, vec![])))
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(20), &mut s.ready)
        .await
        .expect("ready after the heartbeat")
        .expect("ready");
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut authz = pb::authorizer_client::AuthorizerClient::new(ch);
    for (t, want) in [(&kept, ALLOW), (&gone, (false, DenyReason::UnknownToken))] {
        let d = authz
            .authorize(pb::AuthorizeRequest {
                token: t.secret.clone(),
                resource: Some(rref(PROJECT, "p1")),
                level: VIEWER,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((d.allowed, d.reason), (want.0, want.1 as i32), "{d:?}");
    }
    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();
}
