//! The backup file (`keyward store backup`): a versioned header, every
//! record of a store, and a trailer with the counts per kind and a BLAKE3
//! checksum of everything before it. Records are the store's own bytes:
//! hashes and verified digests, never a secret.
//!
//! ```text
//! "KWBACKUP"  version u32 BE (1)  header length u32 BE  header
//!   header: created_at_ms i64 BE, source (u8 length + UTF-8),
//!           digest key id (u8 length + bytes),
//!           [a follower's state file only: epoch u64 BE, revision u64 BE]
//! record*:    tag u8 (1 counters, 2 account, 3 resource, 4 token,
//!             5 audit event)  length u32 BE  bytes
//! trailer:    tag 0  count per kind (5 x u64 BE)  BLAKE3 (32 bytes) of
//!             every byte before it
//! ```
//!
//! The same format holds a follower's state (`follower.state` in its data
//! dir, source `follower`): its index as records (no audit events) and,
//! in the header, where it stands in its primary's stream ([`Position`]).
//!
//! A reader refuses a damaged file (unknown version, truncated, a record
//! that does not decode, wrong counts, a bad checksum, bytes after the
//! trailer), naming the record (its number, kind and offset). May import
//! what `store` may.

use std::io::{self, Read, Write};

use super::records::{Export, Record, RecordKind, Tally, CHUNK};
use super::{corrupt, BoxFuture, StoreError};

/// First bytes of a backup file.
pub const MAGIC: &[u8; 8] = b"KWBACKUP";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Largest record a reader accepts (a token record is well under 4 KiB).
const RECORD_MAX: u32 = 1 << 20;

/// What a backup file says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// When the snapshot was taken (unix ms).
    pub created_at_ms: i64,
    /// What it was taken from ("sled", "postgres"), at most 255 bytes.
    pub source: String,
    /// The fingerprint of the digest key the stored digests are made with
    /// (empty if unknown): nodes serving a restored store need that key.
    pub digest_key_id: Vec<u8>,
    /// A follower's state file: the epoch and revision of its primary's
    /// stream the records are at (none in a backup).
    pub position: Option<Position>,
}

/// Where a follower's state stands in its primary's commit stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The primary's epoch (a random id per primary process, or a
    /// PostgreSQL database's cluster id).
    pub epoch: u64,
    /// The last revision of that epoch the records hold.
    pub revision: u64,
}

/// Why a backup file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or writing failed.
    #[error("backup file: {0}")]
    Io(#[from] io::Error),
    /// The file is not a backup this keyward reads, or is damaged.
    #[error("damaged backup file: {0}")]
    Damaged(String),
}

/// BLAKE3 over many small pieces (a record's tag, length and bytes),
/// hashed in large batches: fed piece by piece, BLAKE3 compresses one
/// 1 KiB chunk at a time; fed 64 KiB at once, it hashes many chunks in
/// parallel lanes (SIMD). Same checksum either way.
struct BatchHasher {
    hasher: blake3::Hasher,
    pending: Vec<u8>,
}

/// Bytes gathered before they are hashed.
const HASH_BATCH: usize = 64 * 1024;

impl BatchHasher {
    fn new() -> Self {
        BatchHasher {
            hasher: blake3::Hasher::new(),
            pending: Vec::with_capacity(HASH_BATCH),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        if self.pending.len() + bytes.len() > HASH_BATCH {
            self.hasher.update(&self.pending);
            self.pending.clear();
        }
        if bytes.len() >= HASH_BATCH {
            self.hasher.update(bytes);
        } else {
            self.pending.extend_from_slice(bytes);
        }
    }

    fn finalize(&mut self) -> blake3::Hash {
        self.hasher.update(&self.pending);
        self.pending.clear();
        self.hasher.finalize()
    }
}

/// Writes a backup file.
pub struct ArchiveWriter<W: Write> {
    out: W,
    hasher: BatchHasher,
    tally: Tally,
    /// Whether the tally keeps each record's checksum (only the counts go
    /// in the file; the checksums are what a backup is verified with).
    sums: bool,
}

impl<W: Write> ArchiveWriter<W> {
    /// Starts the file with its magic, version and `header`.
    pub fn new(out: W, header: &Header) -> io::Result<Self> {
        let mut w = ArchiveWriter {
            out,
            hasher: BatchHasher::new(),
            tally: Tally::default(),
            sums: true,
        };
        let mut h = Vec::new();
        h.extend_from_slice(&header.created_at_ms.to_be_bytes());
        for field in [header.source.as_bytes(), &header.digest_key_id] {
            let n = u8::try_from(field.len())
                .map_err(|_| io::Error::other("header field over 255 bytes"))?;
            h.push(n);
            h.extend_from_slice(field);
        }
        if let Some(p) = header.position {
            h.extend_from_slice(&p.epoch.to_be_bytes());
            h.extend_from_slice(&p.revision.to_be_bytes());
        }
        w.put(MAGIC)?;
        w.put(&VERSION.to_be_bytes())?;
        w.put(&u32::try_from(h.len()).unwrap_or(u32::MAX).to_be_bytes())?;
        w.put(&h)?;
        Ok(w)
    }

    /// The tally it returns holds the counts only, not the records'
    /// checksums (a follower's state: a record's checksum costs a hash).
    pub fn counting_only(mut self) -> Self {
        self.sums = false;
        self
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)
    }

    /// Appends one record.
    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        let bytes = record.encode();
        let n = u32::try_from(bytes.len())
            .ok()
            .filter(|n| *n <= RECORD_MAX)
            .ok_or_else(|| io::Error::other(format!("{record:?} is over {RECORD_MAX} bytes")))?;
        if self.sums {
            self.tally.add_encoded(record.kind(), &bytes);
        } else {
            self.tally.count(record.kind());
        }
        self.put(&[record.kind().tag()])?;
        self.put(&n.to_be_bytes())?;
        self.put(&bytes)
    }

    /// Writes the trailer; returns the output and what was written.
    pub fn finish(mut self) -> io::Result<(W, Tally)> {
        self.put(&[0])?;
        for n in self.tally.counts {
            self.put(&n.to_be_bytes())?;
        }
        let sum = self.hasher.finalize();
        self.out.write_all(sum.as_bytes())?;
        self.out.flush()?;
        Ok((self.out, self.tally))
    }
}

/// Reads a backup file, record by record, checking everything.
pub struct ArchiveReader<R: Read> {
    inp: R,
    hasher: BatchHasher,
    /// Bytes read so far.
    offset: u64,
    /// Records read so far.
    records: u64,
    tally: Tally,
    header: Header,
    done: bool,
    /// Whether the tally keeps each record's checksum.
    sums: bool,
    /// The bytes of the record being read (reused).
    buf: Vec<u8>,
}

fn damaged(what: impl Into<String>) -> ArchiveError {
    ArchiveError::Damaged(what.into())
}

impl<R: Read> ArchiveReader<R> {
    /// Reads and checks the magic, the version and the header.
    pub fn open(inp: R) -> Result<Self, ArchiveError> {
        let mut r = ArchiveReader {
            inp,
            hasher: BatchHasher::new(),
            offset: 0,
            records: 0,
            tally: Tally::default(),
            header: Header::default(),
            done: false,
            sums: true,
            buf: Vec::new(),
        };
        let mut magic = [0u8; 8];
        r.take(&mut magic, || "the header".into())?;
        if &magic != MAGIC {
            return Err(damaged("not a keyward backup file (no KWBACKUP magic)"));
        }
        let version = u32::from_be_bytes(r.array(|| "the header".into())?);
        if version != VERSION {
            return Err(damaged(format!(
                "format version {version} is not one this keyward reads (it reads {VERSION})"
            )));
        }
        let len = u32::from_be_bytes(r.array(|| "the header".into())?);
        if len > 1024 {
            return Err(damaged(format!("a header of {len} bytes")));
        }
        let mut h = vec![0u8; len as usize];
        r.take(&mut h, || "the header".into())?;
        r.header = parse_header(&h).ok_or_else(|| damaged("the header does not decode"))?;
        Ok(r)
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The tally holds the counts only, not the records' checksums (a
    /// follower's state: the trailer states counts, and a record's
    /// checksum costs encoding it again and a hash).
    pub fn counting_only(mut self) -> Self {
        self.sums = false;
        self
    }

    /// Reads `buf` whole; `inside` names what was being read when the
    /// file ends early.
    fn take(
        &mut self,
        buf: &mut [u8],
        inside: impl FnOnce() -> String,
    ) -> Result<(), ArchiveError> {
        match self.inp.read_exact(buf) {
            Ok(()) => {
                self.hasher.update(buf);
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(damaged(format!(
                "truncated: the file ends at or after offset {} inside {} (after {} \
                 complete records)",
                self.offset,
                inside(),
                self.records
            ))),
            Err(e) => Err(e.into()),
        }
    }

    fn array<const N: usize>(
        &mut self,
        inside: impl FnOnce() -> String,
    ) -> Result<[u8; N], ArchiveError> {
        let mut b = [0u8; N];
        self.take(&mut b, inside)?;
        Ok(b)
    }

    /// The next record; None once the trailer is read and checked (counts,
    /// checksum, end of file).
    pub fn next_record(&mut self) -> Result<Option<Record>, ArchiveError> {
        self.next_record_reusing(None)
    }

    /// As [`ArchiveReader::next_record`], decoding into `spare`'s
    /// allocations ([`Record::decode_reusing`]).
    pub fn next_record_reusing(
        &mut self,
        spare: Option<Record>,
    ) -> Result<Option<Record>, ArchiveError> {
        if self.done {
            return Ok(None);
        }
        let at = self.offset;
        let n = self.records + 1;
        let [tag] = self.array::<1>(|| format!("record #{n}"))?;
        if tag == 0 {
            return self.trailer().map(|()| None);
        }
        let kind = RecordKind::from_tag(tag).ok_or_else(|| {
            damaged(format!(
                "record #{n} at offset {at}: unknown kind tag {tag}"
            ))
        })?;
        let inside = || format!("record #{n} ({})", kind.name());
        let len = u32::from_be_bytes(self.array(inside)?);
        if len > RECORD_MAX {
            return Err(damaged(format!(
                "record #{n} ({}) at offset {at}: length {len} is over {RECORD_MAX}",
                kind.name()
            )));
        }
        let mut bytes = std::mem::take(&mut self.buf);
        bytes.resize(len as usize, 0);
        let read = self.take(&mut bytes, inside);
        let record = read.and_then(|()| {
            Record::decode_reusing(kind, &bytes, spare).map_err(|e| {
                damaged(format!(
                    "record #{n} ({}) at offset {at} does not decode: {e}",
                    kind.name()
                ))
            })
        });
        self.buf = bytes;
        let record = record?;
        self.records = n;
        if self.sums {
            self.tally.add(&record);
        } else {
            self.tally.count(kind);
        }
        Ok(Some(record))
    }

    fn trailer(&mut self) -> Result<(), ArchiveError> {
        let mut counts = [0u64; 5];
        for c in &mut counts {
            *c = u64::from_be_bytes(self.array(|| "the trailer".into())?);
        }
        let expected = self.hasher.finalize();
        let mut sum = [0u8; 32];
        self.inp.read_exact(&mut sum).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                damaged(format!(
                    "truncated: the checksum at offset {} is cut short",
                    self.offset
                ))
            } else {
                e.into()
            }
        })?;
        if counts != self.tally.counts {
            return Err(damaged(format!(
                "the trailer counts {counts:?} records per kind, the file holds {:?}",
                self.tally.counts
            )));
        }
        if expected.as_bytes() != &sum {
            return Err(damaged(format!(
                "checksum mismatch: the BLAKE3 of bytes 0..{} is not the one stored after them \
                 (some byte of the header or of the {} records was changed)",
                self.offset, self.records
            )));
        }
        let mut extra = [0u8; 1];
        if self.inp.read(&mut extra)? != 0 {
            return Err(damaged(format!(
                "bytes after the checksum at offset {}",
                self.offset + 32
            )));
        }
        self.done = true;
        Ok(())
    }

    /// What was read so far (all of it once `next_record` returned None).
    pub fn tally(&self) -> Tally {
        self.tally
    }
}

fn parse_header(h: &[u8]) -> Option<Header> {
    let (at, rest) = h.split_at_checked(8)?;
    let created_at_ms = i64::from_be_bytes(at.try_into().ok()?);
    let (&n, rest) = rest.split_first()?;
    let (source, rest) = rest.split_at_checked(usize::from(n))?;
    let (&n, rest) = rest.split_first()?;
    let (key, rest) = rest.split_at_checked(usize::from(n))?;
    let position = match rest.len() {
        0 => None,
        16 => {
            let (epoch, revision) = rest.split_at(8);
            Some(Position {
                epoch: u64::from_be_bytes(epoch.try_into().ok()?),
                revision: u64::from_be_bytes(revision.try_into().ok()?),
            })
        }
        _ => return None,
    };
    Some(Header {
        created_at_ms,
        source: String::from_utf8(source.to_vec()).ok()?,
        digest_key_id: key.to_vec(),
        position,
    })
}

/// Writes every record of `export` after `header` into `out`, calling
/// `progress` with the records written so far after each chunk; returns
/// the output and what was written.
pub async fn write_export<W: Write>(
    export: &mut dyn Export,
    header: &Header,
    out: W,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<(W, Tally), StoreError> {
    let io = |e: io::Error| corrupt("backup file", e);
    let mut w = ArchiveWriter::new(out, header).map_err(io)?;
    let mut done = 0u64;
    loop {
        let chunk = export.next_chunk().await?;
        if chunk.is_empty() {
            break;
        }
        for r in &chunk {
            w.write(r).map_err(io)?;
        }
        done += chunk.len() as u64;
        progress(done);
    }
    w.finish().map_err(io)
}

/// Reads a whole file, checking every record and the trailer: the header
/// and the tally, or what is damaged.
pub fn verify(inp: impl Read) -> Result<(Header, Tally), ArchiveError> {
    let mut r = ArchiveReader::open(inp)?;
    while r.next_record()?.is_some() {}
    Ok((r.header.clone(), r.tally))
}

/// A verified backup file's records as an [`Export`] (a restore's second
/// pass).
pub struct ArchiveExport {
    reader: Option<ArchiveReader<io::BufReader<std::fs::File>>>,
    total: u64,
}

impl ArchiveExport {
    /// Opens `file`, which holds `total` records (from [`verify`]).
    pub fn new(file: std::fs::File, total: u64) -> Result<Self, ArchiveError> {
        Ok(ArchiveExport {
            reader: Some(ArchiveReader::open(io::BufReader::new(file))?),
            total,
        })
    }
}

impl Export for ArchiveExport {
    fn total(&self) -> u64 {
        self.total
    }

    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Vec<Record>, StoreError>> {
        Box::pin(async move {
            let Some(mut reader) = self.reader.take() else {
                return Ok(Vec::new());
            };
            let (reader, out) = tokio::task::spawn_blocking(move || {
                let mut out = Vec::with_capacity(CHUNK);
                while out.len() < CHUNK {
                    match reader.next_record() {
                        Ok(Some(r)) => out.push(r),
                        Ok(None) => break,
                        Err(e) => return (reader, Err(corrupt("backup file", e))),
                    }
                }
                (reader, Ok(out))
            })
            .await
            .map_err(|e| corrupt("restore task", e))?;
            self.reader = Some(reader);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::store::TokenRecord;

    fn file(n: u64) -> Vec<u8> {
        let header = Header {
            created_at_ms: 5,
            source: "sled".into(),
            digest_key_id: vec![1, 2, 3],
            position: None,
        };
        let mut w = ArchiveWriter::new(Vec::new(), &header).expect("header");
        for id in 1..=n {
            w.write(&Record::Token(TokenRecord {
                id,
                ..Default::default()
            }))
            .expect("record");
        }
        w.finish().expect("trailer").0
    }

    /// What is written reads back, header and records, and verifies.
    #[test]
    fn batched_hashing_is_the_plain_checksum() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = BatchHasher::new();
        let mut at = 0;
        // Pieces of every size, one larger than a batch.
        for n in (1..400).chain([HASH_BATCH + 7]).cycle() {
            let end = (at + n).min(data.len());
            h.update(&data[at..end]);
            at = end;
            if at == data.len() {
                break;
            }
        }
        assert_eq!(h.finalize(), blake3::hash(&data));
    }

    #[test]
    fn round_trip() {
        let (h, t) = verify(file(3).as_slice()).expect("verifies");
        assert_eq!(h.source, "sled");
        assert_eq!(h.digest_key_id, vec![1, 2, 3]);
        assert_eq!(t.counts[RecordKind::Token as usize], 3);
        assert_eq!(h.position, None);
    }

    /// A follower's position in the header reads back.
    #[test]
    fn a_position_round_trips() {
        let header = Header {
            created_at_ms: 5,
            source: "follower".into(),
            digest_key_id: vec![9; 8],
            position: Some(Position {
                epoch: u64::MAX - 1,
                revision: 42,
            }),
        };
        let f = ArchiveWriter::new(Vec::new(), &header)
            .expect("header")
            .finish()
            .expect("trailer")
            .0;
        let (h, _) = verify(f.as_slice()).expect("verifies");
        assert_eq!(h, header);
    }

    /// Every cut short file is refused as truncated, never read as whole.
    #[test]
    fn every_truncation_is_refused() {
        let f = file(3);
        for len in 0..f.len() {
            let e = verify(&f[..len]).expect_err("truncated");
            assert!(e.to_string().contains("truncated") || len < 8, "{len}: {e}");
        }
    }
}
