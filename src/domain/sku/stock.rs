//! Stock per location, and allocation: which locations a hold takes its units from.
//!
//! Allocation runs inside the SKU's single writer, against the SKU's own counters, so no
//! location and no total is ever oversold whatever the concurrency.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::location::LocationId;

/// A SKU's counters at one location.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    /// Units on the shelf, held and committed ones included.
    pub on_hand: u64,
    /// Units held by reservations.
    pub reserved: u64,
    /// Units sold but not yet shipped: on the shelf, no longer available.
    pub committed: u64,
}

impl Stock {
    /// Units a new hold can take here: `on_hand - reserved - committed`.
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved + self.committed)
    }

    /// `on_hand - reserved - committed`, below zero when units are backordered here.
    pub fn available_signed(&self) -> i64 {
        let signed = |units: u64| i64::try_from(units).expect("counters stay far below i64::MAX");
        signed(self.on_hand) - signed(self.reserved) - signed(self.committed)
    }

    /// Adds another location's counters (for totals).
    pub fn add(&mut self, other: &Stock) {
        self.on_hand += other.on_hand;
        self.reserved += other.reserved;
        self.committed += other.committed;
    }
}

/// The units of a hold (or a settled reservation) taken from one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Where the units are.
    pub location: LocationId,
    /// How many.
    pub qty: u64,
}

/// A hold's parts: inline while there is one (a hold in memory then needs no allocation of
/// its own; stored and encoded as a sequence, as a `Vec` is).
pub type Parts = smallvec::SmallVec<[Part; 1]>;

/// The parts of `qty` units all at `default`: how holds from before locations are read.
pub fn at_default(qty: u64) -> Vec<Part> {
    vec![Part {
        location: LocationId::default_location(),
        qty,
    }]
}

/// Where a hold may take its units from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Placement {
    /// The configured strategy chooses among the active locations.
    #[default]
    Any,
    /// Exactly this location.
    At(LocationId),
    /// These locations only, in this order of preference.
    Prefer(Vec<LocationId>),
}

/// How [`Placement::Any`] orders the locations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Lowest `priority` first (ties by id).
    #[default]
    Priority,
    /// The location with the most available units first (ties by priority).
    MostAvailable,
}

/// What allocation needs to know of one location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// Allocation order under [`Strategy::Priority`]: lower first.
    pub priority: i64,
    /// Whether new holds may take units here.
    pub active: bool,
}

/// The locations as allocation sees them: a snapshot, swapped whole when one changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sites {
    sites: BTreeMap<LocationId, Site>,
    /// Ids of the active sites, lowest priority first.
    by_priority: Vec<LocationId>,
}

impl Sites {
    /// A snapshot of these sites.
    pub fn new(sites: BTreeMap<LocationId, Site>) -> Self {
        let mut by_priority: Vec<(i64, LocationId)> = sites
            .iter()
            .filter(|(_, site)| site.active)
            .map(|(id, site)| (site.priority, id.clone()))
            .collect();
        by_priority.sort();
        Self {
            sites,
            by_priority: by_priority.into_iter().map(|(_, id)| id).collect(),
        }
    }

    /// Only `default`, active: a shop that configured no location.
    pub fn only_default() -> Arc<Self> {
        let mut sites = BTreeMap::new();
        sites.insert(
            LocationId::default_location(),
            Site {
                priority: 0,
                active: true,
            },
        );
        Arc::new(Self::new(sites))
    }

    /// One site, if it exists.
    pub fn get(&self, id: &LocationId) -> Option<&Site> {
        self.sites.get(id)
    }

    fn priority(&self, id: &LocationId) -> i64 {
        self.sites.get(id).map_or(i64::MAX, |site| site.priority)
    }

    fn is_active(&self, id: &LocationId) -> bool {
        self.sites.get(id).is_some_and(|site| site.active)
    }
}

/// How holds are placed; from configuration (`[allocation]`) and the location table.
#[derive(Debug, Clone)]
pub struct Allocation {
    /// How [`Placement::Any`] orders locations.
    pub strategy: Strategy,
    /// Whether a quantity no single location has may be split across several.
    pub allow_split: bool,
    /// The locations.
    pub sites: Arc<Sites>,
}

impl Default for Allocation {
    fn default() -> Self {
        Self {
            strategy: Strategy::Priority,
            allow_split: false,
            sites: Sites::only_default(),
        }
    }
}

/// Why a hold could not be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unplaced {
    /// A named location does not exist or takes no holds.
    Unavailable(LocationId),
    /// Not enough units where the hold may take them: the most it could get.
    Short {
        /// Units the hold could take right now.
        available: u64,
    },
}

/// Chooses where `qty` units come from, given the SKU's counters per location.
///
/// - [`Placement::At`]: that location only.
/// - [`Placement::Prefer`]: the listed active locations, in the listed order.
/// - [`Placement::Any`]: the active locations in the strategy's order.
///
/// The first location that has all `qty` units gets them. Otherwise, with `allow_split`, the
/// locations give what they have in the same order until `qty` is met; without it, or when
/// even all of them together fall short, the answer is `Short` with the most the hold could
/// take.
pub fn allocate(
    stock: &BTreeMap<LocationId, Stock>,
    qty: u64,
    placement: &Placement,
    allocation: &Allocation,
) -> Result<Vec<Part>, Unplaced> {
    let sites = &allocation.sites;
    let available = |id: &LocationId| stock.get(id).map_or(0, Stock::available);
    let candidates: Vec<(LocationId, u64)> = match placement {
        Placement::At(id) => {
            if !sites.is_active(id) {
                return Err(Unplaced::Unavailable(id.clone()));
            }
            vec![(id.clone(), available(id))]
        }
        Placement::Prefer(ids) => {
            if let Some(missing) = ids.iter().find(|id| sites.get(id).is_none()) {
                return Err(Unplaced::Unavailable(missing.clone()));
            }
            ids.iter()
                .filter(|id| sites.is_active(id))
                .map(|id| (id.clone(), available(id)))
                .collect()
        }
        Placement::Any => match allocation.strategy {
            Strategy::Priority => {
                // The common case, one location that has it all, without building a list.
                if let Some(id) = sites.by_priority.iter().find(|id| available(id) >= qty) {
                    return Ok(vec![Part {
                        location: id.clone(),
                        qty,
                    }]);
                }
                sites.by_priority.iter().map(|id| (id.clone(), available(id))).collect()
            }
            Strategy::MostAvailable => {
                // The common case, the fullest location has it all, in one pass and no list.
                let fullest = stock
                    .iter()
                    .filter(|(id, _)| sites.is_active(id))
                    .map(|(id, counters)| (id, counters.available()))
                    .max_by(|(a_id, a), (b_id, b)| {
                        a.cmp(b)
                            .then_with(|| sites.priority(b_id).cmp(&sites.priority(a_id)))
                            .then_with(|| b_id.cmp(a_id))
                    });
                if let Some((id, _)) = fullest.filter(|(_, units)| *units >= qty) {
                    return Ok(vec![Part {
                        location: id.clone(),
                        qty,
                    }]);
                }
                let mut candidates: Vec<(LocationId, u64)> = stock
                    .iter()
                    .filter(|(id, _)| sites.is_active(id))
                    .map(|(id, counters)| (id.clone(), counters.available()))
                    .collect();
                candidates.sort_by(|(a_id, a), (b_id, b)| {
                    b.cmp(a)
                        .then_with(|| sites.priority(a_id).cmp(&sites.priority(b_id)))
                        .then_with(|| a_id.cmp(b_id))
                });
                candidates
            }
        },
    };
    if let Some((id, _)) = candidates.iter().find(|(_, units)| *units >= qty) {
        return Ok(vec![Part {
            location: id.clone(),
            qty,
        }]);
    }
    let total: u64 = candidates.iter().map(|(_, units)| units).sum();
    if !allocation.allow_split || total < qty {
        let most = if allocation.allow_split {
            total
        } else {
            candidates.iter().map(|(_, units)| *units).max().unwrap_or(0)
        };
        return Err(Unplaced::Short { available: most });
    }
    let mut parts = Vec::new();
    let mut left = qty;
    for (id, units) in candidates {
        if left == 0 {
            break;
        }
        let take = units.min(left);
        if take > 0 {
            parts.push(Part {
                location: id,
                qty: take,
            });
            left -= take;
        }
    }
    Ok(parts)
}

/// Adds `extra` parts to `parts`, merging parts at the same location.
pub fn merge_parts(parts: &[Part], extra: Vec<Part>) -> Vec<Part> {
    let mut merged = parts.to_vec();
    for part in extra {
        match merged.iter_mut().find(|existing| existing.location == part.location) {
            Some(existing) => existing.qty += part.qty,
            None => merged.push(part),
        }
    }
    merged
}

/// `parts` with `qty` fewer units, taken from the last parts first.
pub fn shrink_parts(parts: &[Part], mut qty: u64) -> Vec<Part> {
    let mut kept = parts.to_vec();
    while qty > 0 {
        let last = kept.last_mut().expect("shrinking by no more than the parts hold");
        let take = last.qty.min(qty);
        last.qty -= take;
        qty -= take;
        if last.qty == 0 {
            kept.pop();
        }
    }
    kept
}

/// Where units beyond every shelf wait (a backorder): the first place a hold with this
/// placement would look (the location it names, the first active one it prefers, or the
/// strategy's first among the active ones). `None` when no location may take it.
pub fn first_site(
    stock: &BTreeMap<LocationId, Stock>,
    placement: &Placement,
    allocation: &Allocation,
) -> Option<LocationId> {
    let sites = &allocation.sites;
    match placement {
        Placement::At(id) => sites.is_active(id).then(|| id.clone()),
        Placement::Prefer(ids) => ids.iter().find(|id| sites.is_active(id)).cloned(),
        Placement::Any => match allocation.strategy {
            Strategy::Priority => sites.by_priority.first().cloned(),
            Strategy::MostAvailable => stock
                .iter()
                .filter(|(id, _)| sites.is_active(id))
                .max_by(|(a_id, a), (b_id, b)| {
                    a.available()
                        .cmp(&b.available())
                        .then_with(|| sites.priority(b_id).cmp(&sites.priority(a_id)))
                        .then_with(|| b_id.cmp(a_id))
                })
                .map(|(id, _)| id.clone())
                .or_else(|| sites.by_priority.first().cloned()),
        },
    }
}

/// `parts` with up to `qty` fewer units at `location` (a part that reaches zero goes).
pub fn shrink_at(parts: &[Part], location: &LocationId, qty: u64) -> Vec<Part> {
    let mut left = qty;
    parts
        .iter()
        .filter_map(|part| {
            let mut part = part.clone();
            if part.location == *location {
                let taken = part.qty.min(left);
                part.qty -= taken;
                left -= taken;
            }
            (part.qty > 0).then_some(part)
        })
        .collect()
}

/// Units of `parts` at `location`.
pub fn units_at(parts: &[Part], location: &LocationId) -> u64 {
    parts
        .iter()
        .filter(|part| part.location == *location)
        .map(|part| part.qty)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: &str) -> LocationId {
        LocationId::parse(raw).unwrap()
    }

    fn allocation(strategy: Strategy, allow_split: bool) -> Allocation {
        let mut sites = BTreeMap::new();
        sites.insert(
            id("a"),
            Site {
                priority: 2,
                active: true,
            },
        );
        sites.insert(
            id("b"),
            Site {
                priority: 1,
                active: true,
            },
        );
        sites.insert(
            id("c"),
            Site {
                priority: 0,
                active: false,
            },
        );
        Allocation {
            strategy,
            allow_split,
            sites: Arc::new(Sites::new(sites)),
        }
    }

    fn stock(levels: &[(&str, u64)]) -> BTreeMap<LocationId, Stock> {
        levels
            .iter()
            .map(|(raw, on_hand)| {
                (
                    id(raw),
                    Stock {
                        on_hand: *on_hand,
                        ..Stock::default()
                    },
                )
            })
            .collect()
    }

    fn part(raw: &str, qty: u64) -> Part {
        Part { location: id(raw), qty }
    }

    #[test]
    fn priority_takes_the_first_location_that_has_it_all_and_skips_inactive_ones() {
        let levels = stock(&[("a", 5), ("b", 2), ("c", 100)]);
        let policy = allocation(Strategy::Priority, false);
        assert_eq!(allocate(&levels, 2, &Placement::Any, &policy), Ok(vec![part("b", 2)]));
        assert_eq!(allocate(&levels, 3, &Placement::Any, &policy), Ok(vec![part("a", 3)]));
        assert_eq!(
            allocate(&levels, 6, &Placement::Any, &policy),
            Err(Unplaced::Short { available: 5 }),
            "without splitting, the most one location has"
        );
    }

    #[test]
    fn most_available_and_splits() {
        let levels = stock(&[("a", 5), ("b", 7)]);
        let policy = allocation(Strategy::MostAvailable, true);
        assert_eq!(allocate(&levels, 1, &Placement::Any, &policy), Ok(vec![part("b", 1)]));
        assert_eq!(
            allocate(&levels, 10, &Placement::Any, &policy),
            Ok(vec![part("b", 7), part("a", 3)])
        );
        assert_eq!(
            allocate(&levels, 13, &Placement::Any, &policy),
            Err(Unplaced::Short { available: 12 })
        );
    }

    #[test]
    fn named_locations_are_kept_to() {
        let levels = stock(&[("a", 5), ("b", 7), ("c", 9)]);
        let policy = allocation(Strategy::Priority, true);
        assert_eq!(
            allocate(&levels, 6, &Placement::Prefer(vec![id("a"), id("b")]), &policy),
            Ok(vec![part("b", 6)])
        );
        assert_eq!(
            allocate(&levels, 8, &Placement::Prefer(vec![id("a"), id("b")]), &policy),
            Ok(vec![part("a", 5), part("b", 3)])
        );
        assert_eq!(
            allocate(&levels, 6, &Placement::At(id("a")), &policy),
            Err(Unplaced::Short { available: 5 })
        );
        assert_eq!(
            allocate(&levels, 1, &Placement::At(id("c")), &policy),
            Err(Unplaced::Unavailable(id("c")))
        );
        assert_eq!(
            allocate(&levels, 1, &Placement::Prefer(vec![id("zz")]), &policy),
            Err(Unplaced::Unavailable(id("zz")))
        );
    }

    #[test]
    fn parts_grow_and_shrink_from_the_end() {
        let parts = vec![part("a", 2), part("b", 3)];
        assert_eq!(
            merge_parts(&parts, vec![part("b", 1), part("c", 1)]),
            vec![part("a", 2), part("b", 4), part("c", 1)]
        );
        assert_eq!(shrink_parts(&parts, 4), vec![part("a", 1)]);
    }
}
