//! Primary → follower replication.
//!
//! **Primary.** Every commit gets the next revision of this process's epoch
//! (a random id drawn at start) and is published on the commit
//! [`Feed`](crate::feed::Feed): kept in a bounded history and broadcast to
//! the `Replication/Watch` streams. A new follower gets a consistent
//! snapshot (taken with the writer lock held, so no commit falls between
//! the snapshot and the stream), then every commit in order, and a
//! heartbeat every second. A follower that reconnects within the same
//! epoch, with its revision still in the history, gets only what it
//! missed. Watch requires the replication secret; without one configured,
//! replication is off.
//!
//! **Follower** ([`follow`]): no store of its own; it applies what the
//! primary streams to its in-memory index, serves Authorize and Check from
//! it, refuses admin calls naming the primary, reconnects with backoff, and
//! reports its lag. It keeps its last state in its data dir
//! ([`keep_state`]) and, restarted, installs it ([`load_state`]) and asks
//! the primary to resume from its revision: ready once the missed commits
//! are in, without a snapshot when the primary's history still reaches. Past the staleness bound without a word from the
//! primary it fails closed (or keeps serving, by flag). An `https://`
//! primary is reached over TLS: its certificate must chain to `--tls-ca`
//! (or the system roots) and name the URL's host, and the follower
//! presents `--tls-cert`/`--tls-key` when given, all re-read at every
//! connect. A plaintext primary gets one warning at start: the secret and
//! every record travel in clear.
//!
//! **Last use.** A follower reports the tokens used through it (token id,
//! time) with its node name every `--use-report-interval`, on the same
//! channel, and once more when it stops (`report`); the primary keeps the
//! newer use, clamped to its own clock, as the token's `last_used_at` and
//! `last_used_by` (`Replication/ReportUse`, same secret as Watch).
//!
//! **Sending limits.** A follower spends leases of budget taken from the
//! primary in chunks (`Replication/Lease`, same secret), and gives its
//! unspent units back when it stops (`lease`).
//!
//! `serve` holds the primary's side (the `Replication` service, the
//! snapshot, the reports taken, the leases granted), `follow` the
//! follower's (connect, TLS, apply), `report` the follower's reports,
//! `lease` its lease source, `state` its state file.
//!
//! Layer L5 (with `tls`): imports `engine`, `error`, `feed`, `index`,
//! `credential`, `model`, `pb` and `store` (the archive format of the
//! state file), and `tls::read_ca` for a follower's CA file.

mod follow;
mod lease;
mod report;
mod serve;
mod state;
#[cfg(test)]
mod tests;

pub use follow::{follow, follows_over_tls, FollowOptions};
pub use state::{keep_state, load_state, save_state, Loaded, STATE_FILE, WRITE_SPACING};

/// The `authorization` value a follower presents: the replication secret
/// as a bearer (a secret that is not header text is an error, never an
/// unauthenticated call). Marked sensitive.
fn bearer(secret: &str) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, String> {
    let mut v: tonic::metadata::MetadataValue<_> = format!("Bearer {secret}")
        .parse()
        .map_err(|_| "the replication secret is not valid header text".to_string())?;
    v.set_sensitive(true);
    Ok(v)
}
pub use serve::{ReplicationService, CHUNK, HEARTBEAT, USES_MAX};
