//! Every record a store holds, one at a time, for moving a store: the
//! [`Record`]s (backend-neutral), an [`Export`] that reads them in chunks
//! (bounded memory), an [`Import`] that writes them into an empty store,
//! and the [`Tally`] (counts per kind and an order-free checksum) that
//! proves two stores, or a store and a backup file, hold the same records.
//!
//! Records are the store's own protobuf bytes: hashes and verified
//! digests, never a secret. May import what `store` may.

use prost::Message;

use super::{BoxFuture, StoreError};
use crate::pb::store::{AccountRecord, AuditRecord, ResourceRecord, TokenRecord};

/// Records per chunk of an export or import.
pub const CHUNK: usize = 2048;

/// One record of a store, whatever the backend.
#[derive(Clone, PartialEq)]
pub enum Record {
    /// The id counters.
    Counters {
        /// Next account id.
        next_account_id: u64,
        /// Next token id.
        next_token_id: u64,
    },
    /// An account.
    Account(AccountRecord),
    /// A resource.
    Resource(ResourceRecord),
    /// A token (hash and verified digest, never its secret).
    Token(TokenRecord),
    /// An audit event, with its id.
    Audit(AuditRecord),
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a hash in a log or a panic: the kind and the key only.
        write!(f, "{} {}", self.kind().name(), self.key())
    }
}

/// The kinds of record, in the order a [`Tally`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// [`Record::Counters`].
    Counters = 0,
    /// [`Record::Account`].
    Account = 1,
    /// [`Record::Resource`].
    Resource = 2,
    /// [`Record::Token`].
    Token = 3,
    /// [`Record::Audit`].
    Audit = 4,
}

impl RecordKind {
    /// Every kind, in tally order.
    pub const ALL: [RecordKind; 5] = [
        RecordKind::Counters,
        RecordKind::Account,
        RecordKind::Resource,
        RecordKind::Token,
        RecordKind::Audit,
    ];

    /// The kind's name in messages ("token").
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Counters => "counters",
            RecordKind::Account => "account",
            RecordKind::Resource => "resource",
            RecordKind::Token => "token",
            RecordKind::Audit => "audit event",
        }
    }

    /// Its tag in a backup file (1..=5).
    pub fn tag(self) -> u8 {
        self as u8 + 1
    }

    /// The kind of a backup file tag.
    pub fn from_tag(tag: u8) -> Option<RecordKind> {
        RecordKind::ALL
            .get(usize::from(tag).checked_sub(1)?)
            .copied()
    }
}

impl Record {
    /// Its kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Counters { .. } => RecordKind::Counters,
            Record::Account(_) => RecordKind::Account,
            Record::Resource(_) => RecordKind::Resource,
            Record::Token(_) => RecordKind::Token,
            Record::Audit(_) => RecordKind::Audit,
        }
    }

    /// What names it in a message ("id 42", "account 3 domain example.com").
    pub fn key(&self) -> String {
        match self {
            Record::Counters { .. } => String::new(),
            Record::Account(a) => format!("id {}", a.id),
            Record::Resource(r) => format!(
                "account {} type {} id {}",
                r.account_id, r.resource_type, r.id
            ),
            Record::Token(t) => format!("id {}", t.id),
            Record::Audit(e) => format!("id {}", e.id),
        }
    }

    /// Its bytes: the store's protobuf encoding (counters: two big-endian
    /// u64s).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Record::Counters {
                next_account_id,
                next_token_id,
            } => {
                let mut v = Vec::with_capacity(16);
                v.extend_from_slice(&next_account_id.to_be_bytes());
                v.extend_from_slice(&next_token_id.to_be_bytes());
                v
            }
            Record::Account(r) => r.encode_to_vec(),
            Record::Resource(r) => r.encode_to_vec(),
            Record::Token(r) => r.encode_to_vec(),
            Record::Audit(r) => r.encode_to_vec(),
        }
    }

    /// The record of `kind` encoded in `bytes`; Err says why it does not
    /// decode.
    pub fn decode(kind: RecordKind, bytes: &[u8]) -> Result<Record, String> {
        Self::decode_reusing(kind, bytes, None)
    }

    /// As [`Record::decode`], into `spare`'s allocations when it is a
    /// token record (its strings and lists keep their capacity): loading a
    /// million tokens then allocates for few of them.
    pub fn decode_reusing(
        kind: RecordKind,
        bytes: &[u8],
        spare: Option<Record>,
    ) -> Result<Record, String> {
        let e = |e: prost::DecodeError| e.to_string();
        if let (RecordKind::Token, Some(Record::Token(mut t))) = (kind, spare) {
            // What `decode` does (a default record, merged), in place.
            t.clear();
            t.merge(bytes).map_err(e)?;
            return Ok(Record::Token(t));
        }
        Ok(match kind {
            RecordKind::Counters => {
                let b: [u8; 16] = bytes
                    .try_into()
                    .map_err(|_| format!("{} bytes, not 16", bytes.len()))?;
                let (a, t) = b.split_at(8);
                Record::Counters {
                    next_account_id: u64::from_be_bytes(a.try_into().map_err(|_| "counters")?),
                    next_token_id: u64::from_be_bytes(t.try_into().map_err(|_| "counters")?),
                }
            }
            RecordKind::Account => Record::Account(AccountRecord::decode(bytes).map_err(e)?),
            RecordKind::Resource => Record::Resource(ResourceRecord::decode(bytes).map_err(e)?),
            RecordKind::Token => Record::Token(TokenRecord::decode(bytes).map_err(e)?),
            RecordKind::Audit => Record::Audit(AuditRecord::decode(bytes).map_err(e)?),
        })
    }
}

/// Counts per kind and a checksum of the records, independent of the
/// order a backend reads them in: per kind, the sum (mod 2^256, as four
/// wrapping u64 lanes) of BLAKE3 over the kind's tag and the record's
/// bytes. Two stores with the same tally hold the same records (a record
/// changed, missing or added changes its kind's sum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Records per kind, in [`RecordKind::ALL`] order.
    pub counts: [u64; 5],
    /// Checksum per kind.
    sums: [[u64; 4]; 5],
}

impl Tally {
    /// Counts `record`.
    pub fn add(&mut self, record: &Record) {
        self.add_encoded(record.kind(), &record.encode());
    }

    /// Counts a record of `kind` whose bytes ([`Record::encode`]) are
    /// `bytes`: the same as [`Tally::add`] without encoding it again.
    pub fn add_encoded(&mut self, kind: RecordKind, bytes: &[u8]) {
        let tag = kind.tag();
        let kind = kind as usize;
        let mut h = blake3::Hasher::new();
        h.update(&[tag]);
        h.update(bytes);
        let hash = h.finalize();
        let sum = &mut self.sums[kind];
        for (lane, part) in sum.iter_mut().zip(hash.as_bytes().chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(part);
            *lane = lane.wrapping_add(u64::from_le_bytes(b));
        }
        self.counts[kind] += 1;
    }

    /// Counts a record of `kind` without its checksum (a reader that only
    /// needs the counts the trailer states).
    pub fn count(&mut self, kind: RecordKind) {
        self.counts[kind as usize] += 1;
    }

    /// Records in all.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The checksum of every kind, as hex (BLAKE3 of the per-kind sums).
    pub fn checksum(&self) -> String {
        let mut h = blake3::Hasher::new();
        for (count, sum) in self.counts.iter().zip(&self.sums) {
            h.update(&count.to_le_bytes());
            for lane in sum {
                h.update(&lane.to_le_bytes());
            }
        }
        h.finalize().to_hex().to_string()
    }

    /// "1 counters, 3 accounts, ..." for messages.
    pub fn describe(&self) -> String {
        let plural = |k: RecordKind| match k {
            RecordKind::Counters => "counters",
            RecordKind::Account => "accounts",
            RecordKind::Resource => "resources",
            RecordKind::Token => "tokens",
            RecordKind::Audit => "audit events",
        };
        RecordKind::ALL
            .iter()
            .map(|k| format!("{} {}", self.counts[*k as usize], plural(*k)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Ok if `other` (the destination) holds the same records; Err names
    /// the kinds that differ.
    pub fn check(&self, other: &Tally) -> Result<(), String> {
        let differ: Vec<String> = RecordKind::ALL
            .iter()
            .filter(|k| {
                let i = **k as usize;
                self.counts[i] != other.counts[i] || self.sums[i] != other.sums[i]
            })
            .map(|k| {
                let i = *k as usize;
                format!(
                    "{}: {} in the source, {} in the destination{}",
                    k.name(),
                    self.counts[i],
                    other.counts[i],
                    if self.counts[i] == other.counts[i] {
                        " (same count, different records)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        if differ.is_empty() {
            Ok(())
        } else {
            Err(differ.join("; "))
        }
    }
}

/// A store's records read in chunks, at one instant (sled: the caller
/// keeps writers out; PostgreSQL: one REPEATABLE READ snapshot).
pub trait Export: Send {
    /// Records in all (for progress), counted in the same snapshot.
    fn total(&self) -> u64;
    /// The next chunk of at most [`CHUNK`] records; empty at the end.
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Vec<Record>, StoreError>>;
}

/// Records written into an empty store. Until [`Import::finish`] succeeds
/// the destination is unusable (sled: keyward refuses to start on it;
/// PostgreSQL: nothing is committed).
pub trait Import: Send {
    /// Writes `records`.
    fn put(&mut self, records: Vec<Record>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Makes everything durable, reads the destination back and checks it
    /// against `expected` (the source's tally); only then marks it usable.
    /// Returns the destination's tally.
    fn finish(self: Box<Self>, expected: Tally) -> BoxFuture<'static, Result<Tally, StoreError>>;
}

/// Reads `export` to the end, tallying it.
pub async fn tally_of(export: &mut dyn Export) -> Result<Tally, StoreError> {
    let mut tally = Tally::default();
    loop {
        let chunk = export.next_chunk().await?;
        if chunk.is_empty() {
            return Ok(tally);
        }
        for r in &chunk {
            tally.add(r);
        }
    }
}

/// The error of a destination whose read-back differs from the source.
pub(crate) fn verify_failed(what: &str, why: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "verification failed: {what} does not hold the records copied into it ({why})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tally ignores order, and sees a changed record with the same
    /// count.
    #[test]
    fn tally_is_order_free_and_sees_a_change() {
        let t = |id, name: &str| {
            Record::Token(TokenRecord {
                id,
                name: name.into(),
                ..Default::default()
            })
        };
        let (mut a, mut b, mut c) = (Tally::default(), Tally::default(), Tally::default());
        for r in [t(1, "a"), t(2, "b")] {
            a.add(&r);
        }
        for r in [t(2, "b"), t(1, "a")] {
            b.add(&r);
        }
        for r in [t(1, "a"), t(2, "c")] {
            c.add(&r);
        }
        assert_eq!(a, b);
        assert!(a.check(&b).is_ok());
        let e = a.check(&c).expect_err("a changed record");
        assert!(e.contains("same count, different records"), "{e}");
    }

    /// A token record decoded into a spare one's allocations is exactly
    /// what a fresh decode gives: nothing of the spare is left over, not
    /// a field the new record leaves out nor an element of a list.
    #[test]
    fn decoding_into_a_spare_record_leaves_nothing_of_it() {
        use crate::pb::store::{GrantRecord, RateLimitRecord};
        let full = TokenRecord {
            id: 1,
            account_id: 2,
            name: "a long name that needs an allocation".into(),
            phc_hash: "$argon2id$v=19$m=19456,t=2,p=1$x$y".into(),
            last_4_digits: "abcd".into(),
            created_by: "root".into(),
            expires_at_ms: 9,
            paused: true,
            grants: vec![GrantRecord::default(); 3],
            rate_limits: vec![RateLimitRecord::default()],
            rate_full_at_ms: vec![1, 2],
            verified_digest: vec![7; 32],
            last_used_by: "node".into(),
            root: true,
            ..Default::default()
        };
        let sparse = TokenRecord {
            id: 3,
            name: "b".into(),
            grants: vec![GrantRecord {
                resource_id: "x".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = sparse.encode_to_vec();
        let spare = Some(Record::Token(full));
        let Record::Token(reused) =
            Record::decode_reusing(RecordKind::Token, &bytes, spare).expect("decodes")
        else {
            panic!("a token record")
        };
        assert_eq!(reused, sparse);
        assert!(Record::decode_reusing(RecordKind::Token, &[0xff], None).is_err());
    }

    /// A record's Debug never shows its hash.
    #[test]
    fn debug_is_the_key_only() {
        let r = Record::Token(TokenRecord {
            id: 7,
            phc_hash: "$argon2id$secret-ish".into(),
            ..Default::default()
        });
        assert_eq!(format!("{r:?}"), "token id 7");
    }
}
