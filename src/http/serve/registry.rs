//! The HTTP port's connection cap: every open connection in a [`Registry`],
//! busy or idle; at the cap the connection idle the longest is evicted for
//! a new one, and a busy one never is. Imports nothing above `http`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, gauge, Counter, Gauge};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::CLOSING_MAX;

/// One open connection, as the cap sees it.
pub(super) struct Conn {
    /// Its key in the registry.
    id: u64,
    /// Requests being handled on it (0 = idle: waiting for a request).
    pub(super) in_flight: AtomicUsize,
    /// When it last became idle, in µs since the registry's epoch: the
    /// connection idle the longest is closed first.
    idle_since: AtomicU64,
    /// Chosen for eviction (so it is chosen once).
    evicted: AtomicBool,
    /// Wakes its task to close it.
    pub(super) evict: Notify,
}

/// Every open connection, for the cap.
pub(super) struct Registry {
    /// The open connections and how many of them are being evicted.
    slots: Mutex<Slots>,
    /// Zero of `Conn::idle_since`.
    epoch: Instant,
    /// Told when a connection closes or goes idle: a place may be free
    /// for a connection waiting at the cap.
    pub(super) freed: Notify,
    /// `keyward_http_connections`: connections open.
    open: Gauge,
    /// `keyward_http_connections_dropped_total{why="evicted_idle"}`.
    evictions: Counter,
    /// `keyward_http_connections_dropped_total{why="refused"}`.
    pub(super) refusals: Counter,
}

/// The registry's state under its lock.
#[derive(Default)]
struct Slots {
    /// Open connections by id.
    open: HashMap<u64, Arc<Conn>>,
    /// Of them, evicted but not yet closed.
    closing: usize,
    /// The next connection's id.
    next_id: u64,
}

impl Registry {
    pub(super) fn new() -> Registry {
        Registry {
            slots: Mutex::new(Slots::default()),
            epoch: Instant::now(),
            freed: Notify::new(),
            open: gauge!("keyward_http_connections"),
            evictions: counter!("keyward_http_connections_dropped_total", "why" => "evicted_idle"),
            refusals: counter!("keyward_http_connections_dropped_total", "why" => "refused"),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// A place for a new connection: free under `cap`, or made by evicting
    /// the connection idle the longest. None if every connection is busy
    /// (or too many are already closing): for now, no place.
    pub(super) fn admit(&self, cap: usize) -> Option<Arc<Conn>> {
        let now = self.now_us();
        let mut slots = self.slots.lock();
        if slots.open.len() - slots.closing >= cap {
            if slots.closing >= CLOSING_MAX {
                return None;
            }
            let victim = slots
                .open
                .values()
                .filter(|c| {
                    c.in_flight.load(Ordering::Acquire) == 0 && !c.evicted.load(Ordering::Relaxed)
                })
                .min_by_key(|c| c.idle_since.load(Ordering::Relaxed))
                .cloned()?;
            victim.evicted.store(true, Ordering::Relaxed);
            victim.evict.notify_one();
            slots.closing += 1;
            self.evictions.increment(1);
        }
        let id = slots.next_id;
        slots.next_id += 1;
        let conn = Arc::new(Conn {
            id,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        slots.open.insert(id, conn.clone());
        self.open.set(slots.open.len() as f64);
        Some(conn)
    }

    pub(super) fn remove(&self, conn: &Conn) {
        let mut slots = self.slots.lock();
        if slots.open.remove(&conn.id).is_some() && conn.evicted.load(Ordering::Relaxed) {
            slots.closing -= 1;
        }
        self.open.set(slots.open.len() as f64);
        drop(slots);
        self.freed.notify_one();
    }
}

/// Takes a connection out of the registry when its task ends (or is
/// aborted).
pub(super) struct Leave {
    /// Where it is registered.
    pub(super) registry: Arc<Registry>,
    /// The connection.
    pub(super) conn: Arc<Conn>,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.registry.remove(&self.conn);
    }
}

/// Marks a connection busy while one of its requests is handled.
pub(super) struct Busy {
    /// The connection.
    conn: Arc<Conn>,
    /// For the time it goes idle again.
    registry: Arc<Registry>,
}

impl Busy {
    pub(super) fn start(conn: &Arc<Conn>, registry: &Arc<Registry>) -> Busy {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy {
            conn: conn.clone(),
            registry: registry.clone(),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .idle_since
            .store(self.registry.now_us(), Ordering::Relaxed);
        if self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.registry.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_idle_the_longest_is_evicted_and_busy_ones_never() {
        let r = Arc::new(Registry::new());
        let a = r.admit(2).expect("a fits");
        let b = r.admit(2).expect("b fits");
        // a busy, b idle: a third evicts b.
        let a_busy = Busy::start(&a, &r);
        let c = r.admit(2).expect("c evicts b");
        assert!(b.evicted.load(Ordering::Relaxed) && !a.evicted.load(Ordering::Relaxed));
        // a busy, c idle, b still closing: a fourth evicts c.
        let d = r.admit(2).expect("d evicts c");
        assert!(c.evicted.load(Ordering::Relaxed));
        r.remove(&b);
        r.remove(&c);
        // a and d busy: a fifth is refused.
        let _d_busy = Busy::start(&d, &r);
        assert!(r.admit(2).is_none(), "every connection busy: refused");
        // a idle again: evicted for the new one.
        drop(a_busy);
        assert!(r.admit(2).is_some());
        assert!(a.evicted.load(Ordering::Relaxed) && !d.evicted.load(Ordering::Relaxed));
    }
}
