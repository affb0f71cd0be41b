//! An ordered set of token ids ([`IdSet`]): what an account keeps of its
//! tokens, for paging and for walking them. A `BTreeSet<u64>` took about
//! 20 bytes an id (half-full nodes of 8-byte keys after in-order inserts),
//! 20 MiB for an account with a million tokens; here an id takes 4 bytes
//! in sorted runs of at most [`RUN`], so a million take about 4 MiB.

/// Most ids in one run: inserting into (or removing from) a run moves at
/// most this many ids, and finding the run is a binary search over runs.
const RUN: usize = 512;

/// Token ids (each below 2^32, as [`super::TokenTable`] keeps them), in
/// order.
#[derive(Debug, Default, Clone)]
pub struct IdSet {
    /// Sorted runs, none empty, each holding only ids above the previous
    /// run's last.
    runs: Vec<Vec<u32>>,
    /// Ids held.
    len: usize,
}

impl IdSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The run `id` is in or belongs in: the last whose first id is not
    /// above it (the first run for an id below them all; 0 when there are
    /// none).
    fn run_of(&self, id: u32) -> usize {
        self.runs
            .partition_point(|run| run[0] <= id)
            .saturating_sub(1)
    }

    /// Adds `id`; false when it was there already or does not fit in 32
    /// bits (such a token is not kept in the index either).
    pub fn insert(&mut self, id: u64) -> bool {
        let Ok(id) = u32::try_from(id) else {
            return false;
        };
        // Ids are handed out in order: most inserts append (a load, a
        // snapshot, a mint), without a search.
        if let Some(run) = self.runs.last_mut().filter(|r| r.last() < Some(&id)) {
            if run.len() < RUN {
                run.push(id);
            } else {
                self.runs.push(vec![id]);
            }
            self.len += 1;
            return true;
        }
        let r = self.run_of(id);
        let last = r + 1 == self.runs.len();
        let Some(run) = self.runs.get_mut(r) else {
            self.runs.push(vec![id]);
            self.len += 1;
            return true;
        };
        let Err(at) = run.binary_search(&id) else {
            return false;
        };
        if run.len() < RUN {
            run.insert(at, id);
        } else if at == RUN && last {
            // Ids are handed out in order: a new run at the end, so runs
            // filled in order stay full.
            self.runs.push(vec![id]);
        } else {
            let mut upper = run.split_off(RUN / 2);
            run.shrink_to_fit();
            if at <= RUN / 2 {
                run.insert(at, id);
            } else {
                upper.insert(at - RUN / 2, id);
            }
            self.runs.insert(r + 1, upper);
        }
        self.len += 1;
        true
    }

    /// Removes `id`; false when it was not there.
    pub fn remove(&mut self, id: u64) -> bool {
        let Ok(id) = u32::try_from(id) else {
            return false;
        };
        let r = self.run_of(id);
        let Some(run) = self.runs.get_mut(r) else {
            return false;
        };
        let Ok(at) = run.binary_search(&id) else {
            return false;
        };
        run.remove(at);
        if run.is_empty() {
            self.runs.remove(r);
        } else if run.len() < run.capacity() / 4 {
            run.shrink_to_fit();
        }
        self.len -= 1;
        true
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: u64) -> bool {
        let Ok(id) = u32::try_from(id) else {
            return false;
        };
        self.runs
            .get(self.run_of(id))
            .is_some_and(|run| run.binary_search(&id).is_ok())
    }

    /// How many ids.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every id, in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.starting_at(0)
    }

    /// The ids at or above `first`, in order.
    pub fn starting_at(&self, first: u64) -> impl Iterator<Item = u64> + '_ {
        let first = u32::try_from(first).ok();
        // Runs wholly below `first` are skipped by one search, then the
        // start within the first run kept.
        let (r, at) = match first {
            None => (self.runs.len(), 0),
            Some(f) => {
                let r = self.run_of(f);
                let at = self
                    .runs
                    .get(r)
                    .map_or(0, |run| run.partition_point(|&i| i < f));
                (r, at)
            }
        };
        self.runs
            .iter()
            .skip(r)
            .enumerate()
            .flat_map(move |(k, run)| run[if k == 0 { at } else { 0 }..].iter())
            .map(|&id| u64::from(id))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Remove(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Small ids collide often (inserts of present ids, removals of
        // absent ones); a few land past 32 bits.
        let id = prop_oneof![
            8 => 0u64..3_000,
            1 => (1u64 << 32) - 2..(1u64 << 32) + 2,
        ];
        prop_oneof![
            3 => id.clone().prop_map(Op::Insert),
            1 => id.prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Whatever the order of inserts and removals, the set answers as
        /// a `BTreeSet` of the ids below 2^32 does.
        #[test]
        fn behaves_as_an_ordered_set_of_32_bit_ids(
            ops in proptest::collection::vec(op(), 0..4_000),
            from in 0u64..3_100,
        ) {
            let (mut ours, mut model) = (IdSet::new(), BTreeSet::new());
            for op in ops {
                match op {
                    Op::Insert(id) => {
                        let fits = id < 1 << 32;
                        prop_assert_eq!(ours.insert(id), fits && model.insert(id));
                    }
                    Op::Remove(id) => prop_assert_eq!(ours.remove(id), model.remove(&id)),
                }
                prop_assert_eq!(ours.len(), model.len());
            }
            prop_assert!(ours.iter().eq(model.iter().copied()));
            prop_assert!(ours.starting_at(from).eq(model.range(from..).copied()));
            prop_assert_eq!(ours.contains(from), model.contains(&from));
            prop_assert!(ours.runs.iter().all(|r| !r.is_empty() && r.len() <= RUN));
        }
    }

    #[test]
    fn ids_added_in_order_fill_whole_runs() {
        let mut ids = IdSet::new();
        for id in 1..=100_000 {
            assert!(ids.insert(id));
        }
        assert_eq!(ids.len(), 100_000);
        // Every run but the last is full: about 4 bytes an id.
        let full = ids.runs.iter().filter(|r| r.len() == RUN).count();
        assert_eq!(full, 100_000 / RUN);
        assert_eq!(
            ids.starting_at(99_999).collect::<Vec<_>>(),
            [99_999, 100_000]
        );
        assert_eq!(ids.starting_at(1 << 40).count(), 0);
    }
}
