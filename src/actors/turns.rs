//! Turns: one SKU's writes share the writer fairly with every other SKU's.
//!
//! A write on one SKU (a reservation, a cart line) takes a turn of that SKU before it asks the
//! actor and keeps it until its change is durable. While other SKUs have writes in flight,
//! one SKU has at most `share` turns out; its further writes wait in that SKU's own queue,
//! first come first served. A flash sale on one SKU then queues behind itself, and the writer
//! batches (and the CPU) stay free for everyone else. When no other SKU is writing, a SKU
//! takes as many turns as it asks for: the writer is never left idle for fairness' sake.
//!
//! Waiting is bounded: a write that finds the head of its SKU's queue waiting longer than
//! `max_wait` is refused at once, and one that has waited `2 x max_wait` gives up; both answer
//! `503 overloaded` with `Retry-After`.
//!
//! Invariants (under each lane's lock):
//! - a lane with waiters has a turn out, so a finishing turn always wakes the next waiter;
//! - every turn handed out is given back exactly once, when its [`Turn`] is dropped (also
//!   when the waiter it was sent to has gone away).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::domain::SkuId;
use crate::metrics as names;

/// A write of this SKU may go ahead; dropping it lets the next one go.
#[derive(Debug)]
#[must_use = "the turn ends when dropped"]
pub struct Turn {
    /// The lane to give the turn back to; `None` when turns are off or already returned.
    lane: Option<Arc<Lane>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(lane) = self.lane.take() {
            lane.finish();
        }
    }
}

/// The write waited too long for its SKU's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the SKU's queue of writes is too long")]
pub struct TurnRefused;

/// The turns of every SKU.
#[derive(Debug)]
pub struct Turns {
    /// One lane per SKU that has written; SKUs are few enough to keep them.
    lanes: DashMap<SkuId, Arc<Lane>>,
    /// What every lane shares.
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Turns out over all SKUs.
    in_flight: AtomicUsize,
    /// Most turns of one SKU while others write; 0 = no limit.
    share: usize,
    /// Longest the head of a queue may wait before newcomers are refused.
    max_wait: Duration,
}

#[derive(Debug)]
struct Lane {
    shared: Arc<Shared>,
    state: Mutex<LaneState>,
}

#[derive(Debug, Default)]
struct LaneState {
    /// Turns of this SKU out.
    in_flight: usize,
    /// Writes waiting, oldest first.
    waiters: VecDeque<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    since: Instant,
    sender: oneshot::Sender<Turn>,
}

impl Turns {
    /// Turns with at most `share` out per SKU while others write (0: unlimited), refusing
    /// writes whose queue's head waited longer than `max_wait`.
    pub fn new(share: usize, max_wait: Duration) -> Self {
        Self {
            lanes: DashMap::new(),
            shared: Arc::new(Shared {
                in_flight: AtomicUsize::new(0),
                share,
                max_wait,
            }),
        }
    }

    /// Turns out over all SKUs.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// Waits for a turn of `sku` (call it only for a SKU that exists: lanes are kept).
    pub async fn take(&self, sku: &SkuId) -> Result<Turn, TurnRefused> {
        if self.shared.share == 0 {
            return Ok(Turn { lane: None });
        }
        let lane = match self.lanes.get(sku) {
            Some(lane) => Arc::clone(lane.value()),
            None => Arc::clone(
                self.lanes
                    .entry(sku.clone())
                    .or_insert_with(|| {
                        Arc::new(Lane {
                            shared: Arc::clone(&self.shared),
                            state: Mutex::default(),
                        })
                    })
                    .value(),
            ),
        };
        let receiver = {
            let mut state = lane.lock();
            // Writes that gave up leave their places behind; they are no one's head.
            while state.waiters.front().is_some_and(|waiter| waiter.sender.is_closed()) {
                state.waiters.pop_front();
            }
            if state.waiters.is_empty() && lane.admits(&state) {
                return Ok(lane.hand_out(&mut state));
            }
            if state
                .waiters
                .front()
                .is_some_and(|head| head.since.elapsed() > self.shared.max_wait)
            {
                metrics::counter!(names::OVERLOAD_REFUSALS_TOTAL, "queue" => "sku_turn").increment(1);
                return Err(TurnRefused);
            }
            let (sender, receiver) = oneshot::channel();
            state.waiters.push_back(Waiter {
                since: Instant::now(),
                sender,
            });
            receiver
        };
        let since = Instant::now();
        match tokio::time::timeout(2 * self.shared.max_wait, receiver).await {
            Ok(Ok(turn)) => {
                metrics::histogram!(names::SKU_TURN_WAIT_SECONDS).record(since.elapsed().as_secs_f64());
                Ok(turn)
            }
            // Timed out (or the lane went away): dropping the receiver gives back any turn
            // sent to it meanwhile.
            _ => {
                metrics::counter!(names::OVERLOAD_REFUSALS_TOTAL, "queue" => "sku_turn").increment(1);
                Err(TurnRefused)
            }
        }
    }
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        // A panic while holding the lock cannot leave the counts half-updated (each update
        // is one statement), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this SKU may take another turn now: under its share, or alone in writing.
    fn admits(&self, state: &LaneState) -> bool {
        state.in_flight < self.shared.share || self.shared.in_flight.load(Ordering::Acquire) == state.in_flight
    }

    fn hand_out(self: &Arc<Self>, state: &mut LaneState) -> Turn {
        state.in_flight += 1;
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        Turn {
            lane: Some(Arc::clone(self)),
        }
    }

    /// A turn came back: hand the freed places to the waiters in order. Below the share
    /// every free place is handed out; over it (writing alone) only the place just freed, so
    /// a SKU that grew while alone does not burst ahead the moment it is alone again.
    fn finish(self: &Arc<Self>) {
        let mut state = self.lock();
        let ceiling = if self.admits(&state) {
            state.in_flight.max(self.shared.share)
        } else {
            self.shared.share
        };
        state.in_flight -= 1;
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        while state.in_flight < ceiling {
            let Some(waiter) = state.waiters.pop_front() else {
                break;
            };
            let turn = self.hand_out(&mut state);
            if let Err(mut unwanted) = waiter.sender.send(turn) {
                // The waiter gave up: take the turn back here, under the lock we hold.
                unwanted.lane = None;
                state.in_flight -= 1;
                self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn sku(name: &str) -> SkuId {
        SkuId::parse(name).expect("a valid SKU id")
    }

    fn now<T>(future: impl std::future::Future<Output = T>) -> T {
        future.now_or_never().expect("ready at once")
    }

    #[tokio::test]
    async fn a_busy_sku_waits_its_turn_in_order_while_others_go_ahead() {
        let turns = Arc::new(Turns::new(2, Duration::from_secs(60)));
        let (hot, cold) = (sku("hot"), sku("cold"));
        let cold_turn = now(turns.take(&cold)).unwrap();
        let first = now(turns.take(&hot)).unwrap();
        let second = now(turns.take(&hot)).unwrap();
        // Over its share while another SKU writes: the third and fourth wait, in order.
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for n in [3, 4] {
            let (turns, hot, done_tx) = (Arc::clone(&turns), hot.clone(), done_tx.clone());
            tokio::spawn(async move {
                let turn = turns.take(&hot).await.unwrap();
                done_tx.send((n, turn)).unwrap();
            });
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        assert!(done_rx.try_recv().is_err(), "over its share, the hot SKU waits");
        // Another SKU is not held up by the hot one's queue.
        let other = now(turns.take(&sku("other"))).expect("another SKU goes at once");
        drop(first);
        let (n, third) = done_rx.recv().await.unwrap();
        assert_eq!(n, 3, "first come, first served");
        assert!(done_rx.try_recv().is_err(), "one turn back lets one waiter go");
        drop(second);
        let (n, fourth) = done_rx.recv().await.unwrap();
        assert_eq!(n, 4);
        drop((third, fourth, cold_turn, other));
        assert_eq!(turns.in_flight(), 0, "every turn came back");
    }

    #[tokio::test]
    async fn a_sku_writing_alone_is_not_held_to_its_share() {
        let turns = Turns::new(2, Duration::from_secs(60));
        let hot = sku("hot");
        let held: Vec<Turn> = (0..10).map(|_| now(turns.take(&hot)).unwrap()).collect();
        assert_eq!(turns.in_flight(), 10);
        // Once another SKU writes, the hot one is over its share and waits.
        let _cold = now(turns.take(&sku("cold"))).unwrap();
        assert!(turns.take(&hot).now_or_never().is_none());
        drop(held);
        assert_eq!(turns.in_flight(), 1);
    }

    #[tokio::test]
    async fn a_sku_that_grew_alone_shrinks_to_its_share_once_others_write() {
        let turns = Arc::new(Turns::new(2, Duration::from_secs(60)));
        let hot = sku("hot");
        let mut held: Vec<Turn> = (0..4).map(|_| now(turns.take(&hot)).unwrap()).collect();
        let cold = now(turns.take(&sku("cold"))).unwrap();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..3 {
            let (turns, hot, done_tx) = (Arc::clone(&turns), hot.clone(), done_tx.clone());
            tokio::spawn(async move { done_tx.send(turns.take(&hot).await.unwrap()).unwrap() });
        }
        tokio::task::yield_now().await;
        // Others write: turns coming back are not handed on until the SKU is under its share.
        held.truncate(2);
        tokio::task::yield_now().await;
        assert!(done_rx.try_recv().is_err(), "at its share, nobody waiting goes");
        held.pop();
        let first = done_rx.recv().await.expect("under its share, the next one goes");
        // Alone again: a turn coming back is handed on, one for one, never more.
        drop(cold);
        held.pop();
        let second = done_rx.recv().await.expect("alone, the freed turn is handed on");
        tokio::task::yield_now().await;
        assert!(done_rx.try_recv().is_err(), "no burst: one back, one on");
        assert_eq!(turns.in_flight(), 2);
        drop((first, second));
        let third = done_rx.recv().await.unwrap();
        drop(third);
        assert_eq!(turns.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_that_waited_too_long_refuses_newcomers_and_gives_up() {
        let turns = Arc::new(Turns::new(1, Duration::from_millis(200)));
        let hot = sku("hot");
        let _cold = now(turns.take(&sku("cold"))).unwrap();
        let holder = now(turns.take(&hot)).unwrap();
        let waiting = tokio::spawn({
            let (turns, hot) = (Arc::clone(&turns), hot.clone());
            async move { turns.take(&hot).await.map(drop) }
        });
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(250)).await;
        // The head has waited past max_wait: a newcomer is refused at once.
        assert_eq!(now(turns.take(&hot)).unwrap_err(), TurnRefused);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(waiting.await.unwrap(), Err(TurnRefused), "gives up after 2 x max_wait");
        // The place it left does not block: the turn comes back and the next write goes.
        drop(holder);
        let again = now(turns.take(&hot)).expect("the queue is empty again");
        drop(again);
        assert_eq!(turns.in_flight(), 1, "only the cold turn is out");
    }

    #[tokio::test]
    async fn a_turn_sent_to_a_waiter_that_went_away_comes_back() {
        let turns = Arc::new(Turns::new(1, Duration::from_secs(60)));
        let hot = sku("hot");
        let _cold = now(turns.take(&sku("cold"))).unwrap();
        let holder = now(turns.take(&hot)).unwrap();
        let mut gone = Box::pin(turns.take(&hot));
        assert!((&mut gone).now_or_never().is_none(), "waits");
        let next = tokio::spawn({
            let (turns, hot) = (Arc::clone(&turns), hot.clone());
            async move { turns.take(&hot).await.map(drop) }
        });
        tokio::task::yield_now().await;
        drop(gone);
        drop(holder);
        assert_eq!(next.await.unwrap(), Ok(()), "the turn skips the waiter that left");
        assert_eq!(turns.in_flight(), 1, "only the cold turn is out");
    }

    #[tokio::test]
    async fn share_zero_turns_the_limit_off() {
        let turns = Turns::new(0, Duration::from_secs(60));
        let _cold = now(turns.take(&sku("cold"))).unwrap();
        let held: Vec<Turn> = (0..100).map(|_| now(turns.take(&sku("hot"))).unwrap()).collect();
        assert_eq!(held.len(), 100);
    }
}
