//! A SKU's holds ordered by expiry: a sorted list kept in runs.
//!
//! Holds mostly arrive in expiry order (now plus a common time to live), and a `BTreeSet`
//! fed in ascending order keeps its nodes about half full: 49 bytes an entry of 24
//! (docs/BENCHMARKS.md, "Memory per hold"). Here the entries sit in sorted runs of at most
//! [`RUN`]: an entry past the end of a full last run starts a new run, so in-order arrivals
//! fill every run; an entry inside a full run splits it in two. Runs that removals thin out
//! are merged with a neighbour.

use crate::domain::ids::ReservationId;

/// An entry: when the hold expires, and which hold it is.
pub type Entry = (u64, ReservationId);

/// Most entries in one run: 6 KiB (4 in unit tests, so that they split and merge).
const RUN: usize = if cfg!(test) { 4 } else { 256 };

/// Hold ids by expiry, earliest first; each entry at most once.
#[derive(Debug, Clone, Default)]
pub struct ExpiryIndex {
    /// Sorted, non-empty runs; every entry of a run is below every entry of the next.
    runs: Vec<Vec<Entry>>,
    /// Entries in all.
    len: usize,
}

impl ExpiryIndex {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The earliest entry.
    pub fn first(&self) -> Option<&Entry> {
        self.runs.first().and_then(|run| run.first())
    }

    /// Every entry, earliest first.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.runs.iter().flatten()
    }

    /// Adds `entry`; `false` (and nothing changes) when it is already there.
    pub fn insert(&mut self, entry: Entry) -> bool {
        let Some(last) = self.runs.len().checked_sub(1) else {
            self.runs.push(vec![entry]);
            self.len = 1;
            return true;
        };
        // The run it belongs in: the last one starting at or before it (else the first).
        let at = self.runs.partition_point(|run| run[0] <= entry).saturating_sub(1);
        let run = &mut self.runs[at];
        let Err(position) = run.binary_search(&entry) else {
            return false;
        };
        if run.len() < RUN {
            run.insert(position, entry);
        } else if at == last && position == RUN {
            // Past the end of everything: a new run, so that in-order arrivals fill runs.
            let mut fresh = Vec::with_capacity(RUN);
            fresh.push(entry);
            self.runs.push(fresh);
        } else {
            let mut upper = Vec::with_capacity(RUN);
            upper.extend(run.drain(RUN / 2..));
            if position <= RUN / 2 {
                run.insert(position, entry);
            } else {
                upper.insert(position - RUN / 2, entry);
            }
            self.runs.insert(at + 1, upper);
        }
        self.len += 1;
        true
    }

    /// Removes `entry`; `false` when it was not there.
    pub fn remove(&mut self, entry: &Entry) -> bool {
        let found = self.runs.partition_point(|run| run[0] <= *entry);
        let Some(at) = found.checked_sub(1) else {
            return false;
        };
        let run = &mut self.runs[at];
        let Ok(position) = run.binary_search(entry) else {
            return false;
        };
        run.remove(position);
        self.len -= 1;
        if run.is_empty() {
            self.runs.remove(at);
            return true;
        }
        if run.len() * 4 <= run.capacity() {
            // Removals thinned it out: give back what it no longer needs.
            run.shrink_to((run.len() * 2).next_power_of_two());
        }
        self.merge_if_thin(at);
        true
    }

    /// Merges run `at` with its next or previous neighbour when the two fit in half a run,
    /// so that removals never leave many nearly empty runs behind.
    fn merge_if_thin(&mut self, at: usize) {
        let fits = |a: &Vec<Entry>, b: &Vec<Entry>| a.len() + b.len() <= RUN / 2;
        if at + 1 < self.runs.len() && fits(&self.runs[at], &self.runs[at + 1]) {
            let next = self.runs.remove(at + 1);
            self.runs[at].extend(next);
        } else if at > 0 && fits(&self.runs[at - 1], &self.runs[at]) {
            let this = self.runs.remove(at);
            self.runs[at - 1].extend(this);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Random inserts and removals, in order and out of it, agree with a `BTreeSet` after
    /// every step, and the runs keep their shape.
    #[test]
    fn agrees_with_a_btree_set() {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let ids: Vec<ReservationId> = (0..8).map(|_| ReservationId::generate()).collect();
        let mut index = ExpiryIndex::default();
        let mut model: BTreeSet<Entry> = BTreeSet::new();
        let mut clock = 0u64;
        for step in 0..40_000u64 {
            let id = ids[rng.random_range(0..ids.len())];
            let entry = if rng.random_bool(0.5) {
                // Mostly in order, as holds arrive.
                clock += rng.random_range(0..3);
                (clock, id)
            } else {
                // Anywhere among the recent ones.
                (clock.saturating_sub(rng.random_range(0..64)), id)
            };
            if rng.random_bool(0.6) {
                assert_eq!(index.insert(entry), model.insert(entry), "insert at step {step}");
            } else {
                assert_eq!(index.remove(&entry), model.remove(&entry), "remove at step {step}");
            }
            assert_eq!(index.len(), model.len());
            assert_eq!(index.first(), model.first());
            assert!(index
                .runs
                .iter()
                .all(|run| !run.is_empty() && run.len() <= RUN && run.capacity() < 4 * run.len().max(RUN)));
            if step % 97 == 0 {
                assert!(index.iter().eq(model.iter()), "order at step {step}");
            }
        }
        assert!(index.iter().eq(model.iter()));
    }

    /// Entries that arrive in order fill their runs.
    #[test]
    fn in_order_arrivals_fill_every_run() {
        let mut index = ExpiryIndex::default();
        let id = ReservationId::generate();
        for at in 0..(RUN as u64 * 10) {
            assert!(index.insert((at, id)));
        }
        assert_eq!(index.runs.len(), 10);
        assert!(index.runs.iter().all(|run| run.len() == RUN));
    }
}
