//! The Kafka bridge: publishes the event log (the outbox) to Kafka, at least once, in order.
//!
//! - It reads only durable events (below the writer's durable end of the log), in sequence
//!   order, from its position: the first event the broker has not acknowledged.
//! - Each event goes out as a structured-mode CloudEvent to its aggregate kind's topic, keyed
//!   by the aggregate id, through the idempotent producer (`acks=all`). Up to
//!   `max_in_flight_events` are in flight at once; the position advances over the
//!   acknowledged prefix only, from delivery reports, and is written to the store every
//!   `position_interval_ms`.
//! - A failed delivery (message timeout while the broker is away, or any other error) stops
//!   new sends; once every report of the window is in, the bridge waits (backoff doubling up
//!   to `retry_backoff_max_ms`), makes sure the topics exist, and sends again from the first
//!   event not acknowledged, in order. Events after it that did arrive are sent again:
//!   consumers deduplicate by `id`.
//! - The events are read from the write-ahead log. Log retention never removes a record
//!   with events at or after the stored position (see [`crate::persistence::checkpoint`]),
//!   so a backlog only grows while the broker is away.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use crate::config::KafkaSettings;
use crate::domain::Clock;
use crate::domain::EventRecord;
use crate::events::{self, TopicKind};
use crate::metrics as names;
use crate::persistence::log::{read_events, Log, ReadEventsError};
use crate::persistence::writer::Change;
use crate::persistence::{codec, keys, Op, StateView, StoreError, Ticket, Writer};

/// Events read from the store in one step.
const READ_BATCH: usize = 512;

/// How long shutdown waits for reports of events in flight.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The producer configuration: the defaults, the operator's options, then the two settings
/// the bridge's guarantees rest on.
pub fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "stockroom")
        .set("linger.ms", "5");
    for (key, value) in &settings.options {
        config.set(key, value.to_string());
    }
    // Never time a message out locally: one that timed out is outside the idempotent
    // producer's gapless order, so a later event of its key could arrive first. While the
    // broker is away, events wait in the producer (and the log) instead; the bridge itself
    // notices a stall and repairs what it can (see `watch_for_stall`).
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "0");
    config
}

/// Reads the stored position; `None` when the bridge has never run on this store.
pub fn stored_position(store: &StateView) -> Result<Option<u64>, StoreError> {
    let key = keys::kafka_position();
    store
        .get(&key)?
        .map(|bytes| codec::decode::<u64>(&key, &bytes))
        .transpose()
}

/// What the bridge shows of itself, for `/health`: read from any thread.
#[derive(Debug, Default)]
pub struct KafkaStatus {
    /// Durable events not yet acknowledged.
    backlog_events: AtomicU64,
    /// Events that went to the dead-letter topic since start.
    dead_lettered_events: AtomicU64,
    /// Above this backlog the bridge raises its alert.
    max_backlog_events: u64,
}

impl KafkaStatus {
    /// A status that alerts above `max_backlog_events`.
    pub fn new(max_backlog_events: u64) -> Self {
        Self {
            max_backlog_events,
            ..Self::default()
        }
    }

    /// Durable events not yet acknowledged.
    pub fn backlog_events(&self) -> u64 {
        self.backlog_events.load(Ordering::Relaxed)
    }

    /// Events that went to the dead-letter topic since start.
    pub fn dead_lettered_events(&self) -> u64 {
        self.dead_lettered_events.load(Ordering::Relaxed)
    }

    /// Whether the backlog is over `kafka.max_backlog_events`.
    pub fn backlog_alert(&self) -> bool {
        self.backlog_events() > self.max_backlog_events
    }
}

/// The state of one event handed to the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Sent, no report yet.
    InFlight,
    /// The broker acknowledged it.
    Acked,
    /// Its delivery failed.
    Failed,
}

/// The bridge actor. Runs on an arbiter of its own: it reads the store.
pub struct KafkaBridge {
    settings: KafkaSettings,
    store: StateView,
    writer: Arc<Writer>,
    clock: Arc<dyn Clock>,
    producer: FutureProducer,
    /// Topic names by [`TopicKind`], in [`TopicKind::ALL`] order.
    topics: [String; 3],
    /// Where events that cannot be published go, with the reason.
    dead_letter_topic: String,
    /// What `/health` shows.
    status: Arc<KafkaStatus>,
    /// Every event below this has been acknowledged.
    delivered: u64,
    /// The position last written to the store.
    persisted: u64,
    /// The next event to hand to the producer.
    next_send: u64,
    /// Slots of the events `delivered..next_send`.
    window: VecDeque<Slot>,
    /// The log position of each event of the window, to read again from after a failure.
    window_positions: VecDeque<u64>,
    /// The log position to read the event `next_send` from.
    cursor: u64,
    /// A log position at or before the record of the event `delivered`.
    delivered_cursor: u64,
    /// Slots still waiting for a report.
    in_flight: usize,
    /// The durable end of the event log.
    events_end: tokio::sync::watch::Receiver<u64>,
    /// The topics exist (or were checked since the last failure).
    topics_ready: bool,
    /// A delivery failed: send nothing until the window's reports are in, then start over.
    failing: bool,
    /// A pump is scheduled (after a full producer queue or a backoff).
    pump_scheduled: bool,
    /// Shutting down: send nothing more.
    stopping: bool,
    /// The current wait before the next attempt after a failure.
    backoff_ms: u64,
    /// Attempts in a row that ended in a failure without delivering anything.
    failed_attempts: u32,
    /// A failure of the current attempt says the broker refuses the producer's identity.
    producer_refused: bool,
    /// When the bridge last saw progress: an acknowledgement, or an empty window.
    progress_ms: u64,
    /// When the topics were last checked because of a stall.
    stall_checked_ms: u64,
}

/// With events in flight and no acknowledgement for this long, the bridge checks the
/// topics: a broker that came back empty has none, and the producer waits for them.
const STALL_CHECK: Duration = Duration::from_secs(2);

/// Attempts in a row without progress after which the producer is replaced anyway.
const ATTEMPTS_BEFORE_NEW_PRODUCER: u32 = 3;

/// Errors that no retry gets past for this event: it is too large or invalid.
fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::MessageBatchTooLarge
        )
    )
}

/// Errors that say the broker no longer accepts this producer's id or epoch (for example a
/// restarted broker that lost its producer state): only a new producer gets past them.
fn refuses_producer(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::InvalidProducerIdMapping
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::Fatal
        )
    )
}

impl KafkaBridge {
    /// Builds the producer and reads the starting position. When the bridge has never run,
    /// it starts at the oldest event still in the log (older ones were removed while Kafka
    /// was off), and stores that position at once so retention keeps everything after it.
    pub fn new(
        settings: KafkaSettings,
        store: StateView,
        writer: Arc<Writer>,
        clock: Arc<dyn Clock>,
        status: Arc<KafkaStatus>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let producer: FutureProducer = producer_config(&settings)
            .create()
            .context("creating the Kafka producer (check kafka.brokers and kafka.options)")?;
        let events_end = writer.durability().watch_events_end();
        let log: &dyn Log = store.storage.as_ref();
        let start = match stored_position(&store)? {
            Some(position) => position,
            None => read_events(log, 0, 0, 1)?
                .0
                .first()
                .map_or(*events_end.borrow(), |(_, event)| event.seq),
        };
        let topics = TopicKind::ALL.map(|kind| kind.topic(&settings.topic_prefix));
        let dead_letter_topic = format!("{}.deadletter", settings.topic_prefix);
        let backoff_ms = settings.retry_backoff_min_ms;
        let mut bridge = Self {
            settings,
            store,
            writer,
            clock,
            producer,
            topics,
            dead_letter_topic,
            status,
            delivered: start,
            persisted: 0,
            next_send: start,
            window: VecDeque::new(),
            window_positions: VecDeque::new(),
            cursor: 0,
            delivered_cursor: 0,
            in_flight: 0,
            events_end,
            topics_ready: false,
            failing: false,
            pump_scheduled: false,
            stopping: false,
            backoff_ms,
            failed_attempts: 0,
            producer_refused: false,
            progress_ms: 0,
            stall_checked_ms: 0,
        };
        bridge.persist_position();
        tracing::info!(position = start, brokers = %bridge.settings.brokers, "Kafka bridge starting");
        Ok(bridge)
    }

    fn topic(&self, kind: TopicKind) -> &str {
        let index = TopicKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        &self.topics[index]
    }

    /// Writes the delivered position through the writer when it moved. Returns its ticket.
    fn persist_position(&mut self) -> Option<Ticket> {
        if self.delivered == self.persisted {
            return None;
        }
        // A full queue only delays this: the next tick tries again.
        let permit = self.writer.try_reserve()?;
        let ticket = permit.submit(Change {
            ops: vec![Op::Put(keys::kafka_position(), codec::encode(&self.delivered))],
            events: Vec::new(),
            time_ms: self.clock.now_ms(),
            by: crate::access::by_system(),
        });
        self.persisted = self.delivered;
        metrics::gauge!(names::KAFKA_POSITION).set(self.delivered as f64);
        Some(ticket)
    }

    fn report_backlog(&self) {
        let end = *self.events_end.borrow();
        let backlog = end.saturating_sub(self.delivered);
        self.status.backlog_events.store(backlog, Ordering::Relaxed);
        metrics::gauge!(names::KAFKA_BACKLOG_EVENTS).set(backlog as f64);
        metrics::gauge!(names::KAFKA_BACKLOG_ALERT).set(if self.status.backlog_alert() { 1.0 } else { 0.0 });
    }

    /// A request that creates the topics that do not exist; `Err` says why it could not.
    fn create_topics(&self) -> impl std::future::Future<Output = Result<(), String>> + 'static {
        let admin: Result<AdminClient<DefaultClientContext>, KafkaError> = producer_config(&self.settings).create();
        let replication_factor = self.settings.replication_factor;
        let partitions = self.settings.partitions;
        let mut names = self.topics.to_vec();
        names.push(self.dead_letter_topic.clone());
        async move {
            let admin = admin.map_err(|error| format!("cannot create the Kafka admin client: {error}"))?;
            let topics: Vec<NewTopic<'_>> = names
                .iter()
                .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication_factor)))
                .collect();
            let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
            let results = admin
                .create_topics(&topics, &options)
                .await
                .map_err(|error| error.to_string())?;
            match results.into_iter().find_map(|result| match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => None,
                Err((topic, code)) => Some(format!("{topic}: {code}")),
            }) {
                None => Ok(()),
                Some(error) => Err(error),
            }
        }
    }

    /// Creates the topics that do not exist, then starts sending; on failure, tries again
    /// after the backoff.
    fn ensure_topics(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(
            self.create_topics()
                .into_actor(self)
                .map(|result, bridge, ctx| match result {
                    Ok(()) => {
                        bridge.topics_ready = true;
                        bridge.pump(ctx);
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot create the Kafka topics; trying again");
                        bridge.retry_later(ctx);
                    }
                }),
        );
    }

    /// Every second: events in flight with no acknowledgement for [`STALL_CHECK`] mean the
    /// broker is away, or back without the topics (an empty broker). The topics are created
    /// again if missing, at most once per [`STALL_CHECK`]; the producer then delivers what it
    /// holds, in order, or fails it at once (a broker that lost the producer's state fences
    /// it), and the bridge starts over from the first event not acknowledged.
    fn watch_for_stall(&mut self, ctx: &mut Context<Self>) {
        let now_ms = self.clock.now_ms();
        if self.in_flight == 0 || self.failing || self.stopping {
            self.progress_ms = now_ms;
            return;
        }
        let stall_ms = STALL_CHECK.as_millis() as u64;
        if now_ms.saturating_sub(self.progress_ms) < stall_ms || now_ms.saturating_sub(self.stall_checked_ms) < stall_ms
        {
            return;
        }
        self.stall_checked_ms = now_ms;
        metrics::counter!(names::KAFKA_STALL_CHECKS_TOTAL).increment(1);
        ctx.spawn(self.create_topics().into_actor(self).map(|result, _, _| {
            if let Err(error) = result {
                tracing::debug!(error = %error, "the Kafka topics could not be checked during a stall");
            }
        }));
    }

    /// Waits for the backoff, then checks the topics and sends again.
    fn retry_later(&mut self, ctx: &mut Context<Self>) {
        let wait = Duration::from_millis(self.backoff_ms);
        self.backoff_ms = self
            .backoff_ms
            .saturating_mul(2)
            .min(self.settings.retry_backoff_max_ms);
        ctx.run_later(wait, |bridge, ctx| {
            if !bridge.stopping {
                bridge.ensure_topics(ctx);
            }
        });
    }

    /// Hands durable events to the producer until the window is full or the log is drained.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if !self.topics_ready || self.failing || self.stopping {
            return;
        }
        let end = *self.events_end.borrow();
        while self.next_send < end && self.window.len() < self.settings.max_in_flight_events {
            let room = self.settings.max_in_flight_events - self.window.len();
            let want = usize::try_from(end - self.next_send)
                .unwrap_or(usize::MAX)
                .min(room)
                .min(READ_BATCH);
            let log: &dyn Log = self.store.storage.as_ref();
            let (events, cursor) = match read_events(log, self.cursor, self.next_send, want) {
                Ok(read) => read,
                Err(ReadEventsError::Store(error)) => {
                    tracing::error!(error = %error, "reading the event log failed; trying again");
                    self.schedule_pump(ctx, Duration::from_millis(self.settings.retry_backoff_max_ms));
                    return;
                }
                Err(ReadEventsError::Undecodable { position, reason }) => {
                    // Its events cannot be published: they go to the dead-letter topic as a
                    // range, with the reason, and the bridge goes on after them.
                    if !self.window.is_empty() {
                        // Once what is in flight is reported, the window starts here.
                        return;
                    }
                    let end_seq = match self.first_seq_after(position) {
                        Ok(end_seq) => end_seq.min(end),
                        Err(error) => {
                            tracing::error!(error = %error, "reading the event log failed; trying again");
                            self.schedule_pump(ctx, Duration::from_millis(self.settings.retry_backoff_max_ms));
                            return;
                        }
                    };
                    let reason = format!("log record {position} cannot be decoded: {reason}");
                    let range = (self.next_send, end_seq.max(self.next_send + 1));
                    self.dead_letter(range.0, range.1, (position, position + 1), reason, ctx);
                    return;
                }
            };
            if events.is_empty() {
                return;
            }
            for (position, record) in events {
                if record.seq >= end {
                    return;
                }
                if record.seq != self.next_send {
                    if !self.window.is_empty() {
                        // Settled once what is in flight is reported (the window then starts
                        // here and the gap is handled below).
                        return;
                    }
                    if self.delivered == self.persisted && self.persisted == self.next_send && self.never_sent() {
                        // Removed by retention before the bridge first ran: nothing to do but
                        // say so.
                        tracing::warn!(
                            from = self.next_send,
                            to = record.seq,
                            "events missing from the log were never published"
                        );
                        self.delivered = record.seq;
                        self.next_send = record.seq;
                    } else {
                        // Events the bridge needs are not in the log: named in the dead-letter
                        // topic, and the bridge goes on after them.
                        let reason = format!(
                            "events {} to {} are missing from the log",
                            self.next_send,
                            record.seq - 1
                        );
                        // The record at `position` holds `record.seq`: read on from it.
                        self.dead_letter(self.next_send, record.seq, (position, position), reason, ctx);
                        return;
                    }
                }
                self.cursor = position;
                if !self.send(record, position, ctx) {
                    return;
                }
            }
            self.cursor = cursor;
        }
    }

    /// Whether this bridge has sent nothing since it started.
    fn never_sent(&self) -> bool {
        self.delivered_cursor == 0 && self.window.is_empty()
    }

    /// The first event sequence of the first decodable record after `position` (the events
    /// end when there is none).
    fn first_seq_after(&self, position: u64) -> Result<u64, StoreError> {
        let log: &dyn Log = self.store.storage.as_ref();
        let mut next = position + 1;
        loop {
            let records = log.read(next, 64)?;
            let Some((last, _)) = records.last() else {
                return Ok(*self.events_end.borrow());
            };
            next = last + 1;
            for (at, bytes) in &records {
                if let Ok(record) = crate::persistence::log::decode_record(*at, bytes) {
                    if let Some(first) = record.events.first() {
                        return Ok(first.seq);
                    }
                }
            }
        }
    }

    /// Publishes, to the dead-letter topic, that events `first..end` cannot be published and
    /// why (`position`: the log record they are, or were to be, in); once acknowledged, they
    /// count as delivered and the bridge goes on from `end`, reading the log from `resume`.
    fn dead_letter(
        &mut self,
        first: u64,
        end: u64,
        (position, resume): (u64, u64),
        reason: String,
        ctx: &mut Context<Self>,
    ) {
        tracing::error!(first, end, reason = %reason, "events cannot be published; they go to the dead-letter topic");
        let payload = serde_json::json!({
            "first_seq": first,
            "end_seq": end,
            "log_position": position,
            "reason": reason,
            "time": crate::domain::clock::rfc3339(self.clock.now_ms()),
        })
        .to_string();
        let key = format!("{first}-{end}");
        let topic = self.dead_letter_topic.clone();
        let sent = self
            .producer
            .send_result(FutureRecord::to(&topic).key(key.as_bytes()).payload(&payload));
        let delivery = match sent {
            Ok(delivery) => delivery,
            Err((error, _)) => {
                tracing::warn!(error = %error, "the dead-letter record could not be sent; trying again");
                self.schedule_pump(ctx, Duration::from_millis(self.settings.retry_backoff_max_ms));
                return;
            }
        };
        let count = end - first;
        for _ in first..end {
            self.window.push_back(Slot::InFlight);
            self.window_positions.push_back(resume);
        }
        self.in_flight += usize::try_from(count).unwrap_or(usize::MAX);
        self.next_send = end;
        self.cursor = resume;
        ctx.spawn(delivery.into_actor(self).map(move |report, bridge, ctx| {
            let slot = match report {
                Ok(Ok(_)) => {
                    bridge.status.dead_lettered_events.fetch_add(count, Ordering::Relaxed);
                    metrics::counter!(names::KAFKA_DEAD_LETTERED_TOTAL).increment(count);
                    Slot::Acked
                }
                _ => {
                    bridge.failing = true;
                    Slot::Failed
                }
            };
            for seq in first..end {
                if let Some(index) = seq.checked_sub(bridge.delivered).and_then(|i| usize::try_from(i).ok()) {
                    if let Some(entry) = bridge.window.get_mut(index) {
                        *entry = slot;
                    }
                }
            }
            bridge.in_flight = bridge
                .in_flight
                .saturating_sub(usize::try_from(count).unwrap_or(usize::MAX));
            bridge.after_report(ctx);
        }));
    }

    /// Names event `seq`, already in the window (in flight), in the dead-letter topic; its slot
    /// is settled by that record's report.
    fn dead_letter_in_flight(&mut self, seq: u64, reason: String, ctx: &mut Context<Self>) {
        tracing::error!(seq, reason = %reason, "an event cannot be published; it goes to the dead-letter topic");
        let payload = serde_json::json!({
            "first_seq": seq,
            "end_seq": seq + 1,
            "reason": reason,
            "time": crate::domain::clock::rfc3339(self.clock.now_ms()),
        })
        .to_string();
        let key = format!("{seq}-{}", seq + 1);
        let topic = self.dead_letter_topic.clone();
        let settle = move |bridge: &mut KafkaBridge, slot: Slot, ctx: &mut Context<KafkaBridge>| {
            if slot == Slot::Acked {
                bridge.status.dead_lettered_events.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(names::KAFKA_DEAD_LETTERED_TOTAL).increment(1);
            } else {
                bridge.failing = true;
            }
            if let Some(entry) = seq
                .checked_sub(bridge.delivered)
                .and_then(|index| usize::try_from(index).ok())
                .and_then(|index| bridge.window.get_mut(index))
            {
                *entry = slot;
            }
            bridge.in_flight -= 1;
            bridge.after_report(ctx);
        };
        match self
            .producer
            .send_result(FutureRecord::to(&topic).key(key.as_bytes()).payload(&payload))
        {
            Ok(delivery) => {
                ctx.spawn(delivery.into_actor(self).map(move |report, bridge, ctx| {
                    let slot = if matches!(report, Ok(Ok(_))) {
                        Slot::Acked
                    } else {
                        Slot::Failed
                    };
                    settle(bridge, slot, ctx);
                }));
            }
            Err(_) => settle(self, Slot::Failed, ctx),
        }
    }

    /// Hands one event to the producer; `false` when it could not take it now.
    fn send(&mut self, record: EventRecord, position: u64, ctx: &mut Context<Self>) -> bool {
        let kind = TopicKind::of(&record.event);
        let payload = events::encode(&record, &self.settings.source);
        let subject = record.event.subject();
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(events::CONTENT_TYPE),
        });
        let topic = self.topic(kind).to_owned();
        let sent = self.producer.send_result(
            FutureRecord::to(&topic)
                .key(subject.as_bytes())
                .payload(&payload)
                .headers(headers),
        );
        match sent {
            Ok(delivery) => {
                self.window_positions.push_back(position);
                self.track(record.seq, record.time_ms, kind, delivery, ctx);
                true
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                self.schedule_pump(ctx, Duration::from_millis(10));
                false
            }
            Err((error, _)) if is_permanent(&error) => {
                // It will never be taken (too large, invalid): named in the dead-letter topic
                // instead, and the bridge goes on.
                let reason = format!("the producer refused event {}: {error}", record.seq);
                self.dead_letter(record.seq, record.seq + 1, (position, position), reason, ctx);
                true
            }
            Err((error, _)) => {
                tracing::warn!(error = %error, seq = record.seq, "the producer refused an event");
                metrics::counter!(names::KAFKA_FAILED_TOTAL, "topic" => topic).increment(1);
                // Counts as a failed delivery of this event: start over from it.
                self.window.push_back(Slot::Failed);
                self.window_positions.push_back(position);
                self.next_send += 1;
                self.failing = true;
                self.after_report(ctx);
                false
            }
        }
    }

    fn track(&mut self, seq: u64, time_ms: u64, kind: TopicKind, delivery: DeliveryFuture, ctx: &mut Context<Self>) {
        self.window.push_back(Slot::InFlight);
        self.in_flight += 1;
        self.next_send += 1;
        ctx.spawn(delivery.into_actor(self).map(move |report, bridge, ctx| {
            let Some(index) = seq.checked_sub(bridge.delivered).and_then(|i| usize::try_from(i).ok()) else {
                return;
            };
            if bridge.window.get(index) != Some(&Slot::InFlight) {
                return;
            }
            let topic = bridge.topic(kind).to_owned();
            let slot = &mut bridge.window[index];
            match report {
                Ok(Ok(_)) => {
                    *slot = Slot::Acked;
                    bridge.progress_ms = bridge.clock.now_ms();
                    let latency_ms = bridge.clock.now_ms().saturating_sub(time_ms);
                    metrics::counter!(names::KAFKA_PUBLISHED_TOTAL, "topic" => topic).increment(1);
                    metrics::histogram!(names::KAFKA_DELIVERY_SECONDS).record(latency_ms as f64 / 1000.0);
                }
                Ok(Err((error, _))) if is_permanent(&error) => {
                    // Refused for good by the broker: the slot waits for its dead letter.
                    let reason = format!("the broker refused event {seq}: {error}");
                    bridge.dead_letter_in_flight(seq, reason, ctx);
                    return;
                }
                Ok(Err((error, _))) => {
                    *slot = Slot::Failed;
                    bridge.producer_refused |= refuses_producer(&error);
                    if !bridge.failing {
                        tracing::warn!(error = %error, seq, topic = %topic, "a Kafka delivery failed; publishing again from the first event not acknowledged");
                    }
                    bridge.failing = true;
                    metrics::counter!(names::KAFKA_FAILED_TOTAL, "topic" => topic).increment(1);
                }
                Err(_canceled) => {
                    *slot = Slot::Failed;
                    bridge.failing = true;
                    metrics::counter!(names::KAFKA_FAILED_TOTAL, "topic" => topic).increment(1);
                }
            }
            bridge.in_flight -= 1;
            bridge.after_report(ctx);
        }));
    }

    /// Advances over the acknowledged prefix; after a failure, starts over once the window's
    /// reports are all in.
    fn after_report(&mut self, ctx: &mut Context<Self>) {
        while self.window.front() == Some(&Slot::Acked) {
            self.window.pop_front();
            if let Some(position) = self.window_positions.pop_front() {
                self.delivered_cursor = position;
            }
            self.delivered += 1;
            self.failed_attempts = 0;
        }
        if self.failing {
            if self.in_flight == 0 {
                self.window.clear();
                self.window_positions.clear();
                self.next_send = self.delivered;
                self.cursor = self.delivered_cursor;
                self.failing = false;
                self.topics_ready = false;
                self.failed_attempts += 1;
                self.replace_producer_if_stuck();
                if !self.stopping {
                    self.retry_later(ctx);
                }
            }
            return;
        }
        if self.window.is_empty() {
            self.backoff_ms = self.settings.retry_backoff_min_ms;
        }
        self.pump(ctx);
    }

    /// An idempotent producer can fail fatally, or be refused by a broker that lost its
    /// state (a restarted broker answers "producer fenced"); it then refuses everything, so a
    /// new one takes its place. Also after several attempts in a row that delivered nothing.
    fn replace_producer_if_stuck(&mut self) {
        let fatal = self.producer.client().fatal_error();
        let refused = std::mem::take(&mut self.producer_refused);
        if fatal.is_none() && !refused && self.failed_attempts < ATTEMPTS_BEFORE_NEW_PRODUCER {
            return;
        }
        let reason = match fatal {
            Some((code, reason)) => format!("{code}: {reason}"),
            None if refused => "the broker refused the producer's id".to_owned(),
            None => format!("{} attempts without progress", self.failed_attempts),
        };
        tracing::warn!(reason = %reason, "starting a new Kafka producer");
        match producer_config(&self.settings).create() {
            Ok(producer) => {
                self.producer = producer;
                self.failed_attempts = 0;
            }
            Err(error) => tracing::error!(error = %error, "cannot start a new Kafka producer; trying again later"),
        }
    }

    fn schedule_pump(&mut self, ctx: &mut Context<Self>, after: Duration) {
        if self.pump_scheduled {
            return;
        }
        self.pump_scheduled = true;
        ctx.run_later(after, |bridge, ctx| {
            bridge.pump_scheduled = false;
            bridge.pump(ctx);
        });
    }
}

impl Actor for KafkaBridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // New durable events wake the pump.
        ctx.add_stream(durable_end_changes(self.events_end.clone()));
        ctx.run_interval(
            Duration::from_millis(self.settings.position_interval_ms),
            |bridge, _| {
                bridge.persist_position();
                bridge.report_backlog();
            },
        );
        ctx.run_interval(Duration::from_secs(1), |bridge, ctx| bridge.watch_for_stall(ctx));
        self.ensure_topics(ctx);
    }
}

/// The durable end of the log changed.
struct EventsEnd;

impl StreamHandler<EventsEnd> for KafkaBridge {
    fn handle(&mut self, _: EventsEnd, ctx: &mut Self::Context) {
        self.pump(ctx);
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // The writer is gone (shutdown): nothing more will become durable.
    }
}

/// A stream with one item per change of the durable end of the log (changes coalesce).
fn durable_end_changes(receiver: tokio::sync::watch::Receiver<u64>) -> impl futures_util::Stream<Item = EventsEnd> {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.changed().await.ok()?;
        Some((EventsEnd, receiver))
    })
}

/// Stops sending, waits (at most [`SHUTDOWN_WAIT`]) for the reports of events in flight,
/// and writes the final position. Answers the ticket of that write, if any.
#[derive(Message)]
#[rtype(result = "Option<Ticket>")]
pub struct StopBridge;

impl Handler<StopBridge> for KafkaBridge {
    type Result = ResponseActFuture<Self, Option<Ticket>>;

    fn handle(&mut self, _: StopBridge, _: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        Box::pin(
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            .into_actor(self)
            .then(move |(), bridge, _| wait_for_reports(bridge, deadline))
            .map(|(), bridge, _| {
                if bridge.in_flight > 0 {
                    tracing::warn!(
                        in_flight = bridge.in_flight,
                        "stopping with Kafka deliveries unreported; they are sent again at the next start"
                    );
                }
                let _ = bridge.producer.flush(Duration::from_millis(0));
                bridge.persist_position()
            }),
        )
    }
}

fn wait_for_reports(bridge: &mut KafkaBridge, deadline: tokio::time::Instant) -> ResponseActFuture<KafkaBridge, ()> {
    if bridge.in_flight == 0 || tokio::time::Instant::now() >= deadline {
        return Box::pin(fut::ready(()));
    }
    Box::pin(
        tokio::time::sleep(Duration::from_millis(10))
            .into_actor(bridge)
            .then(move |(), bridge, _| wait_for_reports(bridge, deadline)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KafkaOption;

    #[test]
    fn the_producer_never_times_a_message_out_locally_whatever_the_options_say() {
        // A message that timed out locally is outside the idempotent producer's gapless
        // order: a later event of its key could be delivered before it is sent again.
        let mut settings = KafkaSettings::default();
        settings
            .options
            .insert("message.timeout.ms".to_owned(), KafkaOption::Int(5_000));
        settings
            .options
            .insert("enable.idempotence".to_owned(), KafkaOption::Bool(false));
        settings.options.insert("linger.ms".to_owned(), KafkaOption::Int(20));
        let config = producer_config(&settings);
        assert_eq!(config.get("message.timeout.ms"), Some("0"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("linger.ms"), Some("20"), "other options pass through");
        assert_eq!(
            producer_config(&KafkaSettings::default()).get("message.timeout.ms"),
            Some("0")
        );
    }
}
