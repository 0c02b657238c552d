//! A SKU's held reservations: a dense table, looked up by id.
//!
//! A flash sale leaves a SKU with hundreds of thousands of holds, and memory per hold is what
//! bounds how many one server keeps (docs/BENCHMARKS.md, "Memory per hold"). A
//! `HashMap<ReservationId, Hold>` stores the id twice, sizes every slot for the whole entry
//! (81 bytes), and is 44% to 88% full: 92 to 184 bytes a hold. Here the holds sit side by side
//! in chunks of [`CHUNK`] (the first one grows up to that size, so a SKU with few holds keeps
//! little), and the hash table only maps an id to its position: 5 bytes a slot. Removing a
//! hold moves the last one into its place.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::model::Hold;
use crate::domain::ids::ReservationId;

/// Holds per chunk: 64 KiB of holds (4 in unit tests, so that they cross chunks).
const CHUNK: usize = if cfg!(test) { 4 } else { 1024 };

/// Held reservations by id, in no particular order.
#[derive(Clone, Default)]
pub struct Holds {
    /// The holds, densely: every chunk but the last is full, and at most one chunk after
    /// the last hold is kept empty (so that a SKU hovering at a chunk's edge does not
    /// allocate and free one on every hold).
    chunks: Vec<Vec<Hold>>,
    /// Number of holds.
    len: usize,
    /// Positions in `chunks`, found by the hash of the hold's id.
    index: HashTable<u32>,
    /// Hashes ids; seeded per table, as `HashMap`'s.
    hasher: std::collections::hash_map::RandomState,
}

impl Holds {
    /// An empty table with room for `capacity` holds.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut chunks = Vec::with_capacity(capacity.div_ceil(CHUNK));
        if capacity > 0 {
            // A power of two, so that it grows to exactly `CHUNK`.
            chunks.push(Vec::with_capacity(capacity.min(CHUNK).next_power_of_two()));
        }
        Self {
            chunks,
            len: 0,
            index: HashTable::with_capacity(capacity),
            hasher: Default::default(),
        }
    }

    /// Number of holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hold `id`, if held.
    pub fn get(&self, id: &ReservationId) -> Option<&Hold> {
        let at = self.position(id)?;
        Some(self.at(at))
    }

    /// The hold `id` to change in place. Its id must stay as it is.
    pub fn get_mut(&mut self, id: &ReservationId) -> Option<&mut Hold> {
        let at = self.position(id)?;
        Some(&mut self.chunks[at / CHUNK][at % CHUNK])
    }

    /// Adds `hold`, or, when its id is already held, gives it back and changes nothing.
    pub fn insert(&mut self, hold: Hold) -> Result<(), Hold> {
        let hash = self.hasher.hash_one(hold.id);
        if self.position_hashed(hash, &hold.id).is_some() {
            return Err(hold);
        }
        let at = u32::try_from(self.len).expect("at most 4 billion holds on one SKU");
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.index.insert_unique(hash, at, |&other| {
            let other = other as usize;
            hasher.hash_one(chunks[other / CHUNK][other % CHUNK].id)
        });
        if self.chunks.len() == self.len / CHUNK {
            // The first chunk grows as holds come; later ones are allocated whole.
            let capacity = if self.len == 0 { 0 } else { CHUNK };
            self.chunks.push(Vec::with_capacity(capacity));
        }
        self.chunks[self.len / CHUNK].push(hold);
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the hold `id`, if held.
    pub fn remove(&mut self, id: &ReservationId) -> Option<Hold> {
        let hash = self.hasher.hash_one(id);
        let chunks = &self.chunks;
        let entry = self
            .index
            .find_entry(hash, |&at| chunks[at as usize / CHUNK][at as usize % CHUNK].id == *id)
            .ok()?;
        let (at, _) = entry.remove();
        let at = at as usize;
        self.len -= 1;
        let last = self.chunks[self.len / CHUNK]
            .pop()
            .expect("the last chunk holds the last hold");
        let hold = if at == self.len {
            last
        } else {
            // The last hold moves to where the removed one was: point its entry there.
            let moved_hash = self.hasher.hash_one(last.id);
            let from = u32::try_from(self.len).expect("positions fit in u32");
            let slot = self
                .index
                .find_mut(moved_hash, |&position| position == from)
                .expect("every hold is indexed");
            *slot = u32::try_from(at).expect("positions fit in u32");
            std::mem::replace(&mut self.chunks[at / CHUNK][at % CHUNK], last)
        };
        if self.chunks.len() > self.len.div_ceil(CHUNK) + 1 {
            self.chunks.pop();
        }
        Some(hold)
    }

    /// Every hold, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &Hold> {
        self.chunks.iter().flatten()
    }

    fn at(&self, at: usize) -> &Hold {
        &self.chunks[at / CHUNK][at % CHUNK]
    }

    fn position(&self, id: &ReservationId) -> Option<usize> {
        self.position_hashed(self.hasher.hash_one(id), id)
    }

    /// The position of `id`, whose hash is `hash`.
    fn position_hashed(&self, hash: u64, id: &ReservationId) -> Option<usize> {
        self.index
            .find(hash, |&at| self.at(at as usize).id == *id)
            .map(|&at| at as usize)
    }
}

impl std::fmt::Debug for Holds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.values()).finish()
    }
}

impl std::ops::Index<&ReservationId> for Holds {
    type Output = Hold;

    fn index(&self, id: &ReservationId) -> &Hold {
        self.get(id).expect("the reservation is held")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::domain::sku::stock::at_default;

    fn hold(id: ReservationId, qty: u64) -> Hold {
        Hold {
            id,
            qty,
            parts: at_default(qty).into(),
            created_ms: 0,
            expires_ms: qty,
        }
    }

    /// Inline parts change nothing in storage: a hold encodes exactly as it did with a
    /// `Vec` of parts (log records and hold rows written before still read back).
    #[test]
    fn a_hold_encodes_as_with_a_vec_of_parts() {
        #[derive(serde::Serialize)]
        struct WithVec {
            id: ReservationId,
            qty: u64,
            parts: Vec<crate::domain::sku::Part>,
            created_ms: u64,
            expires_ms: u64,
        }
        let mut held = hold(ReservationId::generate(), 3);
        for parts in [held.parts.to_vec(), [at_default(1), at_default(2)].concat()] {
            held.parts = parts.iter().cloned().collect();
            let before = WithVec {
                id: held.id,
                qty: held.qty,
                parts,
                created_ms: held.created_ms,
                expires_ms: held.expires_ms,
            };
            let encoded = crate::persistence::codec::encode(&held);
            assert_eq!(encoded, crate::persistence::codec::encode(&before));
            assert_eq!(bincode::deserialize::<Hold>(&encoded[1..]).unwrap(), held);
        }
    }

    /// Random inserts, removals and changes agree with a `HashMap` after every step.
    #[test]
    fn agrees_with_a_hash_map() {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let ids: Vec<ReservationId> = (0..64).map(|_| ReservationId::generate()).collect();
        let mut table = Holds::with_capacity(4);
        let mut model: HashMap<ReservationId, Hold> = HashMap::new();
        for step in 0..20_000u64 {
            let id = ids[rng.random_range(0..ids.len())];
            match rng.random_range(0..3) {
                0 => {
                    let inserted = table.insert(hold(id, step)).is_ok();
                    assert_eq!(inserted, !model.contains_key(&id));
                    model.entry(id).or_insert_with(|| hold(id, step));
                }
                1 => assert_eq!(table.remove(&id), model.remove(&id)),
                _ => {
                    if let Some(held) = table.get_mut(&id) {
                        held.expires_ms = step;
                    }
                    if let Some(held) = model.get_mut(&id) {
                        held.expires_ms = step;
                    }
                }
            }
            assert_eq!(table.len(), model.len());
            for id in &ids {
                assert_eq!(table.get(id), model.get(id), "step {step}");
            }
        }
        let mut listed: Vec<&Hold> = table.values().collect();
        listed.sort_by_key(|hold| hold.id);
        let mut expected: Vec<&Hold> = model.values().collect();
        expected.sort_by_key(|hold| hold.id);
        assert_eq!(listed, expected);
    }
}
