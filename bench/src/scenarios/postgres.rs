//! Scenario 12, `postgres`: the PostgreSQL store. Authorize throughput of a
//! node on PostgreSQL against a node on sled (same tokens, same load,
//! alternating), then revocation across two nodes of one database. Uses
//! the server `--pg` names, or a throwaway one started with
//! scripts/pg_cluster.sh ([`PgServer`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::pb::v1 as pb;
use tonic::transport::Channel;

use super::revocations::time_revocations;
use crate::bench::{request, Bench};
use crate::load::{clients, load, Mode, Run, Workload};
use crate::procs::{free_addr, metric, repo_root, start_keyward, start_keyward_pg, Layout, Proc};
use crate::report::verdict;

/// The PostgreSQL server of scenario 12: the one `--pg` names, or a
/// throwaway one started with scripts/pg_cluster.sh and stopped on drop.
pub(crate) struct PgServer {
    /// `postgres://user@host:port`, no database.
    base: String,
    /// The throwaway server's dir (its data in `pg/`), if it is ours.
    own: Option<tempfile::TempDir>,
    /// Which server, for the report (no password).
    described: String,
}

impl PgServer {
    fn script() -> PathBuf {
        repo_root().join("scripts/pg_cluster.sh")
    }

    /// `given`, or a new server on a free port (pinned with the keyward
    /// servers when the layout pins them).
    fn start(layout: &Layout, given: Option<&str>) -> Result<PgServer, String> {
        if let Some(base) = given {
            return Ok(PgServer {
                base: base.trim_end_matches('/').to_string(),
                own: None,
                described: format!(
                    "the server given with --pg ({}), placed as it is (not pinned by the harness)",
                    redact(base)
                ),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("kwbench-pg")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let port = free_addr().port();
        let mut server = PgServer {
            base: String::new(),
            own: Some(dir),
            described: format!(
                "a throwaway server started by the harness (scripts/pg_cluster.sh start, 127.0.0.1:{port}, fsync on; {})",
                match layout.server_core {
                    Some(c) => format!("pinned to core {c} with the keyward servers"),
                    None => "not pinned".into(),
                }
            ),
        };
        let data = server.data_dir().expect("own server");
        let out = layout
            .command(Path::new("bash"))
            .arg(Self::script())
            .arg("start")
            .arg(&data)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("bash scripts/pg_cluster.sh: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(3).collect();
            return Err(format!(
                "scripts/pg_cluster.sh start failed: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            ));
        }
        server.base = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .trim_end_matches('/')
            .to_string();
        if !server.base.starts_with("postgres://") {
            return Err(format!(
                "scripts/pg_cluster.sh start printed no URL: {:?}",
                server.base
            ));
        }
        Ok(server)
    }

    fn data_dir(&self) -> Option<PathBuf> {
        self.own.as_ref().map(|d| d.path().join("pg"))
    }

    /// Runs `sql` on the server's `postgres` database.
    async fn admin(&self, sql: &str) -> Result<(), String> {
        let url = format!("{}/postgres", self.base);
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connect to {}: {e}", redact(&self.base)))?;
        let driver = tokio::spawn(conn);
        let r = client.batch_execute(sql).await.map_err(|e| e.to_string());
        drop(client);
        let _ = driver.await;
        r
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Nothing to stop unless initdb got as far as the data dir.
        if let Some(data) = self.data_dir().filter(|d| d.join("data").exists()) {
            let _ = Command::new("bash")
                .arg(Self::script())
                .arg("stop")
                .arg(&data)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .status();
        }
    }
}

/// A connection URL without its password.
pub(crate) fn redact(url: &str) -> String {
    match url
        .split_once("://")
        .and_then(|(scheme, rest)| Some((scheme, rest.rsplit_once('@')?)))
    {
        Some((scheme, (user, host))) => format!(
            "{scheme}://{}@{host}",
            user.split(':').next().unwrap_or_default()
        ),
        None => url.to_string(),
    }
}

impl Bench {
    /// The PostgreSQL store: Authorize throughput of a node on PostgreSQL
    /// against a node on sled (same token count, same load, alternating
    /// rounds), then revocation across two nodes of one database (node A
    /// acknowledges a delete → node B denies).
    pub(crate) async fn postgres(&mut self) {
        let pg = match PgServer::start(&self.layout, self.cli.pg.as_deref()) {
            Ok(pg) => pg,
            Err(e) => {
                self.report.note(format!(
                    "12. skipped: no PostgreSQL server: {e} (give --pg postgres://user@host:port, or install the server: bash scripts/pg_cluster.sh install)"
                ));
                self.report.print_last(1);
                return;
            }
        };
        let db = format!("kwbench_{:016x}", rand::random::<u64>());
        if let Err(e) = pg.admin(&format!("CREATE DATABASE {db}")).await {
            self.report
                .note(format!("12. skipped: CREATE DATABASE {db}: {e}"));
            self.report.print_last(1);
            return;
        }
        let url = format!("{}/{db}", pg.base);
        let n = self.cli.tokens;
        let work = tempfile::tempdir().expect("tempdir");
        // One digest key for both PostgreSQL nodes and the seeded digests.
        let key_file = work.path().join("shared-digest.key");
        let key = keyward::token::DigestKey::load_or_create(&key_file, true).expect("digest key");

        eprint!("\r  12. seeding {n} tokens into PostgreSQL ...");
        let t = Instant::now();
        let store =
            keyward::store::postgres::PgStore::connect(&keyward::store::postgres::PgOptions {
                url: url.clone(),
                pool_size: 2,
                retain_changes: 100_000,
                ca_file: None,
            })
            .await
            .expect("connect to the bench database");
        let pg_seeded = keyward::seed::seed_store(&store, &key, n, true)
            .await
            .expect("seed PostgreSQL");
        drop(store);
        let pg_seed_time = t.elapsed();
        eprint!("\r{:<60}\r  12. seeding {n} tokens into sled ...", "");
        let sled_dir = work.path().join("sled");
        let t = Instant::now();
        let sled_seeded = keyward::seed::seed(&sled_dir, n, true)
            .await
            .expect("seed sled");
        let sled_seed_time = t.elapsed();
        eprint!("\r{:<60}\r", "");

        // Authorize throughput: the same load on each, alternating.
        let (sled, _) = start_keyward(&self.layout, &self.keyward_bin, &sled_dir);
        let (node_a, a_ready) = start_keyward_pg(
            &self.layout,
            &self.keyward_bin,
            &work.path().join("a"),
            &url,
            &key_file,
        );
        let workload = |s: &keyward::seed::Seeded| Workload {
            requests: Arc::new(
                s.tokens
                    .iter()
                    .map(|t| request(t.expose(), &s.project))
                    .collect(),
            ),
            batch: 1,
            checks: None,
            introspect: false,
            raw: None,
        };
        let (w_sled, w_pg) = (workload(&sled_seeded), workload(&pg_seeded));
        let mode = Mode::Closed {
            conns: 16,
            inflight: 8,
        };
        let (mut on_sled, mut on_pg) = (Run::new(), Run::new());
        let (mut rounds_sled, mut rounds_pg) = (Vec::new(), Vec::new());
        let revision = |p: &Proc| p.http.map_or(0.0, |h| metric(h, "keyward_store_revision"));
        let revision_before = revision(&node_a);
        for r in 0..self.cli.rounds {
            let (warmup, duration) = (self.cli.warmup, self.cli.duration);
            let label = format!("12. keyward on sled #{}", r + 1);
            let run = load(sled.addr, mode, &w_sled, warmup, duration, &label).await;
            rounds_sled.push(format!("{:.0}", run.rps()));
            on_sled.add(&run);
            let label = format!("12. keyward on PostgreSQL #{}", r + 1);
            let run = load(node_a.addr, mode, &w_pg, warmup, duration, &label).await;
            rounds_pg.push(format!("{:.0}", run.rps()));
            on_pg.add(&run);
        }
        let pg_commits = revision(&node_a) - revision_before;
        let pg_errors = node_a
            .http
            .map_or(0.0, |h| metric(h, "keyward_store_errors_total"));
        let (rss_sled, rss_pg) = (sled.rss_kib(), node_a.rss_kib());
        drop(sled);

        // Revocation: written on A, denied on B.
        let (node_b, b_ready) = start_keyward_pg(
            &self.layout,
            &self.keyward_bin,
            &work.path().join("b"),
            &url,
            &key_file,
        );
        let ch = Channel::from_shared(format!("http://{}", node_a.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut tokens = pb::tokens_client::TokensClient::new(ch);
        let on_b = clients(node_b.addr, 1).await;
        let admin = pg_seeded.tokens[0].expose().to_string();
        let (lat, worst, missed) = time_revocations(
            &mut tokens,
            &admin,
            (pg_seeded.account_id, &pg_seeded.project),
            &on_b,
            self.cli.revocations,
            Duration::from_secs(5),
            "12.",
        )
        .await;
        drop(on_b);
        drop(tokens);
        drop(node_b);
        drop(node_a);
        if pg.own.is_none() {
            if let Err(e) = pg
                .admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .await
            {
                eprintln!("12. could not drop the bench database {db}: {e}");
            }
        }
        let described = pg.described.clone();
        drop(pg);

        let start = self.report.lines.len();
        self.report.header(&format!(
            "12. PostgreSQL store: Authorize on sled vs on PostgreSQL ({n} tokens, closed loop 16 conns × 8 in flight); revocation across two nodes"
        ));
        self.report.row("keyward on sled", &on_sled);
        self.report.row("keyward on PostgreSQL", &on_pg);
        let tput = on_pg.rps() / on_sled.rps().max(1e-9);
        self.report.note(format!(
            "throughput ratio PostgreSQL/sled {tput:.3} (target ≥ 0.95: {}), p99 ratio {:.3}; baseline: the same keyward build on sled seeded with as many tokens, same load, sled then PostgreSQL each round",
            verdict(tput >= 0.95),
            on_pg.us(0.99) / on_sled.us(0.99).max(1e-9)
        ));
        self.report.note(format!(
            "req/s per round: sled {}, PostgreSQL {}. Both nodes persist last-use times in the background (up to 2,000 tokens/s, 256 per commit, until every token used is stored): the PostgreSQL node committed {pg_commits:.0} revisions to the database from the start of its first round to the end of the last, store errors {pg_errors:.0}",
            rounds_sled.join(" / "),
            rounds_pg.join(" / ")
        ));
        let p99 = lat.value_at_quantile(0.99) as f64 / 1e6;
        let r = &mut self.report.lines;
        r.push(String::new());
        r.push(format!(
            "- revocation across nodes of one database, node A acknowledges DeleteToken → node B denies, {} deletes (B polled every ~1 ms): p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms, missed (not denied within 5 s): {missed} (target p99 ≤ 200 ms: {}); times are clamped at 0: PostgreSQL delivers NOTIFY at commit, so B may deny before A's acknowledgement reaches the client",
            self.cli.revocations,
            lat.value_at_quantile(0.5) as f64 / 1e6,
            worst.as_secs_f64() * 1e3,
            verdict(p99 <= 200.0 && missed == 0)
        ));
        r.push(format!(
            "- start to SERVING with {n} tokens loaded from PostgreSQL: node A {:.2} s, node B {:.2} s; resident memory after the runs: sled node {:.0} MiB, PostgreSQL node {:.0} MiB",
            a_ready.as_secs_f64(),
            b_ready.as_secs_f64(),
            rss_sled as f64 / 1024.0,
            rss_pg as f64 / 1024.0
        ));
        r.push(format!(
            "- PostgreSQL: {described}; a fresh database {db}. Its {n} tokens were seeded with `keyward::seed::seed_store`, through the store's own write path (`Store::begin` + `WriteTxn::commit`, 10,000 changes per transaction, {:.1} s); the sled node's with `keyward::seed` (records straight into sled, {:.1} s). Both with stored digests (warm); nodes A and B share one digest key file.",
            pg_seed_time.as_secs_f64(),
            sled_seed_time.as_secs_f64()
        ));
        let shown = self.report.lines.len() - start;
        self.report.print_last(shown);
    }
}
