//! Leak reports from GitHub's secret-scanning partner program, the parts
//! that need no engine: the keys file (GitHub's `{"public_keys": [...]}`
//! JSON of PEM ECDSA P-256 keys, [`KeySet`]), re-read when it changes
//! ([`KeysFile`]); the signature over a report's raw body
//! ([`KeySet::verify`]); the report's items ([`parse_report`]); the replay
//! window ([`ReplayGuard`]); and what an audit event may repeat of a
//! report ([`clean_text`]).
//!
//! No error or log line repeats a reported string: items have a redacted
//! `Debug`, and errors name item indexes and fields, never values.
//!
//! Layer L2: imports only `token` (the vocabulary).

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use parking_lot::Mutex;
use serde_json::Value;

#[cfg(test)]
mod tests;

/// Largest report body, in bytes (larger: 413).
pub const BODY_MAX: usize = 1024 * 1024;
/// Most items in one report (more: 422).
pub const ITEMS_MAX: usize = 1000;
/// How long an accepted body is remembered: the same body again within it
/// is a replay (401).
pub const REPLAY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Most bodies remembered; past it the oldest is forgotten first.
pub const REPLAY_MAX: usize = 100_000;
/// Longest `Github-Public-Key-Identifier` considered (longer: unknown key).
pub const KEY_ID_MAX: usize = 256;
/// Longest `Github-Public-Key-Signature` considered: a DER P-256 signature
/// is at most 72 bytes, 96 in base64.
pub const SIGNATURE_MAX: usize = 256;
/// Most characters of a report's `url` kept in an audit event.
pub const URL_MAX: usize = 300;
/// Most characters of a report's `source` (and `type`) kept in an audit event.
pub const SOURCE_MAX: usize = 64;

/// The public keys reports must be signed with, by key identifier.
/// `Debug` lists the identifiers only.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<(String, VerifyingKey)>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(id, _)| id))
            .finish()
    }
}

/// Why a report is refused before its items are looked at (each is a 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A signature header is missing (or not visible ASCII).
    Unsigned,
    /// No key in the file has this identifier.
    UnknownKey,
    /// The signature is not base64 of a DER ECDSA signature.
    BadEncoding,
    /// The signature does not verify over the body with the named key.
    BadSignature,
    /// This body was accepted already, within [`REPLAY_WINDOW`].
    Replay,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Unsigned => "unsigned",
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadEncoding => "bad_encoding",
            Refusal::BadSignature => "bad_signature",
            Refusal::Replay => "replay",
        }
    }

    /// What the sender is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Unsigned => {
                "the Github-Public-Key-Identifier and Github-Public-Key-Signature headers are required"
            }
            Refusal::UnknownKey => "unknown Github-Public-Key-Identifier",
            Refusal::BadEncoding => {
                "Github-Public-Key-Signature must be base64 of a DER ECDSA signature"
            }
            Refusal::BadSignature => "the signature does not verify over the body",
            Refusal::Replay => "this report was accepted already",
        }
    }
}

impl KeySet {
    /// Parses GitHub's keys JSON. Err names the entry (index and
    /// identifier) and what is wrong with it, never key material.
    pub fn parse(text: &str) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let entries = doc
            .get("public_keys")
            .and_then(Value::as_array)
            .ok_or("expected {\"public_keys\": [...]}")?;
        if entries.is_empty() {
            return Err("\"public_keys\" is empty: a report could never verify".into());
        }
        let mut keys: Vec<(String, VerifyingKey)> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let id = entry
                .get("key_identifier")
                .and_then(Value::as_str)
                .filter(|id| {
                    !id.is_empty() && id.len() <= KEY_ID_MAX && id.bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or_else(|| {
                    format!(
                        "public_keys[{i}]: \"key_identifier\" must be 1..{KEY_ID_MAX} visible ASCII characters"
                    )
                })?;
            let at = format!("public_keys[{i}] (key_identifier {id:?})");
            if keys.iter().any(|(known, _)| known == id) {
                return Err(format!("{at}: the identifier appears twice"));
            }
            let pem = entry
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}: \"key\" must be a PEM string"))?;
            let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|_| {
                format!("{at}: \"key\" is not a PEM public key (SPKI) on the P-256 curve")
            })?;
            if entry
                .get("is_current")
                .is_some_and(|v| !v.is_boolean() && !v.is_null())
            {
                return Err(format!("{at}: \"is_current\" must be true or false"));
            }
            keys.push((id.to_string(), key));
        }
        Ok(KeySet { keys })
    }

    /// Reads and parses the keys file at `path`; Err names the flag and
    /// the file.
    pub fn load(path: &Path) -> Result<KeySet, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--leak-report-keys {}: {e}", path.display()))?;
        KeySet::parse(&text).map_err(|e| format!("--leak-report-keys {}: {e}", path.display()))
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a report's signature headers against `body`: the key named
    /// by `key_id`, `signature` base64 of a DER ECDSA P-256 SHA-256
    /// signature over the raw body bytes. Every key in the file counts,
    /// current or not (GitHub's rotation keeps the previous key listed
    /// while reports signed with it may still arrive).
    pub fn verify(
        &self,
        key_id: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let (Some(key_id), Some(signature)) = (key_id, signature) else {
            return Err(Refusal::Unsigned);
        };
        let key = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id.trim())
            .map(|(_, key)| key)
            .ok_or(Refusal::UnknownKey)?;
        let signature = signature.trim();
        if signature.len() > SIGNATURE_MAX {
            return Err(Refusal::BadEncoding);
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .map_err(|_| Refusal::BadEncoding)?;
        let signature = DerSignature::from_bytes(&der).map_err(|_| Refusal::BadEncoding)?;
        key.verify(body, &signature)
            .map_err(|_| Refusal::BadSignature)
    }
}

/// The identity of a file's content on disk: a change of either means a
/// new file.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The keys file in force: loaded and checked at start ([`KeysFile::open`]),
/// re-read when its modification time or size changes (looked at on each
/// report: one `stat`). A changed file that does not load leaves the keys
/// in force and logs one warning per change.
#[derive(Debug)]
pub struct KeysFile {
    path: PathBuf,
    state: Mutex<(Stamp, Arc<KeySet>)>,
}

impl KeysFile {
    /// Loads the file; Err names the flag, the file and the bad entry.
    pub fn open(path: &Path) -> Result<KeysFile, String> {
        let before = stamp(path);
        let keys = KeySet::load(path)?;
        Ok(KeysFile {
            path: path.to_path_buf(),
            state: Mutex::new((before, Arc::new(keys))),
        })
    }

    /// The keys in force, re-read first if the file changed.
    pub fn current(&self) -> Arc<KeySet> {
        let now = stamp(&self.path);
        let mut state = self.state.lock();
        if now != state.0 {
            state.0 = now;
            match KeySet::load(&self.path) {
                Ok(keys) => {
                    tracing::info!(keys = keys.len(), "leak report keys reloaded");
                    state.1 = Arc::new(keys);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leak report keys not reloaded; the previous keys stay");
                }
            }
        }
        state.1.clone()
    }
}

/// One reported string. `Debug` never prints the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Item {
    /// The string GitHub matched (echoed back as `token_raw`).
    pub token: String,
    /// The pattern's type (echoed back as `token_type`).
    pub kind: String,
    /// Where it was found.
    pub url: String,
    /// What kind of place (`content`, `commit`, `issue_comment`, ...).
    pub source: String,
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Item")
            .field("token", &"REDACTED")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Why a signed report's body cannot be judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportError {
    /// Not JSON, or not an array (400).
    Malformed(String),
    /// An item is not `{"token": "...", ...}` with string fields (422).
    BadItem(String),
    /// More than [`ITEMS_MAX`] items (422).
    TooManyItems(usize),
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::Malformed(m) | ReportError::BadItem(m) => f.write_str(m),
            ReportError::TooManyItems(n) => write!(
                f,
                "{n} items: a report may hold at most {ITEMS_MAX}; send the rest in another"
            ),
        }
    }
}

/// Parses a report body: a JSON array of `{"token", "type", "url",
/// "source"}` objects (`token` required, the others strings when present,
/// other fields ignored), at most [`ITEMS_MAX`].
pub fn parse_report(body: &[u8]) -> Result<Vec<Item>, ReportError> {
    // serde_json's syntax errors name a position, never the input.
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| ReportError::Malformed(format!("the body is not valid JSON: {e}")))?;
    let Value::Array(entries) = doc else {
        return Err(ReportError::Malformed(
            "the body must be a JSON array of {\"token\", \"type\", \"url\", \"source\"}".into(),
        ));
    };
    if entries.len() > ITEMS_MAX {
        return Err(ReportError::TooManyItems(entries.len()));
    }
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let Value::Object(mut map) = entry else {
                return Err(ReportError::BadItem(format!("[{i}]: must be an object")));
            };
            let mut field = |name: &str, required: bool| match map.remove(name) {
                Some(Value::String(s)) => Ok(s),
                None | Some(Value::Null) if !required => Ok(String::new()),
                None | Some(Value::Null) => {
                    Err(ReportError::BadItem(format!("[{i}].{name}: is required")))
                }
                Some(_) => Err(ReportError::BadItem(format!(
                    "[{i}].{name}: must be a string"
                ))),
            };
            Ok(Item {
                token: field("token", true)?,
                kind: field("type", false)?,
                url: field("url", false)?,
                source: field("source", false)?,
            })
        })
        .collect()
}

/// The bodies accepted within [`REPLAY_WINDOW`], by digest, at most
/// [`REPLAY_MAX`] (the oldest forgotten first). Keyed on the body alone,
/// not the signature: an ECDSA signature can be altered into another
/// valid one for the same body (s into n - s), so a replayer could
/// otherwise pass a signature-keyed guard.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: i64,
    max: usize,
    seen: Mutex<Seen>,
}

/// Accepted bodies: (when, digest) oldest first, and the digests.
type Seen = (VecDeque<(i64, [u8; 32])>, HashSet<[u8; 32]>);

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(REPLAY_WINDOW, REPLAY_MAX)
    }
}

impl ReplayGuard {
    /// A guard remembering bodies for `window`, at most `max` of them.
    pub fn new(window: Duration, max: usize) -> ReplayGuard {
        ReplayGuard {
            window_ms: crate::clock::duration_ms(window),
            max: max.max(1),
            seen: Mutex::new((VecDeque::new(), HashSet::new())),
        }
    }

    fn digest(body: &[u8]) -> [u8; 32] {
        *blake3::hash(body).as_bytes()
    }

    /// Records `body` as accepted at `now_ms`; false if it was accepted
    /// already within the window (a replay: nothing is recorded).
    pub fn admit(&self, body: &[u8], now_ms: i64) -> bool {
        let digest = Self::digest(body);
        let mut guard = self.seen.lock();
        let (order, set) = &mut *guard;
        while let Some(&(at, old)) = order.front() {
            if at.saturating_add(self.window_ms) > now_ms && order.len() < self.max {
                break;
            }
            order.pop_front();
            set.remove(&old);
        }
        if !set.insert(digest) {
            return false;
        }
        order.push_back((now_ms, digest));
        true
    }

    /// Forgets `body` (a report that could not be judged: its retry must
    /// be accepted).
    pub fn forget(&self, body: &[u8]) {
        let digest = Self::digest(body);
        let mut guard = self.seen.lock();
        let (order, set) = &mut *guard;
        if set.remove(&digest) {
            order.retain(|(_, d)| *d != digest);
        }
    }

    /// Bodies remembered now.
    pub fn len(&self) -> usize {
        self.seen.lock().1.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `text` as an audit event may carry it: control characters dropped, then
/// any keyward token in it replaced by `[token]`, at most `max` characters
/// (then `…`).
pub fn clean_text(text: &str, max: usize) -> String {
    let visible: String = text.chars().filter(|c| !c.is_control()).collect();
    let mut out = String::new();
    let mut rest = visible.as_str();
    while let Some(at) = rest.find(crate::token::PREFIX) {
        out.push_str(&rest[..at]);
        let candidate = rest.get(at..at + crate::token::TOKEN_LEN);
        if candidate.is_some_and(|c| crate::token::parse(c).is_some()) {
            out.push_str("[token]");
            rest = &rest[at + crate::token::TOKEN_LEN..];
        } else {
            out.push_str(crate::token::PREFIX);
            rest = &rest[at + crate::token::PREFIX.len()..];
        }
    }
    out.push_str(rest);
    let mut kept: String = out.chars().take(max).collect();
    if out.chars().nth(max).is_some() {
        kept.push('…');
    }
    kept
}
