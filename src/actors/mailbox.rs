//! A hard bound on an actor's mailbox.
//!
//! actix's own bound parks only the `Addr` clone that overflowed it, so clones handed to many
//! request handlers would never see "full". Here every message carries a [`MailboxSlot`]
//! that counts it from send until its handler drops it; a send beyond the capacity is refused
//! at once and the request answers `503 overloaded`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use tokio::sync::oneshot;

use crate::metrics as names;
use crate::persistence::Ticket;

/// An answer together with the ticket to wait on before reporting it.
#[derive(Debug)]
pub struct Acked<T> {
    /// The answer.
    pub value: T,
    /// Durable once this ticket is; 0 when nothing needs waiting for.
    pub ticket: Ticket,
}

/// Where an actor sends its answer.
pub type Reply<T> = oneshot::Sender<Acked<T>>;

/// Why a message could not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// The mailbox is at capacity.
    #[error("the actor's mailbox is full")]
    Overloaded,
    /// The actor is gone, or dropped the request without answering (it panicked).
    #[error("the actor did not answer")]
    NoAnswer,
}

/// One message's place in a bounded mailbox; dropping it frees the place.
#[derive(Debug)]
pub struct MailboxSlot(Arc<AtomicUsize>);

impl Drop for MailboxSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A bounded route to one actor.
pub struct Mailbox<A: Actor> {
    /// The actor's address.
    addr: Addr<A>,
    /// Messages sent and not yet handled.
    depth: Arc<AtomicUsize>,
    /// Most messages waiting at once.
    capacity: usize,
    /// The actor kind, for the refusal metric.
    kind: &'static str,
}

impl<A: Actor> Clone for Mailbox<A> {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
            depth: Arc::clone(&self.depth),
            capacity: self.capacity,
            kind: self.kind,
        }
    }
}

impl<A: Actor> Mailbox<A> {
    /// A bounded route to `addr`.
    pub fn new(addr: Addr<A>, capacity: usize, kind: &'static str) -> Self {
        Self {
            addr,
            depth: Arc::new(AtomicUsize::new(0)),
            capacity,
            kind,
        }
    }

    /// The actor's address.
    pub fn addr(&self) -> &Addr<A> {
        &self.addr
    }

    /// Whether this route leads to the actor at `addr`.
    pub fn leads_to(&self, addr: &Addr<A>) -> bool {
        self.addr == *addr
    }

    /// Messages waiting right now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// Sends the message built by `make` (from its reply sender and slot) and returns the
    /// receiver of the answer, or refuses at once when the mailbox is full.
    pub fn ask<M, T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>, MailboxSlot) -> M,
    ) -> Result<oneshot::Receiver<T>, AskError>
    where
        M: Message<Result = ()> + Send + 'static,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let admitted = self.depth.fetch_update(Ordering::AcqRel, Ordering::Acquire, |depth| {
            (depth < self.capacity).then_some(depth + 1)
        });
        if admitted.is_err() {
            metrics::counter!(names::OVERLOAD_REFUSALS_TOTAL, "queue" => self.kind).increment(1);
            return Err(AskError::Overloaded);
        }
        let slot = MailboxSlot(Arc::clone(&self.depth));
        let (sender, receiver) = oneshot::channel();
        // A fresh clone per send: actix parks the sending clone when its own (unbounded here)
        // buffer is exceeded, and a parked shared address would refuse everyone.
        match self.addr.clone().try_send(make(sender, slot)) {
            Ok(()) => Ok(receiver),
            // The message (and its slot) was dropped: the place is already freed.
            Err(SendError::Full(_)) => Err(AskError::Overloaded),
            Err(SendError::Closed(_)) => Err(AskError::NoAnswer),
        }
    }
}
