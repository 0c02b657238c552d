//! Recovery: rebuilds every SKU from its state rows (no event replay) and checks its
//! invariants before the server reports ready.
//!
//! SKU rows and hold rows are both ordered by SKU id, so recovery is one merge of two
//! sequential scans, read in bounded pages: its cost grows linearly with the live data.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::rows::{restore_sku, SkuRow};
use super::{codec, keys, Store};
use crate::domain::cart::{Cart, CartStatus};
use crate::domain::order::Order;
use crate::domain::sku::{Hold, SkuState};
use crate::domain::SkuId;

/// Rows read per scan call.
const PAGE_ROWS: usize = 10_000;

/// What recovery rebuilt.
pub struct Recovered {
    /// Every SKU with its held reservations.
    pub skus: Vec<SkuState>,
    /// Carts that are open or checking out (others load when asked for).
    pub carts: Vec<Cart>,
    /// Orders that can still change or owe stock back (others load when asked for).
    pub orders: Vec<Order>,
    /// The sequence number the next event gets.
    pub next_event_seq: u64,
    /// Held reservations restored, over all SKUs.
    pub holds: usize,
    /// How long recovery took.
    pub elapsed: Duration,
}

/// Reads all state rows and rebuilds the SKUs; fails on a corrupt row or a broken invariant.
pub fn recover(store: &dyn Store) -> anyhow::Result<Recovered> {
    let started = Instant::now();
    let mut holds = HoldCursor::new(store);
    let mut skus = Vec::new();
    let mut hold_count = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(&[keys::SKU], after.as_deref(), PAGE_ROWS)
            .context("reading SKU rows")?;
        let Some((last_key, _)) = page.last() else { break };
        after = Some(last_key.clone());
        for (key, value) in page {
            let sku = keys::sku_of(&key).with_context(|| format!("bad SKU key {}", keys::display(&key)))?;
            let row: SkuRow = codec::decode(&key, &value)?;
            let sku_holds = holds.take_for(&sku)?;
            hold_count += sku_holds.len();
            let state = restore_sku(sku, row, sku_holds)
                .map_err(|broken| anyhow::anyhow!("invariant broken in storage: {broken}"))?;
            skus.push(state);
        }
    }
    if let Some(orphan) = holds.next_sku()? {
        bail!("hold rows exist for SKU {orphan}, which has no SKU row");
    }
    let next_event_seq = match store.last_key(&[keys::EVENT]).context("reading the event log")? {
        Some(key) => keys::event_seq(&key).context("bad event key")? + 1,
        None => 1,
    };
    let mut carts = Vec::new();
    for (key, value) in scan_all(store, keys::CART)? {
        let cart: Cart = codec::decode(&key, &value)?;
        if matches!(cart.status, CartStatus::Open | CartStatus::CheckingOut(_)) {
            carts.push(cart);
        }
    }
    let mut orders = Vec::new();
    for (key, value) in scan_all(store, keys::ORDER)? {
        let order: Order = codec::decode(&key, &value)?;
        if !order.status().is_settled() || order.owes_stock() {
            orders.push(order);
        }
    }
    Ok(Recovered {
        skus,
        carts,
        orders,
        next_event_seq,
        holds: hold_count,
        elapsed: started.elapsed(),
    })
}

/// Every row under one prefix, read in bounded pages.
fn scan_all(store: &dyn Store, prefix: u8) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut rows = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan(&[prefix], after.as_deref(), PAGE_ROWS)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        rows.extend(page);
    }
    Ok(rows)
}

/// Walks the hold rows in key order (grouped by SKU), one page at a time.
struct HoldCursor<'a> {
    store: &'a dyn Store,
    page: std::collections::VecDeque<(SkuId, Hold)>,
    after: Option<Vec<u8>>,
    exhausted: bool,
}

impl<'a> HoldCursor<'a> {
    fn new(store: &'a dyn Store) -> Self {
        Self {
            store,
            page: Default::default(),
            after: None,
            exhausted: false,
        }
    }

    fn fill(&mut self) -> anyhow::Result<()> {
        if !self.page.is_empty() || self.exhausted {
            return Ok(());
        }
        let rows = self
            .store
            .scan(&[keys::HOLD], self.after.as_deref(), PAGE_ROWS)
            .context("reading hold rows")?;
        self.exhausted = rows.len() < PAGE_ROWS;
        if let Some((last, _)) = rows.last() {
            self.after = Some(last.clone());
        }
        for (key, value) in rows {
            let sku = hold_sku(&key).with_context(|| format!("bad hold key {}", keys::display(&key)))?;
            let hold: Hold = codec::decode(&key, &value)?;
            self.page.push_back((sku, hold));
        }
        Ok(())
    }

    fn next_sku(&mut self) -> anyhow::Result<Option<SkuId>> {
        self.fill()?;
        Ok(self.page.front().map(|(sku, _)| sku.clone()))
    }

    /// Takes the holds of `sku`. SKUs are visited in key order, so its holds are next, if any.
    fn take_for(&mut self, sku: &SkuId) -> anyhow::Result<Vec<Hold>> {
        let mut out = Vec::new();
        loop {
            self.fill()?;
            match self.page.front() {
                Some((owner, _)) if owner == sku => {
                    if let Some((_, hold)) = self.page.pop_front() {
                        out.push(hold);
                    }
                }
                Some((owner, _)) if owner < sku => bail!("hold rows exist for SKU {owner}, which has no SKU row"),
                _ => return Ok(out),
            }
        }
    }
}

/// The SKU id inside a hold key: between the prefix and the `0x00` separator.
fn hold_sku(key: &[u8]) -> Option<SkuId> {
    let rest = key.strip_prefix(&[keys::HOLD])?;
    let end = rest.iter().position(|byte| *byte == 0)?;
    SkuId::parse(std::str::from_utf8(&rest[..end]).ok()?).ok()
}
