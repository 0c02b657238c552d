//! The write-ahead log: the truth of what was committed.
//!
//! Each group commit appends its changes to the log as [`WalRecord`]s and syncs once; that
//! sync is the durability point of every change in it. State rows are only a checkpoint of
//! the log (see [`super::checkpoint`]), and the event outbox is read from it (see
//! [`read_events`]): an event exists exactly when its change does, because both are in one
//! record.
//!
//! # Record format
//!
//! `[RECORD_VERSION] [events end: u64 little-endian] [bincode of WalRecord] [crc32 of
//! everything before, little-endian]`. The events end is the sequence number after the
//! record's last event (0: no events), so that replay reads it without decoding the events
//! ([`decode_record_ops`]). Version 3 added it; version 2 records (who made each change,
//! `by`, in every event) and version 1 records (events without `by`), written before, are
//! still read.
//! Records are keyed by their position, a `u64` that grows by one per record. A group commit
//! larger than [`RECORD_BYTES_TARGET`] is split into several records, all appended in one
//! atomic call, so that no sled item (a record, or a leaf of about 16 records) goes over
//! sled's blob threshold; blob files are synced anyway (see [`super::sled_store`]).
//!
//! # Contract of a [`Log`]
//!
//! 1. Records become durable in the order they were appended: a crash keeps a prefix of
//!    them. Each record holds whole changes, so any prefix is a consistent state.
//! 2. Nothing appended is durable before a later `sync` returns `Ok`; after that, everything
//!    appended before the `sync` started is.
//! 4. An error from `append` or `sync` is final: the caller stops without acknowledging.
//!
//! The trait is small on purpose: a replicated log (one Kafka partition per shard of SKUs)
//! could stand in for the sled one.

use bincode::Options;
use serde::{Deserialize, Serialize};

use super::{Op, StoreError};
use crate::domain::{DomainEvent, EventRecord};

/// The version byte of the log records this build writes.
pub const RECORD_VERSION: u8 = 3;

/// The format before the events end in the header.
const RECORD_VERSION_2: u8 = 2;

/// Bytes of a version 3 header: the version and the events end.
const HEADER_BYTES: usize = 1 + 8;

/// The first record format: events without `by`.
const RECORD_VERSION_1: u8 = 1;

/// A record of format 1, as read.
#[derive(Deserialize)]
struct WalRecordV1 {
    ops: Vec<Op>,
    events: Vec<EventRecordV1>,
}

/// An event of a format 1 record.
#[derive(Deserialize)]
struct EventRecordV1 {
    seq: u64,
    time_ms: u64,
    event: DomainEvent,
}

impl From<WalRecordV1> for WalRecord {
    fn from(record: WalRecordV1) -> Self {
        let unknown: std::sync::Arc<str> = std::sync::Arc::from("");
        WalRecord {
            ops: record.ops,
            events: record
                .events
                .into_iter()
                .map(|event| EventRecord {
                    seq: event.seq,
                    time_ms: event.time_ms,
                    event: event.event,
                    by: std::sync::Arc::clone(&unknown),
                })
                .collect(),
        }
    }
}

/// A group commit is split into records of about this many bytes (a record holds at least
/// one whole change). Sled stores an item larger than a quarter of a segment (512 KiB) as a
/// blob; a leaf holds up to about 17 records, so 6 KiB keeps leaves below that too.
pub const RECORD_BYTES_TARGET: usize = 6 * 1024;

/// A log record as stored: its position and its encoded bytes.
pub type PositionedRecord = (u64, Vec<u8>);

/// The append-only log behind the writer: see the contract at the top of this module.
pub trait Log: Send + Sync + 'static {
    /// Appends `records` (position, bytes), in order; not yet durable.
    fn append(&self, records: Vec<PositionedRecord>) -> Result<(), StoreError>;

    /// Makes everything appended so far durable.
    fn sync(&self) -> Result<(), StoreError>;

    /// Up to `limit` records at `from` or later, in position order.
    fn read(&self, from: u64, limit: usize) -> Result<Vec<PositionedRecord>, StoreError>;

    /// Removes the records at these positions (the checkpoint covers them and no consumer
    /// needs them). Need not be durable: a record that comes back is skipped by position.
    fn remove(&self, positions: Vec<u64>) -> Result<(), StoreError>;
}

/// One record of the log: row changes and the events that explain them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRecord {
    /// Puts and deletes of state rows, in commit order.
    pub ops: Vec<Op>,
    /// Events, in sequence order.
    pub events: Vec<EventRecord>,
}

/// Borrowed form of [`WalRecord`] for encoding without copying (same wire format).
#[derive(Serialize)]
struct WalRecordRef<'a> {
    ops: &'a [Op],
    events: &'a [EventRecord],
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(super::codec::DECODE_BYTES_MAX)
        .reject_trailing_bytes()
}

/// The ops of a record without its events: [`WalRecord`]'s first field, read on its own.
#[derive(Deserialize)]
struct OpsOnly {
    ops: Vec<Op>,
}

/// Encodes a record: version byte, events end, body, checksum.
pub fn encode_record(ops: &[Op], events: &[EventRecord]) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    out.extend_from_slice(&events_end_of(events).unwrap_or(0).to_le_bytes());
    // expect: encoding plain structs into a Vec cannot fail; a failure is a programming error.
    options()
        .serialize_into(&mut out, &WalRecordRef { ops, events })
        .expect("log records always encode");
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The sequence number after the last of `events`, if any.
fn events_end_of(events: &[EventRecord]) -> Option<u64> {
    events.last().map(|event| event.seq + 1)
}

/// Decodes the record at `position`, checking its version and checksum.
pub fn decode_record(position: u64, bytes: &[u8]) -> Result<WalRecord, StoreError> {
    let corrupt = corrupt_at(position);
    match checked_body(position, bytes)? {
        (RECORD_VERSION, header, rest) => {
            let record: WalRecord = options()
                .deserialize(rest)
                .map_err(|error| corrupt(error.to_string()))?;
            if events_end_of(&record.events) != stored_events_end(header) {
                return Err(corrupt("the header's events end does not match the events".to_owned()));
            }
            Ok(record)
        }
        (RECORD_VERSION_2, _, rest) => options().deserialize(rest).map_err(|error| corrupt(error.to_string())),
        (RECORD_VERSION_1, _, rest) => options()
            .deserialize::<WalRecordV1>(rest)
            .map(WalRecord::from)
            .map_err(|error| corrupt(error.to_string())),
        (version, _, _) => Err(corrupt(format!("unknown format version {version}"))),
    }
}

/// What replay needs of the record at `position`: its row ops, and the sequence number
/// after its last event (if any). A current record's events are not decoded; checks the
/// version and checksum as [`decode_record`] does.
pub fn decode_record_ops(position: u64, bytes: &[u8]) -> Result<(Vec<Op>, Option<u64>), StoreError> {
    match checked_body(position, bytes)? {
        (RECORD_VERSION, header, rest) => {
            // The ops come first in the body; the events after them are left unread.
            let ops = options()
                .allow_trailing_bytes()
                .deserialize::<OpsOnly>(rest)
                .map_err(|error| corrupt_at(position)(error.to_string()))?
                .ops;
            Ok((ops, stored_events_end(header)))
        }
        _ => decode_record(position, bytes).map(|record| {
            let end = events_end_of(&record.events);
            (record.ops, end)
        }),
    }
}

/// The events end a version 3 header stores (0: no events).
fn stored_events_end(header: [u8; 8]) -> Option<u64> {
    Some(u64::from_le_bytes(header)).filter(|end| *end != 0)
}

fn corrupt_at(position: u64) -> impl Fn(String) -> StoreError {
    move |reason| StoreError::Corrupt {
        key: format!("log record {position}"),
        reason,
    }
}

/// A record's version, its events end header (zeros before version 3) and its body, once
/// its checksum holds.
fn checked_body(position: u64, bytes: &[u8]) -> Result<(u8, [u8; 8], &[u8]), StoreError> {
    let corrupt = corrupt_at(position);
    if bytes.len() < 5 {
        return Err(corrupt(format!("{} bytes is too short", bytes.len())));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != stored {
        return Err(corrupt("checksum mismatch (a torn or damaged record)".to_owned()));
    }
    match body.split_first() {
        Some((&RECORD_VERSION, _)) => {
            let header = body
                .get(1..HEADER_BYTES)
                .and_then(|header| <[u8; 8]>::try_from(header).ok())
                .ok_or_else(|| corrupt("a version 3 record shorter than its header".to_owned()))?;
            Ok((RECORD_VERSION, header, &body[HEADER_BYTES..]))
        }
        Some((&version, rest)) => Ok((version, [0; 8], rest)),
        None => Err(corrupt("empty record".to_owned())),
    }
}

/// The bytes a change adds to a record, roughly: for splitting group commits.
pub fn change_bytes(ops: &[Op], events: &[EventRecord]) -> usize {
    let ops_bytes: usize = ops
        .iter()
        .map(|op| match op {
            Op::Put(key, value) => 20 + key.len() + value.len(),
            Op::Delete(key) | Op::DeleteIf(key, _) => 12 + key.len(),
        })
        .sum();
    ops_bytes + events.len() * 96
}

/// Up to `limit` events with sequence numbers from `from_seq` on, each with the position of
/// its record, read from the log starting at record `cursor` (a position at or before the
/// record holding `from_seq`; 0 reads from the start). Returns the events and the position
/// to resume reading from.
/// Records that fail to decode are returned as errors with their position, so that a reader
/// can report them and step past them.
pub fn read_events(
    log: &dyn Log,
    cursor: u64,
    from_seq: u64,
    limit: usize,
) -> Result<(Vec<(u64, EventRecord)>, u64), ReadEventsError> {
    let mut events = Vec::new();
    let mut next = cursor;
    loop {
        let records = log.read(next, 64).map_err(ReadEventsError::Store)?;
        if records.is_empty() {
            return Ok((events, next));
        }
        for (position, bytes) in records {
            let record = match decode_record(position, &bytes) {
                Ok(record) => record,
                // What was read before it is returned first; the next read starts here.
                Err(_) if !events.is_empty() => return Ok((events, position)),
                Err(error) => {
                    return Err(ReadEventsError::Undecodable {
                        position,
                        reason: error.to_string(),
                    })
                }
            };
            for event in record.events.into_iter().filter(|event| event.seq >= from_seq) {
                if events.len() == limit {
                    // This record is read again next time, from the first event not taken.
                    return Ok((events, position));
                }
                events.push((position, event));
            }
            next = position + 1;
        }
        if events.len() >= limit {
            return Ok((events, next));
        }
    }
}

/// Why events could not be read from the log.
#[derive(Debug, thiserror::Error)]
pub enum ReadEventsError {
    /// The log could not be read.
    #[error(transparent)]
    Store(StoreError),
    /// The record at `position` is damaged.
    #[error("log record {position} cannot be decoded: {reason}")]
    Undecodable {
        /// Where the damaged record is.
        position: u64,
        /// What the decoder said.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_or_damaged_one_is_refused() {
        let ops = vec![Op::Put(b"k1".to_vec(), b"v1".to_vec()), Op::Delete(b"k2".to_vec())];
        let bytes = encode_record(&ops, &[]);
        let record = decode_record(1, &bytes).unwrap();
        assert_eq!(record.ops, ops);
        assert!(decode_record(1, &bytes[..bytes.len() - 1]).is_err(), "torn");
        let mut flipped = bytes.clone();
        flipped[3] ^= 0x40;
        assert!(decode_record(1, &flipped).is_err(), "damaged");
    }

    #[test]
    fn a_record_of_the_first_format_is_read_with_an_empty_by() {
        use crate::domain::{CartEvent, CartId};
        let event = DomainEvent::Cart {
            cart: CartId::generate(),
            event: CartEvent::Created,
        };
        // The first format, as the previous build wrote it: events without `by`.
        #[derive(Serialize)]
        struct OldEvent<'a> {
            seq: u64,
            time_ms: u64,
            event: &'a DomainEvent,
        }
        #[derive(Serialize)]
        struct OldRecord<'a> {
            ops: &'a [Op],
            events: Vec<OldEvent<'a>>,
        }
        let ops = vec![Op::Put(b"k".to_vec(), b"v".to_vec())];
        let mut bytes = vec![RECORD_VERSION_1];
        let old = OldRecord {
            ops: &ops,
            events: vec![OldEvent {
                seq: 7,
                time_ms: 9,
                event: &event,
            }],
        };
        options().serialize_into(&mut bytes, &old).unwrap();
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());

        let record = decode_record(1, &bytes).unwrap();
        assert_eq!(record.ops, ops);
        assert_eq!((record.events[0].seq, record.events[0].time_ms), (7, 9));
        assert_eq!(record.events[0].event, event);
        assert_eq!(&*record.events[0].by, "");

        let by: std::sync::Arc<str> = std::sync::Arc::from("erp");
        let new = vec![EventRecord {
            seq: 8,
            time_ms: 10,
            event,
            by,
        }];
        let record = decode_record(2, &encode_record(&ops, &new)).unwrap();
        assert_eq!(&*record.events[0].by, "erp");
    }

    #[test]
    fn replay_reads_the_ops_and_events_end_of_every_format_and_refuses_a_lying_header() {
        use crate::domain::{CartEvent, CartId};
        let ops = vec![Op::Put(b"k".to_vec(), b"v".to_vec()), Op::Delete(b"gone".to_vec())];
        let events: Vec<EventRecord> = [7, 8]
            .map(|seq| EventRecord {
                seq,
                time_ms: 10,
                event: DomainEvent::Cart {
                    cart: CartId::generate(),
                    event: CartEvent::Created,
                },
                by: std::sync::Arc::from("erp"),
            })
            .to_vec();

        let current = encode_record(&ops, &events);
        assert_eq!(current[0], RECORD_VERSION);
        assert_eq!(decode_record_ops(1, &current).unwrap(), (ops.clone(), Some(9)));
        assert_eq!(decode_record(1, &current).unwrap().events, events);
        assert_eq!(
            decode_record_ops(1, &encode_record(&ops, &[])).unwrap(),
            (ops.clone(), None)
        );

        // Format 2, as the previous build wrote it: no header, the events decoded to find
        // their end.
        let mut previous = vec![RECORD_VERSION_2];
        options()
            .serialize_into(
                &mut previous,
                &WalRecordRef {
                    ops: &ops,
                    events: &events,
                },
            )
            .unwrap();
        let crc = crc32fast::hash(&previous);
        previous.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_record_ops(1, &previous).unwrap(), (ops.clone(), Some(9)));
        assert_eq!(decode_record(1, &previous).unwrap().events, events);

        // A header that disagrees with the events (with a valid checksum) is corruption.
        let mut lying = current[..current.len() - 4].to_vec();
        lying[1..HEADER_BYTES].copy_from_slice(&5u64.to_le_bytes());
        let crc = crc32fast::hash(&lying);
        lying.extend_from_slice(&crc.to_le_bytes());
        assert!(decode_record(1, &lying).is_err());
        // A torn current record is refused by the ops-only read too.
        assert!(decode_record_ops(1, &current[..current.len() - 1]).is_err());
    }
}
