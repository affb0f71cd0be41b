//! Scenario 11, `followers`: revocation propagation from a primary to
//! `--followers` followers (primary acknowledges a delete → each follower
//! denies), follower memory against the primary's, and the time a new
//! follower takes to SERVING with a snapshot of `--cold-tokens` tokens.

use std::time::Duration;

use keyward::pb::v1 as pb;
use tonic::transport::Channel;

use super::revocations::time_revocations;
use crate::bench::Bench;
use crate::load::clients;
use crate::procs::{start_follower, start_keyward, Proc};
use crate::report::verdict;

impl Bench {
    /// Followers: revocation propagation (primary acknowledges a delete →
    /// each follower denies), follower memory against the primary's, and
    /// the time a new follower takes to get a snapshot of `cold_tokens`.
    pub(crate) async fn followers(&mut self) {
        let n_followers = self.cli.followers;
        // A primary of its own (so its feed has only these commits), seeded
        // like the main one; tokens[0] holds ADMIN on the project and
        // manages the victims.
        let pdir = tempfile::tempdir().expect("tempdir");
        let seeded = keyward::seed::seed(pdir.path(), self.cli.tokens, true)
            .await
            .expect("seed");
        let (primary, _) = start_keyward(&self.layout, &self.keyward_bin, pdir.path());
        let followers: Vec<Proc> = (0..n_followers)
            .map(|_| start_follower(&self.layout, &self.keyward_bin, &primary, pdir.path()).0)
            .collect();
        let admin = seeded.tokens[0].expose().to_string();
        let ch = Channel::from_shared(format!("http://{}", primary.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut tokens = pb::tokens_client::TokensClient::new(ch);
        let mut conns = Vec::new();
        for f in &followers {
            conns.push(clients(f.addr, 1).await.remove(0));
        }
        let (lat, worst, timeouts) = time_revocations(
            &mut tokens,
            &admin,
            (seeded.account_id, &seeded.project),
            &conns,
            self.cli.revocations,
            Duration::from_secs(10),
            "11.",
        )
        .await;
        let rss_primary = primary.rss_kib();
        let rss_followers: Vec<u64> = followers.iter().map(Proc::rss_kib).collect();
        let rss_follower = rss_followers.iter().sum::<u64>() / rss_followers.len().max(1) as u64;
        drop(followers);
        drop(primary);

        // Snapshot of `cold_tokens` to a new follower; memory with them.
        let n = self.cli.cold_tokens;
        let dir = tempfile::tempdir().expect("tempdir");
        eprint!("\r  11. seeding {n} tokens ...");
        keyward::seed::seed(dir.path(), n, true)
            .await
            .expect("seed");
        eprint!("\r{:<60}\r", "");
        let (big, _) = start_keyward(&self.layout, &self.keyward_bin, dir.path());
        let (big_follower, sync) =
            start_follower(&self.layout, &self.keyward_bin, &big, dir.path());
        let (rss_big, rss_big_follower) = (big.rss_kib(), big_follower.rss_kib());
        drop(big_follower);
        let (k, extra_kib, all) = self.snapshots_at_once(&big, dir.path());
        drop(big);

        let p99 = lat.value_at_quantile(0.99) as f64 / 1e6;
        let r = &mut self.report.lines;
        r.push(String::new());
        r.push(format!(
            "### 11. Followers ({n_followers} on this machine, the primary's {} tokens)",
            self.cli.tokens
        ));
        r.push(String::new());
        r.push(format!(
            "- revocation propagation, primary acknowledges DeleteToken → follower denies, {} deletes × {n_followers} followers (polled every ~1 ms): p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms, not seen within 10 s: {timeouts} (target p99 ≤ 100 ms: {})",
            self.cli.revocations,
            lat.value_at_quantile(0.5) as f64 / 1e6,
            worst.as_secs_f64() * 1e3,
            verdict(p99 <= 100.0 && timeouts == 0)
        ));
        r.push(format!(
            "- memory with {} tokens: primary {:.0} MiB, follower {:.0} MiB on average; with {n} tokens: primary {:.0} MiB, follower {:.0} MiB, follower/primary {:.3} (target ≤ 1.10: {})",
            self.cli.tokens,
            rss_primary as f64 / 1024.0,
            rss_follower as f64 / 1024.0,
            rss_big as f64 / 1024.0,
            rss_big_follower as f64 / 1024.0,
            rss_big_follower as f64 / rss_big.max(1) as f64,
            verdict(rss_big_follower as f64 <= 1.10 * rss_big as f64)
        ));
        r.push(format!(
            "- a new follower, start to SERVING with a snapshot of {n} tokens: {:.2} s (target ≤ 10 s: {})",
            sync.as_secs_f64(),
            verdict(sync.as_secs_f64() <= 10.0)
        ));
        r.push(format!(
            "- {k} new followers at once, each a snapshot of {n} tokens: all SERVING in {:.2} s ({:.0} tokens/s sent in all); the primary's resident memory rose by at most {:.1} MiB over its {:.0} MiB at rest, sampled every 5 ms (target ≤ 64 MiB: {})",
            all.as_secs_f64(),
            (k * n) as f64 / all.as_secs_f64().max(1e-9),
            extra_kib as f64 / 1024.0,
            rss_big as f64 / 1024.0,
            verdict(extra_kib as f64 / 1024.0 <= 64.0)
        ));
        self.report.print_last(7);
    }

    /// `--snapshot-followers` followers of `primary` started at once: how
    /// many, the primary's largest resident memory over its resting one
    /// while it streams them their snapshots (sampled every 5 ms), and
    /// the time until all are SERVING.
    fn snapshots_at_once(
        &self,
        primary: &Proc,
        primary_dir: &std::path::Path,
    ) -> (usize, u64, Duration) {
        let k = self.cli.snapshot_followers;
        let rest = primary.rss_kib();
        let peak = std::sync::atomic::AtomicU64::new(rest);
        let done = std::sync::atomic::AtomicBool::new(false);
        let started = std::time::Instant::now();
        let mut all = Duration::ZERO;
        eprint!("\r  11. {k} followers taking a snapshot at once ...");
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    peak.fetch_max(primary.rss_kib(), std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            let followers: Vec<_> = (0..k)
                .map(|_| {
                    s.spawn(|| {
                        start_follower(&self.layout, &self.keyward_bin, primary, primary_dir)
                    })
                })
                .collect();
            // Joined (and dropped, stopping them) once all are SERVING.
            let procs: Vec<Proc> = followers
                .into_iter()
                .map(|h| h.join().expect("follower start").0)
                .collect();
            all = started.elapsed();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            drop(procs);
        });
        eprint!("\r{:<60}\r", "");
        let extra = peak.into_inner().saturating_sub(rest);
        (k, extra, all)
    }
}
