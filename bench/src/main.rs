//! keyward-bench: measures `Authorize` against the physical limit of the
//! stack, in the same run on the same machine.
//!
//! It starts a no-op tonic server that answers every `AuthorizeRequest` with
//! `allowed` (the baseline) and the release `keyward` on a temp data dir
//! seeded with N tokens, drives both with the same load generator (tonic
//! client, every latency into an HdrHistogram), alternating baseline and
//! keyward each round, and prints one table per scenario with the ratios.
//!
//! Servers run pinned to the last core and the load generator to the first
//! (`--no-pin` to let the OS place them); the layout is printed.
//!
//! Scenario 12 (the PostgreSQL store) compares a keyward on PostgreSQL with
//! one on sled, and times a revocation written on one node until another
//! node of the same database denies; it uses the server `--pg` names, or
//! starts a throwaway one with scripts/pg_cluster.sh.
//!
//! Scenario 13 (`under_attack`) measures scenario 1's load alone and beside
//! issue 14's attacks (header-only streams, refused admin calls that used
//! to hash), alternating, and reports the ratios.
//!
//! Scenario 14 (`tls`) runs scenarios 1 and 2 over TLS: keyward with
//! `--tls-cert`/`--tls-key` against the no-op baseline serving TLS with the
//! same certificate (made with openssl), the client verifying both.
//!
//! Scenario 15 (`introspect`) compares `Introspect` with `Authorize` on the
//! same keyward and tokens: sequential p50 and closed-loop throughput.
//!
//! Scenario 17 (`follower_restart`) restarts a follower of a primary with
//! `--cold-tokens` tokens on its data dir: start to SERVING resuming from
//! its state file, against the same restart taking a full snapshot.
//!
//! Scenario 18 (`admin_under_load`) times PauseToken/ResumeToken beside
//! scenario 1's load, with the usage writer at work and resting.
//!
//! ```text
//! cargo build --release && target/release/keyward-bench            # all scenarios
//! target/release/keyward-bench --scenarios 1,2 --duration 3s --rounds 3
//! ```
//!
//! Layout: `main.rs` (flags, start-up, the scenario loop), [`scenarios`]
//! (the table from number to name, one file per scenario under
//! `scenarios/`), [`bench`] (the shared state and the baseline-vs-keyward
//! comparison), [`load`] (the load generator and its histograms),
//! [`procs`] (starting servers, pinning), [`noop`] (the no-op baseline
//! servers) and [`report`] (the Markdown tables).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod bench;
mod load;
mod noop;
mod procs;
mod raw;
mod report;
mod scenarios;

use bench::{request, Bench};
use noop::serve_noop;
use procs::{start_keyward, start_noop, Layout};
use report::Report;

#[derive(Parser, Debug)]
#[command(
    name = "keyward-bench",
    about = "Authorize against a no-op gRPC baseline, same run"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The keyward binary (default: `keyward` beside this one).
    #[arg(long)]
    keyward: Option<PathBuf>,
    /// Distinct valid tokens seeded and cycled through.
    #[arg(long, default_value_t = 10_000)]
    tokens: usize,
    /// Tokens seeded for the cold-start scenario (and the follower snapshot
    /// and restarts, scenarios 11 and 17).
    #[arg(long, default_value_t = 1_000_000)]
    cold_tokens: usize,
    /// Followers in the revocation-propagation scenario.
    #[arg(long, default_value_t = 8)]
    followers: usize,
    /// Scenario 11: followers that take a snapshot of `--cold-tokens`
    /// tokens from one primary at once (its extra memory is measured).
    #[arg(long, default_value_t = 8)]
    snapshot_followers: usize,
    /// Revocations timed in the propagation scenario.
    #[arg(long, default_value_t = 50)]
    revocations: usize,
    /// Length of each measured run.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up before each measured run (not recorded).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Alternations of baseline and keyward per scenario.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Scenarios to run, by number or name (1-7, 9-18; 8 is `cargo bench
    /// --bench decision`; 10 needs `envoy` on PATH; 12 needs a PostgreSQL
    /// server, see --pg; 14 needs `openssl` on PATH). Names: 1
    /// warm_closed_loop, 2 sequential, 3 fixed_rate, 4 malformed_tokens, 5
    /// wrong_secret_flood, 6 cold_start, 7 batch, 8 decision, 9
    /// ext_authz_check, 10 envoy, 11 followers, 12 postgres, 13
    /// under_attack, 14 tls, 15 introspect, 16 rate_limits, 17
    /// follower_restart, 18 admin_under_load.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,3,4,5,6,7,9,10,11,12,13,14,15,17,18",
        value_parser = scenarios::parse
    )]
    scenarios: Vec<u32>,
    /// Scenario 12: base URL of a running PostgreSQL server
    /// (`postgres://user@host:port`, no database; the role must be allowed
    /// to CREATE DATABASE). The bench creates a fresh database on it and
    /// drops it afterwards. Without it, scenario 12 starts a throwaway
    /// server of its own (scripts/pg_cluster.sh) and stops it at the end.
    #[arg(long)]
    pg: Option<String>,
    /// Do not pin servers and client to separate cores.
    #[arg(long)]
    no_pin: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Serve the no-op baseline (used by the harness itself).
    NoopServer {
        /// Listen address.
        #[arg(long)]
        addr: SocketAddr,
        /// Serve TLS with this PEM certificate chain (and --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Answer every ext_authz `Check` with an allow shaped as keyward's
        /// (the same headers set and removed, the same dynamic metadata),
        /// not a bare OK: the floor of what Envoy does with keyward's answer.
        #[arg(long)]
        shaped_check: bool,
        /// With --shaped-check: the same allow without its dynamic
        /// metadata (what the metadata alone costs Envoy).
        #[arg(long, requires = "shaped_check")]
        no_metadata: bool,
    },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    // Fixed-rate timelines count from here.
    let _ = load::epoch();
    if let Some(Cmd::NoopServer {
        addr,
        tls_cert,
        tls_key,
        shaped_check,
        no_metadata,
    }) = cli.cmd
    {
        let shape = match (shaped_check, no_metadata) {
            (false, _) => noop::Shape::BareOk,
            (true, false) => noop::Shape::Keyward,
            (true, true) => noop::Shape::KeywardWithoutMetadata,
        };
        return serve_noop(addr, tls_cert.zip(tls_key), shape);
    }
    let layout = Layout::new(cli.no_pin);
    let keyward_bin = match &cli.keyward {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("keyward"),
    };
    if !keyward_bin.exists() {
        return Err(format!(
            "{} not found: cargo build --release first",
            keyward_bin.display()
        )
        .into());
    }
    let client_core = layout.client_core;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if client_core.is_some() { 1 } else { 2 })
        .on_thread_start(move || {
            if let Some(id) = client_core {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
        })
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        eprintln!("seeding {} tokens ...", cli.tokens);
        let seeded = keyward::seed::seed(dir.path(), cli.tokens, true).await?;
        let valid: Vec<_> = seeded.tokens.iter().map(|t| request(t.expose(), &seeded.project)).collect();
        let baseline = start_noop(&layout);
        let (keyward, _) = start_keyward(&layout, &keyward_bin, dir.path());
        let mut report = Report { lines: Vec::new() };
        report.lines.push("## keyward-bench".into());
        report.lines.push(String::new());
        report.lines.push(format!(
            "machine: {} cores ({}), {}; layout: {}; {} rounds × {:?} (+{:?} warm-up) per target, alternating",
            std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model(),
            std::env::consts::ARCH,
            layout.describe(),
            cli.rounds,
            cli.duration,
            cli.warmup
        ));
        report.print_last(3);
        let project = seeded.project.clone();
        let chosen = cli.scenarios.clone();
        let account_id = seeded.account_id;
        let mut bench = Bench { cli, layout, keyward_bin, baseline, keyward, valid, project, account_id, report, peak: None };
        let mut seen = HashMap::new();
        for s in chosen {
            if seen.insert(s, ()).is_some() {
                continue;
            }
            scenarios::run(&mut bench, s).await;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
