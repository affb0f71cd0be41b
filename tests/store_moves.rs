//! Store moves (`keyward store copy|backup|restore`), through the library
//! API the subcommands call (`keyward::storemove`) and over gRPC
//! (`keyward.v1.Admin/Backup`): a seeded store goes sled -> PostgreSQL ->
//! sled with every record equal and serves every token without argon2; a
//! destination that holds a store is refused, a source a server holds is
//! refused, an interrupted copy leaves its destination unusable until
//! `force`; a backup taken during a write load restores to a state that
//! was real at one instant; damaged backup files are refused naming the
//! record; only the root token may take a backup.
//!
//! PostgreSQL tests use the server of KEYWARD_TEST_PG, or one of their own
//! (tests/common/pg.rs); without PostgreSQL binaries they say so and skip.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::pg::{self, PgCluster};
use common::*;
use keyward::clock::ManualClock;
use keyward::pb::v1 as pb;
use keyward::store::records::{Export, Import, Record, RecordKind, Tally};
use keyward::store::{SledStore, StoreError};
use keyward::storemove::{
    self, BackupOptions, BackupSource, CopyOptions, Location, MoveError, RestoreOptions,
};
use tonic::Code;

/// Every record of the sled store in `dir`, in key order.
async fn records_of(dir: &Path) -> Vec<Record> {
    let store = SledStore::open_source(dir).expect("open source");
    let mut export = store.export().expect("export");
    let mut out = Vec::new();
    loop {
        let chunk = export.next_chunk().await.expect("chunk");
        if chunk.is_empty() {
            return out;
        }
        out.extend(chunk);
    }
}

fn tally(records: &[Record]) -> Tally {
    let mut t = Tally::default();
    for r in records {
        t.add(r);
    }
    t
}

fn count(t: &Tally, kind: RecordKind) -> u64 {
    t.counts[kind as usize]
}

/// A sled server on `dir` (never PostgreSQL, whatever KEYWARD_TEST_PG says).
async fn sled_server(dir: &Path) -> TestServer {
    let clock = Arc::new(ManualClock::new());
    let mut opts = options(dir, clock.clone());
    opts.postgres = None;
    TestServer::start_with(opts, clock)
        .await
        .expect("server starts")
}

fn copy_opts(from: Location, to: Location) -> CopyOptions {
    CopyOptions {
        from,
        to,
        digest_key_file: None,
        force: false,
        pg_ca_file: None,
    }
}

/// A PostgreSQL server: KEYWARD_TEST_PG's, or one of our own; None (and
/// a note) without PostgreSQL binaries.
async fn postgres() -> Option<(Option<PgCluster>, String)> {
    if let Some(base) = pg::shared_base_url() {
        return Some((None, base));
    }
    if pg::find_bin_dir().is_none() {
        eprintln!("SKIPPED: no PostgreSQL (set KEYWARD_TEST_PG or install the server)");
        return None;
    }
    let c = tokio::task::spawn_blocking(PgCluster::start)
        .await
        .expect("start PostgreSQL");
    let base = c.base_url();
    Some((Some(c), base))
}

/// Seeds `dir` with `n` tokens (digests stored), then, through a server,
/// adds a token made by an admin call (an audit event, a digest made at
/// create) and pauses a seeded one: every kind of record is present.
/// Returns the seed and the new token's secret.
async fn seeded_store(dir: &Path, n: usize) -> (keyward::seed::Seeded, String) {
    let seeded = keyward::seed::seed(dir, n, true).await.expect("seed");
    let server = sled_server(dir).await;
    let caller = seeded.tokens[0].expose().to_string();
    let made = server
        .create(
            &caller,
            seeded.account_id,
            "made by a call",
            vec![grant(pb::ResourceType::Project, &seeded.project, VIEWER)],
        )
        .await
        .expect("create token");
    let paused = seeded.tokens[1].expose();
    let id = keyward::token::parse(paused).expect("parse").id;
    server
        .tokens()
        .pause_token(auth(
            pb::PauseTokenRequest {
                account_id: seeded.account_id,
                token_id: id,
            },
            &caller,
        ))
        .await
        .expect("pause");
    server.stop().await.expect("stop");
    (seeded, made.secret)
}

/// sled -> PostgreSQL -> sled: every record arrives equal (tokens with
/// their hashes and verified digests, counters, audit events), the digest
/// key follows, and a node serving either copy authorizes every sampled
/// token as before with no argon2 verify at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_to_postgres_to_sled_round_trip() {
    let Some((cluster, base)) = postgres().await else {
        return;
    };
    let a = temp();
    let (seeded, made) = seeded_store(a.path(), 20_000).await;
    let before = records_of(a.path()).await;
    let t = tally(&before);
    assert_eq!(count(&t, RecordKind::Token), 20_001);
    assert!(count(&t, RecordKind::Audit) >= 2, "{}", t.describe());

    let db = db_name(a.path());
    create_database(&base, &db).await;
    let url = pg::url_at(&base, &db);
    let mut progress = Vec::new();
    let to_pg = storemove::copy(
        &copy_opts(
            Location::Sled(a.path().to_path_buf()),
            Location::parse(&url),
        ),
        &mut progress,
    )
    .await
    .expect("sled -> PostgreSQL");
    assert_eq!(to_pg.tally, t, "{}", to_pg.tally.describe());
    assert!(
        to_pg.key_advice.contains("--digest-key-file"),
        "{}",
        to_pg.key_advice
    );
    let text = String::from_utf8_lossy(&progress);
    assert!(text.contains(&format!("/ {} records", t.total())), "{text}");
    assert!(!text.contains(&url), "the URL may hold a password: {text}");

    // Copying into it again is refused, naming what is there.
    let again = storemove::copy(
        &copy_opts(
            Location::Sled(a.path().to_path_buf()),
            Location::parse(&url),
        ),
        &mut std::io::sink(),
    )
    .await
    .expect_err("a database that holds a store");
    assert!(
        again.to_string().contains("already holds a keyward store")
            && again.to_string().contains("20001 tokens"),
        "{again}"
    );

    let b = temp();
    let b_dir = b.path().join("data");
    let mut back = copy_opts(Location::parse(&url), Location::Sled(b_dir.clone()));
    back.digest_key_file = Some(a.path().join("digest.key"));
    let to_sled = storemove::copy(&back, &mut std::io::sink())
        .await
        .expect("PostgreSQL -> sled");
    assert_eq!(to_sled.tally, t);
    assert_eq!(
        std::fs::read(b_dir.join("digest.key")).expect("key copied"),
        std::fs::read(a.path().join("digest.key")).expect("key")
    );
    let after = records_of(&b_dir).await;
    assert_eq!(before.len(), after.len());
    assert!(before == after, "a record differs after the round trip");

    // Served from the sled copy: every sampled token, and the one made by
    // a call, authorize as before, with no argon2 at first use.
    let sample: Vec<String> = seeded
        .tokens
        .iter()
        .step_by(97)
        .filter(|s| s.expose() != seeded.tokens[1].expose())
        .map(|s| s.expose().to_string())
        .chain([made.clone()])
        .collect();
    let server = sled_server(&b_dir).await;
    for token in &sample {
        let r = server
            .check(token, pb::ResourceType::Project, &seeded.project, VIEWER)
            .await;
        assert!(r.allowed, "{r:?}");
    }
    let paused = server
        .check(
            seeded.tokens[1].expose(),
            pb::ResourceType::Project,
            &seeded.project,
            VIEWER,
        )
        .await;
    assert!(!paused.allowed, "the pause moved too");
    assert_eq!(server.engine.work().verifies, 0, "argon2 at first use");
    server.stop().await.expect("stop");

    // Served from PostgreSQL with the source's key: the same.
    let c = temp();
    let clock = Arc::new(ManualClock::new());
    let mut opts = options(c.path(), clock.clone());
    opts.digest_key_file = a.path().join("digest.key");
    opts.postgres = Some(postgres_at(&base, &db));
    let node = TestServer::start_with(opts, clock).await.expect("PG node");
    assert!(node.root.is_none(), "no new root token on a copied store");
    for token in &sample {
        let r = node
            .check(token, pb::ResourceType::Project, &seeded.project, VIEWER)
            .await;
        assert!(r.allowed, "{r:?}");
    }
    assert_eq!(node.engine.work().verifies, 0, "argon2 at first use");
    // And it writes on from the copied counters.
    let next = node
        .create(
            seeded.tokens[0].expose(),
            seeded.account_id,
            "after the move",
            vec![grant(pb::ResourceType::Project, &seeded.project, VIEWER)],
        )
        .await
        .expect("create on the copy");
    let max = before
        .iter()
        .filter_map(|r| match r {
            Record::Token(t) => Some(t.id),
            _ => None,
        })
        .max()
        .expect("tokens");
    assert_eq!(next.token.expect("token").id, max + 1);
    node.stop().await.expect("stop");

    // A backup read straight from the database (one REPEATABLE READ
    // snapshot) restores into another, empty database, verified.
    let file = c.path().join("pg.backup");
    let taken = storemove::backup(
        &BackupOptions {
            from: BackupSource::Store(Location::parse(&url)),
            to: file.clone(),
            digest_key_file: Some(a.path().join("digest.key")),
            pg_ca_file: None,
        },
        &mut std::io::sink(),
    )
    .await
    .expect("backup of PostgreSQL");
    let db2 = format!("{db}_restored");
    create_database(&base, &db2).await;
    let restored = storemove::restore(
        &RestoreOptions {
            from: file,
            to: Location::parse(&pg::url_at(&base, &db2)),
            digest_key_file: Some(a.path().join("digest.key")),
            force: false,
            pg_ca_file: None,
        },
        &mut std::io::sink(),
    )
    .await
    .expect("restore into PostgreSQL");
    assert_eq!(restored.tally, taken.tally);
    assert_eq!(
        count(&restored.tally, RecordKind::Token),
        count(&t, RecordKind::Token) + 1
    );

    // A PostgreSQL node backs up through Admin/Backup too (its snapshot,
    // no lock): a fresh database, its root token, one account.
    let d = temp();
    let clock = Arc::new(ManualClock::new());
    let mut opts = options(d.path(), clock.clone());
    opts.postgres = Some(postgres_at(&base, &format!("{db}_rpc")));
    let node = TestServer::start_with(opts, clock).await.expect("PG node");
    node.account("acme").await;
    let file = d.path().join("rpc.backup");
    let over_grpc = storemove::backup(
        &BackupOptions {
            from: BackupSource::Server {
                channel: node.channel.clone(),
                token: node.root(),
            },
            to: file.clone(),
            digest_key_file: None,
            pg_ca_file: None,
        },
        &mut std::io::sink(),
    )
    .await
    .expect("backup of a PostgreSQL node");
    assert_eq!(count(&over_grpc.tally, RecordKind::Account), 1);
    assert_eq!(count(&over_grpc.tally, RecordKind::Token), 2);
    let (header, _) = keyward::store::archive::verify(std::fs::File::open(&file).expect("open"))
        .expect("verifies");
    assert_eq!(header.source, "postgres");
    node.stop().await.expect("stop");
    drop(cluster);
}

/// A destination that holds a store is refused, naming what it holds, and
/// left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_holds_a_store_is_refused() {
    let (a, b) = (temp(), temp());
    keyward::seed::seed(a.path(), 50, true).await.expect("seed");
    keyward::seed::seed(b.path(), 30, true).await.expect("seed");
    let held = records_of(b.path()).await;
    let e = storemove::copy(
        &copy_opts(
            Location::Sled(a.path().to_path_buf()),
            Location::Sled(b.path().to_path_buf()),
        ),
        &mut std::io::sink(),
    )
    .await
    .expect_err("not empty");
    assert!(
        matches!(e, MoveError::Store(StoreError::NotEmpty(_))),
        "{e}"
    );
    assert!(
        e.to_string().contains("already holds a keyward store")
            && e.to_string().contains("30 tokens"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 73);
    assert!(
        records_of(b.path()).await == held,
        "the destination changed"
    );
}

/// A data dir a running keyward holds cannot be the source (sled allows
/// one process): the error says so and points to backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_in_use_is_refused() {
    let (a, c) = (temp(), temp());
    let server = sled_server(a.path()).await;
    let dest = c.path().join("copy");
    let e = storemove::copy(
        &copy_opts(
            Location::Sled(a.path().to_path_buf()),
            Location::Sled(dest.clone()),
        ),
        &mut std::io::sink(),
    )
    .await
    .expect_err("in use");
    assert!(
        e.to_string().contains("in use by another process")
            && e.to_string().contains("keyward store backup"),
        "{e}"
    );
    assert!(!dest.exists(), "nothing written");
    server.stop().await.expect("stop");
}

/// An import stopped half way leaves its data dir flagged: keyward
/// refuses to start on it, a copy refuses to reuse it, and a copy with
/// `force` starts over and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_leaves_the_destination_unusable() {
    let (a, c) = (temp(), temp());
    keyward::seed::seed(a.path(), 5_000, true)
        .await
        .expect("seed");
    let records = records_of(a.path()).await;
    let dest = c.path().join("copy");
    {
        let mut import = SledStore::begin_import(&dest, false).expect("import");
        import
            .put(records[..2048].to_vec())
            .await
            .expect("half a copy");
        // Dropped without finish: the process died here.
    }
    // (sled lets go of a dropped handle's lock a moment later: retry.)
    let e = retry_locked(|| async { SledStore::open(&dest).err().expect("refused") }).await;
    assert!(matches!(e, StoreError::Incomplete(_)), "{e}");
    let refused = retry_locked(|| async {
        let clock = Arc::new(ManualClock::new());
        let mut opts = options(&dest, clock.clone());
        opts.postgres = None;
        TestServer::start_with(opts, clock)
            .await
            .err()
            .expect("no start")
    })
    .await;
    assert!(refused.to_string().contains("did not finish"), "{refused}");

    let mut o = copy_opts(
        Location::Sled(a.path().to_path_buf()),
        Location::Sled(dest.clone()),
    );
    let e = storemove::copy(&o, &mut std::io::sink())
        .await
        .expect_err("unfinished copy");
    assert!(e.to_string().contains("--force"), "{e}");
    o.force = true;
    storemove::copy(&o, &mut std::io::sink())
        .await
        .expect("forced copy");
    assert!(records_of(&dest).await == records, "the copy is whole");
}

/// `attempt`'s error, retried for up to 5 s while it is sled's lock of a
/// handle this process just dropped.
async fn retry_locked<E: std::fmt::Display, F: std::future::Future<Output = E>>(
    attempt: impl Fn() -> F,
) -> E {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let e = attempt().await;
        if !e.to_string().contains("acquire lock") || std::time::Instant::now() > deadline {
            return e;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Backup of a running node over gRPC while two writers create tokens
/// (each CreateToken commits the token and the id counter together) in a
/// store of 20,000: the restored store holds tokens 1..n with no gap and
/// a counter of n + 1 (no write half in: reading the counter first and
/// the tokens later would see tokens beyond it), a state that was real at
/// one instant; it serves, the seeded tokens authorize without argon2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_during_writes_restores_one_instant() {
    let (a, out) = (temp(), temp());
    let seeded = keyward::seed::seed(a.path(), 20_000, true)
        .await
        .expect("seed");
    let root = add_root(a.path(), 20_001).await;
    let server = Arc::new(sled_server(a.path()).await);
    let caller = seeded.tokens[0].expose().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (server, stop, caller) = (server.clone(), stop.clone(), caller.clone());
        let (account, project) = (seeded.account_id, seeded.project.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                server
                    .create(
                        &caller,
                        account,
                        &format!("w{w}-{n}"),
                        vec![grant(pb::ResourceType::Project, &project, VIEWER)],
                    )
                    .await
                    .expect("create");
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let file = out.path().join("keyward.backup");
    let backup = |token: String| BackupOptions {
        from: BackupSource::Server {
            channel: server.channel.clone(),
            token,
        },
        to: file.clone(),
        digest_key_file: None,
        pg_ca_file: None,
    };
    // An account admin's is refused, and leaves no file.
    let refused = storemove::backup(&backup(caller.clone()), &mut std::io::sink())
        .await
        .expect_err("not root");
    assert!(
        matches!(&refused, MoveError::Rpc(s) if s.code() == Code::PermissionDenied),
        "{refused}"
    );
    assert!(!file.exists() && !out.path().join("keyward.backup.partial").exists());
    let report = storemove::backup(&backup(root.clone()), &mut std::io::sink())
        .await
        .expect("backup");
    let bytes = std::fs::read(&file).expect("read the backup");
    for secret in [
        root.as_str(),
        seeded.tokens[0].expose(),
        seeded.tokens[19_999].expose(),
    ] {
        let part = &secret[secret.len() - 49..secret.len() - 6];
        assert!(
            !bytes.windows(part.len()).any(|w| w == part.as_bytes()),
            "a secret in the backup file"
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.expect("writer");
    }
    assert!(written > 0);

    let dest = out.path().join("restored");
    let mut restore = RestoreOptions {
        from: file.clone(),
        to: Location::Sled(dest.clone()),
        digest_key_file: Some(a.path().join("digest.key")),
        force: false,
        pg_ca_file: None,
    };
    let restored = storemove::restore(&restore, &mut std::io::sink())
        .await
        .expect("restore");
    assert_eq!(restored.tally, report.tally);

    let records = records_of(&dest).await;
    let ids: Vec<u64> = records
        .iter()
        .filter_map(|r| match r {
            Record::Token(t) => Some(t.id),
            _ => None,
        })
        .collect();
    let Some(Record::Counters { next_token_id, .. }) = records.first().cloned() else {
        panic!("counters first")
    };
    let n = ids.len() as u64;
    assert_eq!(ids, (1..=n).collect::<Vec<_>>(), "tokens 1..n, no gap");
    assert_eq!(
        next_token_id,
        n + 1,
        "the counter and the tokens of one instant"
    );
    let made = n - 20_001;
    assert!(made > 0 && made <= written, "{made} of {written} writes");
    let server = Arc::try_unwrap(server).ok().expect("one owner");
    server.stop().await.expect("stop");

    // The restored store serves; the seeded tokens need no argon2.
    let node = sled_server(&dest).await;
    for t in seeded.tokens.iter().step_by(1000) {
        let r = node
            .check(
                t.expose(),
                pb::ResourceType::Project,
                &seeded.project,
                VIEWER,
            )
            .await;
        assert!(r.allowed, "{r:?}");
    }
    assert_eq!(node.engine.work().verifies, 0);
    node.stop().await.expect("stop");

    // Restoring into it again is refused.
    restore.to = Location::Sled(dest);
    let e = storemove::restore(&restore, &mut std::io::sink())
        .await
        .expect_err("not empty");
    assert!(e.to_string().contains("already holds"), "{e}");
}

/// Writes a root token with id `id` into the (stopped) seeded store in
/// `dir`, as a first start would have: a seeded store has none. Returns
/// its secret.
async fn add_root(dir: &Path, id: u64) -> String {
    use keyward::index::Change;
    use keyward::token;
    let key =
        keyward::token::DigestKey::load_or_create(&dir.join("digest.key"), false).expect("key");
    let part = token::new_secret_part();
    let full = token::assemble(id, &part);
    let record = keyward::pb::store::TokenRecord {
        id,
        name: "root".into(),
        phc_hash: token::hash_secret(&part).expect("hash"),
        last_4_digits: token::last_4(&full),
        created_by: "keyward".into(),
        root: true,
        verified_digest: key.digest(full.expose()).to_vec(),
        digest_key_id: key.id().to_vec(),
        ..Default::default()
    };
    let store = SledStore::open(dir).expect("open");
    let accounts = records_of_open(&store);
    store
        .commit_batch(&[
            Change::Counters {
                next_account_id: accounts,
                next_token_id: id + 1,
            },
            Change::PutToken(record),
        ])
        .await
        .expect("commit");
    full.expose().to_string()
}

/// The next account id of an open store.
fn records_of_open(store: &SledStore) -> u64 {
    let mut next = 0;
    store
        .load_into(&mut |c| {
            if let keyward::index::Change::Counters {
                next_account_id, ..
            } = c
            {
                next = next_account_id;
            }
        })
        .expect("load");
    next
}

/// Offsets of the records of a backup file: (tag, offset of the tag,
/// offset of the bytes, length).
fn layout(f: &[u8]) -> Vec<(u8, usize, usize, usize)> {
    let header_len = u32::from_be_bytes(f[12..16].try_into().unwrap()) as usize;
    let mut at = 16 + header_len;
    let mut out = Vec::new();
    while f[at] != 0 {
        let len = u32::from_be_bytes(f[at + 1..at + 5].try_into().unwrap()) as usize;
        out.push((f[at], at, at + 5, len));
        at += 5 + len;
    }
    out
}

/// With a checksum that matches the damaged bytes (a file rewritten on
/// purpose, or by a bug), so that only the record check can refuse it.
fn reseal(f: &mut [u8]) {
    let n = f.len() - 32;
    let sum = blake3::hash(&f[..n]);
    f[n..].copy_from_slice(sum.as_bytes());
}

/// Damaged backup files are refused before anything is written, each
/// naming what is wrong: truncated, a changed byte (checksum), a record
/// that does not decode (its number, kind and offset), an unknown version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_backup_files_are_refused_naming_the_record() {
    let (a, out) = (temp(), temp());
    keyward::seed::seed(a.path(), 100, true)
        .await
        .expect("seed");
    let file = out.path().join("good.backup");
    storemove::backup(
        &BackupOptions {
            from: BackupSource::Store(Location::Sled(a.path().to_path_buf())),
            to: file.clone(),
            digest_key_file: Some(a.path().join("digest.key")),
            pg_ca_file: None,
        },
        &mut std::io::sink(),
    )
    .await
    .expect("offline backup");
    let good = std::fs::read(&file).expect("read");
    let records = layout(&good);
    let (tag, token_at, bytes_at, _) = records[10];
    assert_eq!(tag, RecordKind::Token.tag());

    let mut cases: Vec<(&str, Vec<u8>, String)> = Vec::new();
    cases.push((
        "truncated",
        good[..good.len() / 2].to_vec(),
        "truncated".into(),
    ));
    cases.push((
        "trailer cut",
        good[..good.len() - 5].to_vec(),
        "truncated".into(),
    ));
    let mut flipped = good.clone();
    flipped[bytes_at + 3] ^= 0x01;
    cases.push(("a changed byte", flipped, "checksum mismatch".into()));
    let mut garbage = good.clone();
    garbage[bytes_at] = 0x07; // field 0, wire type 7: no protobuf
    reseal(&mut garbage);
    cases.push((
        "a record that does not decode",
        garbage,
        format!("record #11 (token) at offset {token_at} does not decode"),
    ));
    let mut version = good.clone();
    version[8..12].copy_from_slice(&9u32.to_be_bytes());
    cases.push(("unknown version", version, "format version 9".into()));
    let mut extra = good.clone();
    extra.push(0);
    cases.push((
        "bytes after the end",
        extra,
        "bytes after the checksum".into(),
    ));

    for (what, bytes, expected) in cases {
        let path = out.path().join("damaged.backup");
        std::fs::write(&path, bytes).expect("write");
        let dest = out.path().join("never");
        let e = storemove::restore(
            &RestoreOptions {
                from: path,
                to: Location::Sled(dest.clone()),
                digest_key_file: None,
                force: false,
                pg_ca_file: None,
            },
            &mut std::io::sink(),
        )
        .await
        .expect_err(what);
        assert!(e.to_string().contains(&expected), "{what}: {e}");
        assert_eq!(e.exit_code(), 65, "{what}");
        assert!(!dest.exists(), "{what}: the destination was touched");
    }

    // The good file restores.
    let dest = out.path().join("restored");
    storemove::restore(
        &RestoreOptions {
            from: file,
            to: Location::Sled(dest.clone()),
            digest_key_file: None,
            force: false,
            pg_ca_file: None,
        },
        &mut std::io::sink(),
    )
    .await
    .expect("restore");
    assert!(records_of(&dest).await == records_of(a.path()).await);
}

/// Only the root token may take a backup: an account admin is refused
/// with PERMISSION_DENIED (audited in its account), no token with
/// UNAUTHENTICATED; nothing is streamed to either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_needs_the_root_token() {
    let a = temp();
    let server = sled_server(a.path()).await;
    let (account, admin) = server.account("acme").await;
    let mut client = pb::admin_client::AdminClient::new(server.channel.clone());
    let denied = client
        .backup(auth(pb::BackupRequest {}, &admin))
        .await
        .map(|_| ());
    let s = assert_code(denied, Code::PermissionDenied);
    assert!(s.message().contains("root"), "{s:?}");
    let anonymous = client
        .backup(tonic::Request::new(pb::BackupRequest {}))
        .await
        .map(|_| ());
    assert_code(anonymous, Code::Unauthenticated);

    let events = pb::audit_client::AuditClient::new(server.channel.clone())
        .list_audit_events(auth(
            pb::ListAuditEventsRequest {
                account_id: account,
                page_size: 100,
                page_token: String::new(),
            },
            &server.root(),
        ))
        .await
        .expect("audit")
        .into_inner()
        .events;
    assert!(
        events
            .iter()
            .any(|e| e.action == "Backup" && e.outcome == "PERMISSION_DENIED"),
        "{events:?}"
    );

    // Root's streams a file that verifies.
    let mut stream = client
        .backup(auth(pb::BackupRequest {}, &server.root()))
        .await
        .expect("root")
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(c) = stream.message().await.expect("chunk") {
        bytes.extend(c.data);
    }
    let (header, t) = keyward::store::archive::verify(bytes.as_slice()).expect("verifies");
    assert_eq!(header.source, "sled");
    assert_eq!(count(&t, RecordKind::Account), 1);
    server.stop().await.expect("stop");
}

#[derive(clap::Parser)]
struct Cli {
    #[command(subcommand)]
    store: keyward::storemove::cli::StoreCommand,
}

async fn cli(args: &[&str]) -> (i32, String, String) {
    use clap::Parser;
    let cmd = Cli::try_parse_from(["keyward-store"].iter().chain(args))
        .expect("flags parse")
        .store;
    let server = None;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = keyward::storemove::cli::run(&cmd, server, &mut out, &mut err).await;
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// The subcommand's flags and exit codes: a copy prints its summary and
/// the key's whereabouts on stdout (progress on stderr) and exits 0; the
/// same copy again exits 73 naming what the destination holds; a backup
/// with neither a server nor --from exits 64; a damaged file exits 65.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subcommand_flags_and_exit_codes() {
    let (a, b) = (temp(), temp());
    keyward::seed::seed(a.path(), 10, true).await.expect("seed");
    let (from, to) = (
        a.path().display().to_string(),
        b.path().join("copy").display().to_string(),
    );
    let (code, out, err) = cli(&["copy", "--from", &from, "--to", &to]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("records: 1 counters, 1 accounts, 2 resources, 10 tokens"),
        "{out}"
    );
    assert!(
        out.contains("digest key:") && out.contains("is in place"),
        "{out}"
    );
    assert!(err.contains("copy: 14 / 14 records (100%)"), "{err}");
    let (code, _, err) = cli(&["copy", "--from", &from, "--to", &to]).await;
    assert_eq!(code, 73, "{err}");
    assert!(err.contains("already holds a keyward store"), "{err}");
    let file = b.path().join("f.backup").display().to_string();
    let (code, _, err) = cli(&["backup", "--to", &file]).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--server"), "{err}");
    let (code, _, err) = cli(&["backup", "--to", &file, "--from", &to]).await;
    assert_eq!(code, 0, "{err}");
    let mut bytes = std::fs::read(&file).expect("read");
    bytes.truncate(bytes.len() - 1);
    std::fs::write(&file, bytes).expect("write");
    let restored = b.path().join("r").display().to_string();
    let (code, _, err) = cli(&["restore", "--from", &file, "--to", &restored]).await;
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("truncated"), "{err}");
}
