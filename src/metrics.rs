//! Metric handles, registered once so the hot path only bumps atomics.
//!
//! Names (Prometheus, on `/metrics`):
//! - `keyward_decisions_total{result="allow|deny|shed", reason}`
//! - `keyward_authorize_seconds` (summary of Authorize latency in the server)
//! - `keyward_verify_total{path="digest|argon2_ok|argon2_fail|negative_cache"}`:
//!   how tokens were proven (digest = cache hit; argon2 = miss)
//! - `keyward_argon2_queue_depth`, `keyward_argon2_shed_total`: verifies
//! - `keyward_hash_queue_depth`, `keyward_hash_shed_total`: hashes of new
//!   secrets (creates, resets; a budget of their own)
//! - `keyward_verify_refused_total{why="token_failures"}`: unproven secrets
//!   refused without argon2 because their token id failed too often
//! - `keyward_tokens` (tokens in memory)
//! - `keyward_grpc_admission_refused_total{reason}`: gRPC requests refused
//!   before taking an in-flight slot ([`crate::admission`])
//! - `keyward_http_connections`, `keyward_http_connections_dropped_total{why}`:
//!   the HTTP port's connection cap ([`crate::http::serve`])
//! - `keyward_check_total{result="allow|deny|unmatched_allow|unmatched_deny|unsafe_path"}`,
//!   `keyward_check_seconds`: ext_authz Check (deny reasons are counted in
//!   `keyward_decisions_total` like Authorize's)
//! - `keyward_routes` (routes loaded), `keyward_routes_reloads_total{result="ok|error"}`
//! - with TLS: `keyward_tls_reloads_total{result="ok|refused"}` (certificate
//!   reloads) and `keyward_tls_handshake_failures_total{port="grpc|http"}`
//!   (handshakes failed or past their deadline) ([`crate::tls`])
//! - primary: `keyward_replication_watchers`,
//!   `keyward_replication_{snapshots,resumes}_served_total` (watchers
//!   started with a snapshot, or with only the commits they missed);
//!   follower: `keyward_follower_lag_revisions`,
//!   `keyward_follower_lag_seconds`,
//!   `keyward_follower_{snapshots,commits,disconnects}_total`,
//!   `keyward_follower_state_writes_total{result="ok|error"}` (its state
//!   file written)
//! - PostgreSQL node: `keyward_store_revision` (the database revision the
//!   index is at), `keyward_store_remote_commits_total` (other nodes'
//!   commits applied), `keyward_store_errors_total` (failed reads of the
//!   change table), `keyward_store_reloads_total`,
//!   `keyward_store_silence_seconds` (since the database last answered),
//!   `keyward_store_unseen_catch_ups_total` (catch-ups for callers whose
//!   token id is newer than the index: at most one per 100 ms)
//! - `keyward_leak_reports_total{label="true_positive|false_positive"}`:
//!   reported strings judged (GitHub's reports and `Tokens/ReportLeak`);
//!   `keyward_leak_reports_refused_total{why}`: GitHub reports refused
//!   whole ([`crate::leak_report::Refusal`] labels, `too_large`,
//!   `malformed`, `no_keys`, `overloaded`)
//! - `keyward_lease_units_total{dir="taken|returned"}`: sending-limit
//!   budget leased in chunks (a primary: granted to followers, and given
//!   back by them; a follower: received)

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::error::{Denial, DENIALS};
use crate::pb::v1::DenyReason;

/// The handles.
#[derive(Clone)]
pub struct Metrics {
    /// Allowed decisions.
    pub allow: Counter,
    /// Denied decisions, by reason (index = the reason's number - 1: the
    /// rows of [`DENIALS`] after the unspecified one).
    deny: [Counter; DENIALS.len() - 1],
    /// Authorize calls shed for lack of argon2 capacity.
    pub shed: Counter,
    /// Authorize latency inside the server.
    pub authorize_seconds: Histogram,
    /// Tokens proven by their verified digest (cache hit).
    pub verify_digest: Counter,
    /// argon2 verifies that succeeded (cache miss, filled).
    pub verify_argon2_ok: Counter,
    /// argon2 verifies that failed.
    pub verify_argon2_fail: Counter,
    /// Wrong secrets answered from the negative cache.
    pub verify_negative: Counter,
    /// argon2 verifies shed (queue full or deadline passed).
    pub argon2_shed: Counter,
    /// argon2 verifies waiting for a CPU.
    pub argon2_queue: Gauge,
    /// Hashes of new secrets refused (queue full or deadline passed).
    pub hash_shed: Counter,
    /// Hashes of new secrets waiting for their budget.
    pub hash_queue: Gauge,
    /// Unproven secrets refused without argon2: their token id had failed
    /// too often in the window.
    pub verify_token_failures: Counter,
    /// Tokens in memory.
    pub tokens: Gauge,
    /// ext_authz Check outcomes.
    pub check: CheckMetrics,
    /// Replication (primary and follower).
    pub replication: ReplicationMetrics,
    /// A node on a shared store (PostgreSQL).
    pub store: StoreMetrics,
    /// Leak reports.
    pub leaks: LeakMetrics,
    /// Leases of sending-limit budget.
    pub leases: LeaseMetrics,
}

/// Lease handles, in units of budget.
#[derive(Clone)]
pub struct LeaseMetrics {
    /// Units leased (granted by a primary, received by a follower).
    pub taken: Counter,
    /// Units given back unspent (to a primary).
    pub returned: Counter,
}

/// Leak-report handles: each reported string, by its answer.
#[derive(Clone)]
pub struct LeakMetrics {
    /// A live keyward token (paused).
    pub true_positive: Counter,
    /// Anything else.
    pub false_positive: Counter,
}

/// Shared-store handles.
#[derive(Clone)]
pub struct StoreMetrics {
    /// The database revision the index is at.
    pub revision: Gauge,
    /// Other nodes' commits applied.
    pub remote_commits: Counter,
    /// Failed reads of the change table.
    pub errors: Counter,
    /// Snapshots reloaded (behind the retention horizon).
    pub reloads: Counter,
    /// Seconds since the database last answered.
    pub silence_seconds: Gauge,
    /// Catch-ups for callers whose token id was newer than the index (at
    /// most one per interval, shared by every caller waiting).
    pub unseen_catch_ups: Counter,
    /// Token records the usage writer stored (last uses, learnt digests,
    /// budgets), on any store.
    pub usage_records: Counter,
    /// The usage writer's commits, on any store.
    pub usage_commits: Counter,
}

/// Replication handles.
#[derive(Clone)]
pub struct ReplicationMetrics {
    /// Followers watching this primary.
    pub watchers: Gauge,
    /// Primary: watchers started with a snapshot.
    pub snapshots_served: Counter,
    /// Primary: watchers started from their revision (only what they
    /// missed).
    pub resumes_served: Counter,
    /// Follower: state files written.
    pub state_written: Counter,
    /// Follower: state files that could not be written.
    pub state_write_failed: Counter,
    /// Follower: streams that ended (reconnects).
    pub disconnects: Counter,
    /// Follower: snapshots applied.
    pub snapshots: Counter,
    /// Follower: commits applied.
    pub commits: Counter,
    /// Follower: revisions behind the primary's last known.
    pub lag_revisions: Gauge,
    /// Follower: seconds since the primary was last heard from.
    pub lag_seconds: Gauge,
}

/// ext_authz Check and routes-file handles.
#[derive(Clone)]
pub struct CheckMetrics {
    /// Allowed by a route.
    pub allow: Counter,
    /// Denied by a route's decision.
    pub deny: Counter,
    /// No route; let through (`unmatched = "allow"`).
    pub unmatched_allow: Counter,
    /// No route; denied.
    pub unmatched_deny: Counter,
    /// Denied: a path keyward does not judge.
    pub unsafe_path: Counter,
    /// Check latency inside the server.
    pub seconds: Histogram,
    /// Routes loaded.
    pub routes: Gauge,
    /// Routes-file reloads that took effect.
    pub reload_ok: Counter,
    /// Routes-file reloads refused (the old routes stay).
    pub reload_error: Counter,
}

impl Metrics {
    /// Registers the handles with the installed recorder.
    pub fn new() -> Self {
        Self {
            allow: counter!("keyward_decisions_total", "result" => "allow", "reason" => "none"),
            deny: std::array::from_fn(
                |i| counter!("keyward_decisions_total", "result" => "deny", "reason" => DENIALS[i + 1].label),
            ),
            shed: counter!("keyward_decisions_total", "result" => "shed", "reason" => "overloaded"),
            authorize_seconds: histogram!("keyward_authorize_seconds"),
            verify_digest: counter!("keyward_verify_total", "path" => "digest"),
            verify_argon2_ok: counter!("keyward_verify_total", "path" => "argon2_ok"),
            verify_argon2_fail: counter!("keyward_verify_total", "path" => "argon2_fail"),
            verify_negative: counter!("keyward_verify_total", "path" => "negative_cache"),
            argon2_shed: counter!("keyward_argon2_shed_total"),
            argon2_queue: gauge!("keyward_argon2_queue_depth"),
            hash_shed: counter!("keyward_hash_shed_total"),
            hash_queue: gauge!("keyward_hash_queue_depth"),
            verify_token_failures: counter!("keyward_verify_refused_total", "why" => "token_failures"),
            tokens: gauge!("keyward_tokens"),
            check: CheckMetrics {
                allow: counter!("keyward_check_total", "result" => "allow"),
                deny: counter!("keyward_check_total", "result" => "deny"),
                unmatched_allow: counter!("keyward_check_total", "result" => "unmatched_allow"),
                unmatched_deny: counter!("keyward_check_total", "result" => "unmatched_deny"),
                unsafe_path: counter!("keyward_check_total", "result" => "unsafe_path"),
                seconds: histogram!("keyward_check_seconds"),
                routes: gauge!("keyward_routes"),
                reload_ok: counter!("keyward_routes_reloads_total", "result" => "ok"),
                reload_error: counter!("keyward_routes_reloads_total", "result" => "error"),
            },
            replication: ReplicationMetrics {
                watchers: gauge!("keyward_replication_watchers"),
                snapshots_served: counter!("keyward_replication_snapshots_served_total"),
                resumes_served: counter!("keyward_replication_resumes_served_total"),
                state_written: counter!("keyward_follower_state_writes_total", "result" => "ok"),
                state_write_failed: counter!("keyward_follower_state_writes_total", "result" => "error"),
                disconnects: counter!("keyward_follower_disconnects_total"),
                snapshots: counter!("keyward_follower_snapshots_total"),
                commits: counter!("keyward_follower_commits_total"),
                lag_revisions: gauge!("keyward_follower_lag_revisions"),
                lag_seconds: gauge!("keyward_follower_lag_seconds"),
            },
            store: StoreMetrics {
                revision: gauge!("keyward_store_revision"),
                remote_commits: counter!("keyward_store_remote_commits_total"),
                errors: counter!("keyward_store_errors_total"),
                reloads: counter!("keyward_store_reloads_total"),
                silence_seconds: gauge!("keyward_store_silence_seconds"),
                unseen_catch_ups: counter!("keyward_store_unseen_catch_ups_total"),
                usage_records: counter!("keyward_usage_records_total"),
                usage_commits: counter!("keyward_usage_commits_total"),
            },
            leaks: LeakMetrics {
                true_positive: counter!("keyward_leak_reports_total", "label" => "true_positive"),
                false_positive: counter!("keyward_leak_reports_total", "label" => "false_positive"),
            },
            leases: LeaseMetrics {
                taken: counter!("keyward_lease_units_total", "dir" => "taken"),
                returned: counter!("keyward_lease_units_total", "dir" => "returned"),
            },
        }
    }

    /// Counts a denial (the unspecified reason is none: not counted).
    pub fn deny(&self, reason: DenyReason) {
        if let Some(c) = Denial::slot(reason)
            .checked_sub(1)
            .and_then(|i| self.deny.get(i))
        {
            c.increment(1);
        }
    }

    /// The label of a deny reason (for logs; "none" for the unspecified).
    pub fn reason_label(reason: DenyReason) -> &'static str {
        Denial::of(reason).label
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
