//! Scenario 6, `cold_start`: start to SERVING and memory per token with
//! `--cold-tokens` tokens, then the first-use argon2 storm on a store whose
//! digests are unusable (work bounded by the cores, the rest shed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::{request, Bench};
use crate::load::{load, Mode, Workload};
use crate::procs::{metric, start_keyward};
use crate::report::verdict;

impl Bench {
    /// 1 M tokens: load time to SERVING and memory per token; then the
    /// first-use argon2 storm on a store whose digests are unusable.
    pub(crate) async fn cold_start(&mut self) {
        let n = self.cli.cold_tokens;
        let empty_dir = tempfile::tempdir().expect("tempdir");
        let (empty, _) = start_keyward(&self.layout, &self.keyward_bin, empty_dir.path());
        let rss_empty = empty.rss_kib();
        drop(empty);
        let dir = tempfile::tempdir().expect("tempdir");
        eprint!("\r  6. seeding {n} tokens ...");
        let t = Instant::now();
        keyward::seed::seed(dir.path(), n, true)
            .await
            .expect("seed");
        let seed_time = t.elapsed();
        eprint!("\r{:<60}\r", "");
        let (kw, ready) = start_keyward(&self.layout, &self.keyward_bin, dir.path());
        let rss = kw.rss_kib();
        let per_token = (rss.saturating_sub(rss_empty) as f64 * 1024.0) / n as f64;
        drop(kw);
        self.report.lines.push(String::new());
        self.report
            .lines
            .push(format!("### 6. Cold start with {n} tokens"));
        self.report.lines.push(String::new());
        self.report.lines.push(format!(
            "- start to SERVING (`/readyz` 200): {:.2} s (target ≤ 10 s: {})",
            ready.as_secs_f64(),
            verdict(ready.as_secs_f64() <= 10.0)
        ));
        self.report.lines.push(format!(
            "- resident memory: {:.0} MiB with {n} tokens vs {:.0} MiB empty: {per_token:.0} bytes per token (target ≤ 400: {})",
            rss as f64 / 1024.0,
            rss_empty as f64 / 1024.0,
            verdict(per_token <= 400.0)
        ));
        self.report.lines.push(format!(
            "- (seeding the store took {:.1} s; not part of the start)",
            seed_time.as_secs_f64()
        ));

        // The storm: 20,000 tokens with no usable digest, all used at once.
        let storm_n = 20_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let seeded = keyward::seed::seed(dir.path(), storm_n, false)
            .await
            .expect("seed");
        let (kw, _) = start_keyward(&self.layout, &self.keyward_bin, dir.path());
        let reqs: Vec<_> = seeded
            .tokens
            .iter()
            .map(|t| request(t.expose(), &seeded.project))
            .collect();
        let w = Workload {
            requests: Arc::new(reqs),
            batch: 1,
            checks: None,
            introspect: false,
            raw: None,
        };
        let run = load(
            kw.addr,
            Mode::Closed {
                conns: 16,
                inflight: 8,
            },
            &w,
            Duration::ZERO,
            self.cli.duration,
            "6. first-use storm",
        )
        .await;
        let http = kw.http.expect("http");
        let verified = metric(http, "keyward_verify_total{path=\"argon2_ok\"}");
        let shed = metric(http, "keyward_argon2_shed_total");
        let queue = metric(http, "keyward_argon2_queue_depth");
        self.report.lines.push(format!(
            "- first-use storm ({storm_n} tokens without a usable digest, 128 in flight, {:.0} s): {verified:.0} argon2 \
             verifies ({:.0}/s), {shed:.0} shed with UNAVAILABLE, {} answered OK; p99 of all answers {:.1} ms; queue \
             depth after the storm {queue}. Work is bounded by the cores; the rest is shed, not queued.",
            run.elapsed.as_secs_f64(),
            verified / run.elapsed.as_secs_f64(),
            run.ok,
            run.hist.value_at_quantile(0.99) as f64 / 1e6
        ));
        self.report.print_last(6);
    }
}
