//! The key layout: one ordered keyspace, a one-byte prefix per kind of row.
//!
//! | prefix | key after the prefix                    | value                          |
//! |--------|-----------------------------------------|--------------------------------|
//! | `s`    | SKU id                                  | [`SkuRow`](super::rows::SkuRow) |
//! | `h`    | SKU id, `0x00`, reservation id (16 B)   | [`Hold`](crate::domain::sku::Hold) |
//! | `r`    | reservation id (16 B)                   | settled [`Reservation`](crate::domain::sku::Reservation) |
//! | `e`    | event sequence number (u64 big-endian)  | legacy: events of the first release, before the log |
//! | `i`    | scope, `0x00`, idempotency key          | [`IdempotencyRecord`](crate::idempotency::IdempotencyRecord) |
//! | `x`    | due time ms (u64 BE), then a whole key  | empty: that key is deleted when due |
//! | `c`    | cart id (16 B)                          | [`Cart`](crate::domain::cart::Cart) |
//! | `o`    | order id (16 B)                         | [`Order`](crate::domain::order::Order) |
//! | `p`    | consumer name (`kafka`)                 | u64: the next event it has not yet delivered |
//! | `k`    | `checkpoint`                            | [`CheckpointMark`](super::checkpoint::CheckpointMark) |
//! | `a`    | credential name                         | [`CredentialRow`](crate::credentials::CredentialRow) |
//! | `l`    | location id                             | [`Location`](crate::domain::location::Location) |
//! | `m`    | SKU id, `0x00`, movement seq (u64 BE)   | [`MovementRow`](super::rows::MovementRow) |
//! | `t`    | transfer id (16 B)                      | [`TransferRecord`](crate::domain::sku::TransferRecord) |
//!
//! These are the state rows, in sled's default tree. The write-ahead log is a tree of its
//! own (see [`super::log`]).
//!
//! SKU ids and scopes never contain `0x00`, so the separator keeps prefixes unambiguous.
//! Holds are grouped by SKU so that one SKU's holds can be reloaded with one prefix scan.

use crate::domain::{CartId, OrderId, ReservationId, SkuId};

/// Prefix of SKU counter rows.
pub const SKU: u8 = b's';
/// Prefix of held reservation rows.
pub const HOLD: u8 = b'h';
/// Prefix of settled reservation rows.
pub const RESERVATION: u8 = b'r';
/// Prefix of the first release's event rows (events now live in the log).
pub const EVENT: u8 = b'e';
/// Prefix of idempotency records.
pub const IDEMPOTENCY: u8 = b'i';
/// Prefix of the retention index: rows to delete at a given time.
pub const EXPIRING: u8 = b'x';
/// Prefix of cart rows.
pub const CART: u8 = b'c';
/// Prefix of order rows.
pub const ORDER: u8 = b'o';

/// Prefix of event-log positions of the log's consumers.
pub const POSITION: u8 = b'p';

/// Prefix of the checkpoint mark.
pub const CHECKPOINT: u8 = b'k';

/// Prefix of named API credentials.
pub const CREDENTIAL: u8 = b'a';

/// Prefix of location rows.
pub const LOCATION: u8 = b'l';

/// Prefix of stock-ledger movements.
pub const MOVEMENT: u8 = b'm';

/// Prefix of transfers.
pub const TRANSFER: u8 = b't';

/// Prefix of one SKU's ledger.
pub fn movements_of(sku: &SkuId) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + sku.as_str().len() + 8);
    key.push(MOVEMENT);
    key.extend_from_slice(sku.as_str().as_bytes());
    key.push(0);
    key
}

/// Key of one movement of a SKU's ledger.
pub fn movement(sku: &SkuId, seq: u64) -> Vec<u8> {
    let mut key = movements_of(sku);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// A movement key split into its SKU's ledger prefix (the key without its last 8 bytes) and
/// its seq; `None` for any other key.
pub fn movement_parts(key: &[u8]) -> Option<(&[u8], u64)> {
    if key.first() != Some(&MOVEMENT) || key.len() < 11 {
        return None;
    }
    let (prefix, seq) = key.split_at(key.len() - 8);
    if prefix.last() != Some(&0) {
        return None;
    }
    Some((prefix, u64::from_be_bytes(seq.try_into().ok()?)))
}

/// Key of a transfer.
pub fn transfer(id: &crate::domain::ids::TransferId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(TRANSFER);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Key of a location.
pub fn location(id: &crate::domain::location::LocationId) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.as_str().len());
    key.push(LOCATION);
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

/// Key of a named credential.
pub fn credential(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(CREDENTIAL);
    key.extend_from_slice(name.as_bytes());
    key
}

/// Key of the checkpoint mark: the log position the state rows cover.
pub fn checkpoint() -> Vec<u8> {
    let mut key = vec![CHECKPOINT];
    key.extend_from_slice(b"checkpoint");
    key
}

/// Key of the Kafka bridge's position: every event below the stored sequence number has been
/// acknowledged by the broker.
pub fn kafka_position() -> Vec<u8> {
    let mut key = vec![POSITION];
    key.extend_from_slice(b"kafka");
    key
}

/// Key of a cart.
pub fn cart(id: &CartId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(CART);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Key of an order.
pub fn order(id: &OrderId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(ORDER);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Key of a SKU's counters.
pub fn sku(sku: &SkuId) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + sku.as_str().len());
    key.push(SKU);
    key.extend_from_slice(sku.as_str().as_bytes());
    key
}

/// The SKU id of a SKU row key.
pub fn sku_of(key: &[u8]) -> Option<SkuId> {
    let text = std::str::from_utf8(key.strip_prefix(&[SKU])?).ok()?;
    SkuId::parse(text).ok()
}

/// Prefix of every hold of one SKU.
pub fn holds_of(sku: &SkuId) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + sku.as_str().len() + 16);
    key.push(HOLD);
    key.extend_from_slice(sku.as_str().as_bytes());
    key.push(0);
    key
}

/// Key of one held reservation.
pub fn hold(sku: &SkuId, id: &ReservationId) -> Vec<u8> {
    let mut key = holds_of(sku);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Key of a settled reservation.
pub fn reservation(id: &ReservationId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(RESERVATION);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Key of an event-log entry.
pub fn event(seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(EVENT);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number of an event-log key.
pub fn event_seq(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.strip_prefix(&[EVENT])?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Key of an idempotency record: the key is scoped to the credential that sent it.
pub fn idempotency(scope: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + scope.len() + key.len());
    out.push(IDEMPOTENCY);
    out.extend_from_slice(scope.as_bytes());
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out
}

/// Retention-index key: delete `target` at `due_ms`.
pub fn expiring(due_ms: u64, target: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + target.len());
    key.push(EXPIRING);
    key.extend_from_slice(&due_ms.to_be_bytes());
    key.extend_from_slice(target);
    key
}

/// The due time and target of a retention-index key.
pub fn expiring_parts(key: &[u8]) -> Option<(u64, &[u8])> {
    let rest = key.strip_prefix(&[EXPIRING])?;
    if rest.len() < 8 {
        return None;
    }
    let (due, target) = rest.split_at(8);
    Some((u64::from_be_bytes(due.try_into().ok()?), target))
}

/// Shows a key for logs: printable bytes as text, others escaped.
pub fn display(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_by_sequence_number() {
        assert!(event(255) < event(256));
        assert_eq!(event_seq(&event(7)), Some(7));
    }

    #[test]
    fn holds_of_one_sku_do_not_share_a_prefix_with_a_longer_sku() {
        let short = SkuId::parse("a").unwrap();
        let long = SkuId::parse("ab").unwrap();
        let id = ReservationId::generate();
        assert!(hold(&short, &id).starts_with(&holds_of(&short)));
        assert!(!hold(&long, &id).starts_with(&holds_of(&short)));
    }

    #[test]
    fn retention_keys_round_trip() {
        let target = reservation(&ReservationId::generate());
        let key = expiring(42, &target);
        assert_eq!(expiring_parts(&key), Some((42, target.as_slice())));
        assert_eq!(sku_of(&sku(&SkuId::parse("x-1").unwrap())).unwrap().as_str(), "x-1");
    }

    #[test]
    fn movement_keys_split_into_their_ledger_and_seq() {
        let sku = SkuId::parse("mug").unwrap();
        let key = movement(&sku, 300);
        assert_eq!(movement_parts(&key), Some((movements_of(&sku).as_slice(), 300)));
        assert_eq!(movement_parts(&hold(&sku, &ReservationId::generate())), None);
        assert_eq!(movement_parts(&movements_of(&sku)), None, "a prefix is not a movement");
    }
}
