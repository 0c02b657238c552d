//! The live stock feed: who watches which SKU.
//!
//! SKU actors publish `available` at most once per [`COALESCE`] per SKU, and only values whose
//! change is durable. Each watching connection has a bounded buffer; one that falls behind is
//! dropped (and told so through `kicked`) instead of slowing the SKU or other watchers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::domain::location::LocationId;
use crate::domain::SkuId;
use crate::persistence::Ticket;

/// The shortest time between two messages about one SKU.
pub const COALESCE: Duration = Duration::from_millis(100);

/// One `available` figure of one SKU, as of a durable change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockUpdate {
    /// The SKU.
    pub sku: SkuId,
    /// Units available.
    pub available: u64,
    /// Units available at each location of the SKU.
    pub locations: Arc<[(LocationId, u64)]>,
    /// The change it reflects: later changes have larger tickets.
    pub version: Ticket,
}

struct Watcher {
    sender: mpsc::Sender<StockUpdate>,
    kicked: Arc<AtomicBool>,
}

/// Watchers by SKU.
#[derive(Default)]
pub struct StockFeed {
    watchers: DashMap<SkuId, Vec<Watcher>>,
}

impl StockFeed {
    /// Whether anyone watches `sku` (SKU actors skip the feed entirely when not).
    pub fn is_watched(&self, sku: &SkuId) -> bool {
        self.watchers.get(sku).is_some_and(|watchers| !watchers.is_empty())
    }

    /// Adds a watcher of `sku`.
    pub fn watch(&self, sku: SkuId, sender: mpsc::Sender<StockUpdate>, kicked: Arc<AtomicBool>) {
        self.watchers.entry(sku).or_default().push(Watcher { sender, kicked });
    }

    /// Hands `update` to every watcher of its SKU; drops those gone or too far behind.
    pub fn publish(&self, update: StockUpdate) {
        let Some(mut watchers) = self.watchers.get_mut(&update.sku) else {
            return;
        };
        watchers.retain(|watcher| match watcher.sender.try_send(update.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                watcher.kicked.store(true, Ordering::SeqCst);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        let empty = watchers.is_empty();
        drop(watchers);
        if empty {
            self.watchers.remove_if(&update.sku, |_, watchers| watchers.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(available: u64, version: Ticket) -> StockUpdate {
        StockUpdate {
            sku: SkuId::parse("s").unwrap(),
            available,
            locations: Arc::from([]),
            version,
        }
    }

    #[test]
    fn a_watcher_that_falls_behind_is_dropped_and_the_others_keep_receiving() {
        let feed = StockFeed::default();
        let sku = SkuId::parse("s").unwrap();
        let (slow_sender, _slow_receiver) = mpsc::channel(1);
        let (fast_sender, mut fast_receiver) = mpsc::channel(8);
        let (slow_kicked, fast_kicked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        feed.watch(sku.clone(), slow_sender, Arc::clone(&slow_kicked));
        feed.watch(sku.clone(), fast_sender, Arc::clone(&fast_kicked));
        for version in 1..=3 {
            feed.publish(update(10 - version, version));
            // The fast watcher reads as it goes.
            assert_eq!(fast_receiver.try_recv().unwrap().version, version);
        }
        assert!(
            slow_kicked.load(Ordering::SeqCst),
            "the slow watcher was told it fell behind"
        );
        assert!(!fast_kicked.load(Ordering::SeqCst));
        assert!(feed.is_watched(&sku), "the fast watcher still watches");
        drop(fast_receiver);
        feed.publish(update(0, 4));
        assert!(!feed.is_watched(&sku), "watchers that went away are forgotten");
    }
}
