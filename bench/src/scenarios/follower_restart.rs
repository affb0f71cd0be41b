//! Scenario 17, `follower_restart`: a follower of a primary holding
//! `--cold-tokens` tokens, restarted on its data dir: start to SERVING
//! when it resumes from the state file it wrote at its clean stop (with a
//! change made on the primary while it was down), against the same
//! restart with the state file removed (a full snapshot); the primary's
//! snapshot count proves which was which. Also what the file costs: its
//! size and the clean stop that writes it.

use std::time::Duration;

use keyward::pb::v1 as pb;
use tonic::transport::Channel;

use crate::bench::{request, Bench};
use crate::procs::{metric, start_follower_in, start_keyward, Proc};
use crate::report::verdict;

/// The primary's count of snapshots served.
const SERVED: &str = "keyward_replication_snapshots_served_total";

/// What one restart measured.
struct Restart {
    /// Spawn to `/readyz` 200.
    ready: Duration,
    /// Snapshots the primary served for it.
    snapshots: f64,
    /// The follower's resident memory once ready (KiB).
    rss_kib: u64,
}

impl Bench {
    /// Follower restarts with `cold_tokens` tokens: resume from the state
    /// file vs a full snapshot, alternating `rounds` times.
    pub(crate) async fn follower_restart(&mut self) {
        let n = self.cli.cold_tokens;
        let pdir = tempfile::tempdir().expect("tempdir");
        eprint!("\r  17. seeding {n} tokens ...");
        let seeded = keyward::seed::seed(pdir.path(), n, true)
            .await
            .expect("seed");
        eprint!("\r{:<60}\r", "");
        let (primary, _) = start_keyward(&self.layout, &self.keyward_bin, pdir.path());
        let fdir = tempfile::tempdir().expect("tempdir");
        let http = primary.http.expect("http");
        let start = |p: &Proc| {
            let before = metric(http, SERVED);
            let (f, ready) =
                start_follower_in(&self.layout, &self.keyward_bin, p, pdir.path(), fdir.path());
            let r = Restart {
                ready,
                snapshots: metric(http, SERVED) - before,
                rss_kib: f.rss_kib(),
            };
            (f, r)
        };
        // The first start: nothing on disk.
        let (mut follower, first) = start(&primary);
        let admin = seeded.tokens[0].expose().to_string();
        let ch = Channel::from_shared(format!("http://{}", primary.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut tokens = pb::tokens_client::TokensClient::new(ch);
        let (mut resumed, mut snapped, mut stops) = (Vec::new(), Vec::new(), Vec::new());
        let mut size = 0;
        let mut wrong = 0;
        for round in 0..self.cli.rounds {
            eprint!("\r  17. round {}/{}   ", round + 1, self.cli.rounds);
            // A clean stop writes the state; a token is deleted meanwhile.
            stops.push(follower.stop());
            size = std::fs::metadata(fdir.path().join("follower.state")).map_or(0, |m| m.len());
            let gone = &seeded.tokens[1 + 2 * round];
            delete(&mut tokens, &admin, seeded.account_id, 2 + 2 * round as u64).await;
            let (f, r) = start(&primary);
            wrong += u64::from(allowed(&f, gone.expose(), &seeded.project).await);
            resumed.push(r);
            // The same restart without the state file: a snapshot.
            stops.push(f.stop());
            let _ = std::fs::remove_file(fdir.path().join("follower.state"));
            let gone = &seeded.tokens[2 + 2 * round];
            delete(&mut tokens, &admin, seeded.account_id, 3 + 2 * round as u64).await;
            let (f, r) = start(&primary);
            wrong += u64::from(allowed(&f, gone.expose(), &seeded.project).await);
            snapped.push(r);
            follower = f;
        }
        eprint!("\r{:<60}\r", "");
        drop(follower);
        drop(primary);

        let secs = |rs: &[Restart]| -> Vec<String> {
            rs.iter()
                .map(|r| format!("{:.2}", r.ready.as_secs_f64()))
                .collect()
        };
        let median = |rs: &[Restart]| -> f64 {
            let mut v: Vec<f64> = rs.iter().map(|r| r.ready.as_secs_f64()).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let mib = |rs: &[Restart]| rs.iter().map(|r| r.rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        let served = |rs: &[Restart]| rs.iter().map(|r| r.snapshots).sum::<f64>();
        let (res, snap) = (median(&resumed), median(&snapped));
        let per_token = mib(&resumed).max(mib(&snapped)) * f64::from(1 << 20) / n as f64;
        let r = &mut self.report.lines;
        r.push(String::new());
        r.push(format!(
            "### 17. Follower restart with {n} tokens: resume from its state file vs a snapshot"
        ));
        r.push(String::new());
        r.push(format!(
            "- first start (empty data dir, a snapshot): {:.2} s to SERVING",
            first.ready.as_secs_f64()
        ));
        r.push(format!(
            "- restart resuming from `follower.state` ({} rounds, a token deleted on the primary while it was down): {} s, median {res:.2} s (target ≤ 1 s: {}); snapshots served for them: {}",
            resumed.len(),
            secs(&resumed).join(", "),
            verdict(res <= 1.0),
            served(&resumed)
        ));
        r.push(format!(
            "- the same restart with the state file removed (a full snapshot): {} s, median {snap:.2} s; snapshots served: {}; resume/snapshot {:.2}×",
            secs(&snapped).join(", "),
            served(&snapped),
            res / snap
        ));
        r.push(format!(
            "- follower RSS once SERVING: {:.0} MiB after a resume, {:.0} MiB after a snapshot: {:.0} bytes per token, all of the process counted (target ≤ 200: {}); the state file: {:.0} MiB ({:.0} bytes per token); a clean stop (SIGTERM → exit, the file written): {} s",
            mib(&resumed),
            mib(&snapped),
            per_token,
            verdict(per_token <= 200.0),
            size as f64 / (1 << 20) as f64,
            size as f64 / n as f64,
            stops
                .iter()
                .map(|d| format!("{:.2}", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        r.push(format!(
            "- tokens deleted while the follower was down and still allowed after its restart: {wrong} (must be 0: {})",
            verdict(wrong == 0)
        ));
        self.report.print_last(7);
    }
}

/// Deletes token `id` of `account` with the ADMIN token `admin`.
async fn delete(
    tokens: &mut pb::tokens_client::TokensClient<Channel>,
    admin: &str,
    account_id: u64,
    id: u64,
) {
    let mut req = tonic::Request::new(pb::DeleteTokenRequest {
        account_id,
        token_id: id,
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {admin}").parse().expect("ascii"),
    );
    tokens.delete_token(req).await.expect("delete");
}

/// Whether `f` allows `token` on `project` (its first answer).
async fn allowed(f: &Proc, token: &str, project: &str) -> bool {
    let ch = Channel::from_shared(format!("http://{}", f.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    pb::authorizer_client::AuthorizerClient::new(ch)
        .authorize(request(token, project))
        .await
        .map(|r| r.into_inner().allowed)
        .unwrap_or(true)
}
