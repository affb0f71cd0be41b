//! Log lines that callers can cause, kept to a fixed budget.
//!
//! Every line a request can make keyward write (a denial, an internal
//! error) belongs to a category with a [`Limiter`]: at most
//! [`Limiter::burst`] lines per [`WINDOW`]; the rest are counted, and the
//! count is written as one line, `suppressed N log lines (CATEGORY) in the
//! last Xs`, when the category next logs in a later window. Caller-supplied
//! values in those lines are cut to [`VALUE_MAX`] bytes ([`clip`]) and
//! escaped by the formatter (none of them is ever a token). So whatever callers
//! send, keyward writes at most, per second and per category, `burst + 1`
//! lines of bounded length.
//!
//! Lock-free and cheap: three atomics per category, touched only by the
//! requests that log (denials and errors), never by an allowed Authorize.
//! Malformed and unknown tokens have a category of their own
//! ([`BAD_TOKENS`]), so a flood of garbage cannot hide the denials of real
//! tokens ([`DENIALS`]), which are usually a misconfigured client worth
//! seeing.
//!
//! It also builds the process's subscriber ([`subscriber`]): `RUST_LOG`
//! decides what is written, except that the dependencies whose verbose
//! records print stored data ([`CAPPED`]: sled's pages, tokio-postgres's
//! statement parameters, both holding token hashes as byte arrays) never log
//! above their cap, whatever `RUST_LOG` says ([`filter`]).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tracing::{Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::pb::v1::DenyReason;

/// The period over which each category's budget is counted.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Longest caller-supplied value (resource id, route) in a line, in bytes.
pub const VALUE_MAX: usize = 64;

/// Longest error message in a line, in bytes.
pub const MESSAGE_MAX: usize = 256;

/// Denials of malformed or unknown tokens (Authorize, AuthorizeBatch,
/// ext_authz Check): anyone can send them, at any rate.
pub static BAD_TOKENS: Limiter = Limiter::new("denials of malformed or unknown tokens", 10);

/// Denials of real tokens (expired, paused, no grant, scope, ...).
pub static DENIALS: Limiter = Limiter::new("denials", 10);

/// ext_authz requests refused for their path or method (the routes'
/// `Unsafe` match): anyone can send them, at any rate.
pub static UNSAFE_REQUESTS: Limiter = Limiter::new("refused ext_authz requests", 10);

/// Admin changes that succeeded (they are in the audit log too): a valid
/// admin's writes run at commit rate.
pub static ADMIN_CHANGES: Limiter = Limiter::new("admin changes", 20);

/// Internal errors answered to a caller (gRPC or REST): one failing store
/// must not turn every request into a log line.
pub static ERRORS: Limiter = Limiter::new_at(Level::ERROR, "internal errors", 10);

/// The category of a denial: malformed and unknown tokens apart from the
/// denials of real tokens.
pub fn limiter_for(reason: DenyReason) -> &'static Limiter {
    match reason {
        DenyReason::Malformed | DenyReason::UnknownToken => &BAD_TOKENS,
        _ => &DENIALS,
    }
}

/// A per-category line budget; see the module documentation.
#[derive(Debug)]
pub struct Limiter {
    /// Named in the suppression line, so an operator knows what was dropped.
    category: &'static str,
    /// The level of the category's lines, and of its suppression line.
    level: Level,
    /// Lines written per window; beyond it they are counted, not written.
    burst: u64,
    /// Start of the current window, in ns since [`epoch`].
    window_start: AtomicU64,
    /// Lines asked for in the current window (written while < `burst`).
    used: AtomicU64,
    /// Lines refused since the last suppression line.
    suppressed: AtomicU64,
}

/// What [`Limiter::admit_at`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    /// Whether the caller may write its line.
    pub write: bool,
    /// Lines suppressed in an earlier window and how long ago that window
    /// began (ns): to report now, once.
    pub report: Option<(u64, u64)>,
}

/// The process's time origin for [`Limiter`] windows.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Limiter {
    /// An info-level category with `burst` lines per window.
    pub const fn new(category: &'static str, burst: u64) -> Self {
        Self::new_at(Level::INFO, category, burst)
    }

    /// A category at `level` with `burst` lines per window.
    pub const fn new_at(level: Level, category: &'static str, burst: u64) -> Self {
        Limiter {
            category,
            level,
            burst,
            window_start: AtomicU64::new(0),
            used: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Lines written per window.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Whether the caller may write its line now. When lines of this
    /// category were suppressed in an earlier window, writes their count
    /// first (once).
    pub fn admit(&self) -> bool {
        let a = self.admit_at(now_ns());
        if let Some((lines, over_ns)) = a.report {
            self.report(lines, over_ns);
        }
        a.write
    }

    /// [`Limiter::admit`] at `now` (ns since the limiter's origin), without
    /// writing anything: the pure part, for tests.
    pub fn admit_at(&self, now: u64) -> Admit {
        let window = u64::try_from(WINDOW.as_nanos()).unwrap_or(u64::MAX);
        let start = self.window_start.load(Ordering::Acquire);
        let mut report = None;
        // One caller opens the next window (and reports the last ones).
        if now.saturating_sub(start) >= window
            && self
                .window_start
                .compare_exchange(start, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.used.store(0, Ordering::Release);
            let lines = self.suppressed.swap(0, Ordering::AcqRel);
            if lines > 0 {
                report = Some((lines, now - start));
            }
        }
        // Past the budget, only the count is touched.
        let write = self.used.load(Ordering::Relaxed) < self.burst
            && self.used.fetch_add(1, Ordering::AcqRel) < self.burst;
        if !write {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
        Admit { write, report }
    }

    fn report(&self, lines: u64, over_ns: u64) {
        let category = self.category;
        let secs = over_ns as f64 / 1e9;
        macro_rules! at {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    "suppressed {lines} log lines ({category}) in the last {secs:.1}s"
                )
            };
        }
        match self.level {
            Level::ERROR => at!(Level::ERROR),
            Level::WARN => at!(Level::WARN),
            Level::INFO => at!(Level::INFO),
            Level::DEBUG => at!(Level::DEBUG),
            _ => at!(Level::TRACE),
        }
    }
}

/// `value` cut to at most [`VALUE_MAX`] bytes (on a character boundary),
/// with `…` when cut. Record it as a `&str` field (`field = &*clip(v)`), so
/// the formatter quotes and escapes it.
pub fn clip(value: &str) -> Cow<'_, str> {
    clip_to(value, VALUE_MAX)
}

/// `value` cut to at most `max` bytes, as [`clip`].
pub fn clip_to(value: &str, max: usize) -> Cow<'_, str> {
    if value.len() <= max {
        return Cow::Borrowed(value);
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &value[..end]))
}

/// Dependencies whose verbose log records print what keyward stores, and
/// the most verbose level each may log at, whatever `RUST_LOG` says. A
/// target covers its submodules (`sled` covers `sled::pagecache::iobuf`).
///
/// - `sled` at debug and trace prints pages and tree nodes, keys and values
///   as decimal byte arrays: the token records, with their argon2 hashes. Its
///   warn and error lines name files, page ids and I/O errors; it has no
///   info lines.
/// - `tokio_postgres` at debug prints every statement's parameters (the
///   `bytea` records as byte arrays, the same hashes); its info lines are
///   the server's notices.
/// - `postgres_protocol`, `postgres_types` and `deadpool` (`deadpool.postgres`:
///   the pool; its warn lines are connection errors) log nothing above info
///   that holds a parameter, and are capped in case a later version does.
pub const CAPPED: &[(&str, Level)] = &[
    ("sled", Level::WARN),
    ("tokio_postgres", Level::INFO),
    ("postgres_protocol", Level::INFO),
    ("postgres_types", Level::INFO),
    ("deadpool", Level::INFO),
];

/// `RUST_LOG` when neither set nor valid.
pub const DEFAULT_DIRECTIVES: &str = "info";

/// What is logged: `directives` (`RUST_LOG` syntax; [`DEFAULT_DIRECTIVES`]
/// when `None` or invalid), and of that only what the [`CAPPED`] targets
/// allow. The two are separate filters that must both let a record through,
/// so no directive (`sled::tree=trace`, `[span]=trace`, `trace`) can raise a
/// capped target above its cap.
pub fn filter<S>(directives: Option<&str>) -> impl Filter<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let wanted = directives
        .and_then(|d| EnvFilter::try_new(d).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_DIRECTIVES));
    let caps = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(CAPPED.iter().copied());
    wanted.and(caps)
}

/// The subscriber the binary installs: human-readable lines to `writer`
/// (ANSI colours if `ansi`), filtered by [`filter`]`(directives)`. `log`
/// records (sled, tokio-postgres) reach it through `tracing-log` once it is
/// installed with `SubscriberInitExt::init`.
pub fn subscriber<W>(
    directives: Option<&str>,
    writer: W,
    ansi: bool,
) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .with_filter(filter(directives)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_window_writes_its_burst_then_counts_and_reports_once() {
        let l = Limiter::new("test", 3);
        let mut written = 0;
        for i in 0..1000 {
            let a = l.admit_at(SEC / 2 + i);
            assert_eq!(a.report, None);
            written += usize::from(a.write);
        }
        assert_eq!(written, 3);
        // The next window: written again, the 997 reported once.
        let a = l.admit_at(SEC / 2 + SEC + 7);
        assert!(a.write);
        assert_eq!(a.report, Some((997, SEC / 2 + SEC + 7)));
        let a = l.admit_at(SEC / 2 + SEC + 8);
        assert!(a.write);
        assert_eq!(a.report, None);
    }

    #[test]
    fn a_quiet_category_reports_nothing() {
        let l = Limiter::new("test", 2);
        assert_eq!(
            l.admit_at(10),
            Admit {
                write: true,
                report: None
            }
        );
        assert_eq!(
            l.admit_at(5 * SEC),
            Admit {
                write: true,
                report: None
            }
        );
    }

    #[test]
    fn threads_never_exceed_the_burst_in_a_window() {
        let l = std::sync::Arc::new(Limiter::new("test", 10));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    (0..10_000).filter(|_| l.admit_at(SEC / 2).write).count()
                })
            })
            .collect();
        let written: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(written, 10);
        let a = l.admit_at(2 * SEC);
        assert_eq!(a.report.map(|r| r.0), Some(40_000 - 10));
    }

    /// Everything a subscriber wrote.
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    /// What `subscriber(directives)` writes of one line per target and level
    /// (each line's text is `target@level`), inside a span `s`.
    fn written(directives: Option<&str>) -> String {
        let buf = Buf::default();
        tracing::subscriber::with_default(subscriber(directives, buf.clone(), false), || {
            let _s = tracing::info_span!("s", x = 1).entered();
            macro_rules! each_level {
                ($target:literal) => {
                    tracing::error!(target: $target, "{}@error", $target);
                    tracing::warn!(target: $target, "{}@warn", $target);
                    tracing::info!(target: $target, "{}@info", $target);
                    tracing::debug!(target: $target, "{}@debug", $target);
                    tracing::trace!(target: $target, "{}@trace", $target);
                };
            }
            each_level!("sled::pagecache::iobuf");
            each_level!("tokio_postgres::query");
            each_level!("postgres_protocol::message");
            each_level!("deadpool.postgres");
            each_level!("keyward::engine");
        });
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    /// No directive raises a capped target above its cap: not a global
    /// level, not the target itself, not a submodule (more specific than the
    /// cap), not a span or field filter.
    #[test]
    fn capped_targets_never_log_above_their_cap() {
        for d in [
            "trace",
            "sled=trace,tokio_postgres=trace,postgres_protocol=trace,deadpool=trace",
            "sled::pagecache::iobuf=trace,tokio_postgres::query=trace,deadpool.postgres=trace",
            "[s]=trace",
            "[s{x=1}]=trace",
            "sled[s]=trace,tokio_postgres[s]=trace",
            "off,sled=trace",
        ] {
            let out = written(Some(d));
            for line in [
                "sled::pagecache::iobuf@info",
                "sled::pagecache::iobuf@debug",
                "sled::pagecache::iobuf@trace",
                "tokio_postgres::query@debug",
                "tokio_postgres::query@trace",
                "postgres_protocol::message@debug",
                "deadpool.postgres@debug",
                "deadpool.postgres@trace",
            ] {
                assert!(!out.contains(line), "{d:?} let {line} through:\n{out}");
            }
        }
        // Up to the cap, the directives still decide.
        let out = written(Some("trace"));
        for line in [
            "sled::pagecache::iobuf@warn",
            "sled::pagecache::iobuf@error",
            "tokio_postgres::query@info",
            "deadpool.postgres@info",
            "keyward::engine@trace",
        ] {
            assert!(out.contains(line), "trace left out {line}:\n{out}");
        }
        let out = written(Some("sled=error,tokio_postgres=off"));
        assert!(out.contains("sled::pagecache::iobuf@error"));
        assert!(!out.contains("sled::pagecache::iobuf@warn"));
        assert!(!out.contains("tokio_postgres::query@info"));
    }

    /// Unset or invalid `RUST_LOG` means info.
    #[test]
    fn without_valid_directives_info_is_logged() {
        for d in [None, Some("sled=notalevel")] {
            let out = written(d);
            assert!(out.contains("keyward::engine@info"), "{d:?}: {out}");
            assert!(!out.contains("keyward::engine@debug"), "{d:?}: {out}");
        }
    }

    #[test]
    fn clip_cuts_long_values_on_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(100);
        let c = clip(&long);
        assert!(c.len() <= VALUE_MAX + '…'.len_utf8());
        assert!(c.ends_with('…'));
        assert!(c.starts_with("éé"));
    }
}
