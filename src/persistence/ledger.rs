//! The stock ledger as stored: pages of movements, how they are read, and retention.
//!
//! # Pages
//!
//! A change writes each of its movements as a row of its own ([`keys::movement`]), and the
//! memtable keeps them so. A checkpoint writes a run of one SKU's movements with consecutive
//! seqs as one row, a page ([`checkpoint_ops`]), under the key of its *last* movement: one
//! sled insert for a run instead of one per movement. A reservation makes one movement, so on
//! a busy SKU this halves the rows a checkpoint writes (the other is the hold).
//!
//! Keyed by its last seq, a page sorts before every movement after it, so a forward scan
//! from the key of `seq - 1` finds the row holding `seq` first. Readers go through
//! [`read_movements`], which decodes pages and single rows alike (earlier releases wrote only
//! single rows), skips what lies before the seq asked for, and skips a seq seen already: a
//! checkpoint that failed before its mark may have left a page that the retry packs
//! differently, so two rows can hold one movement.
//!
//! Retention deletes movement keys seq by seq, so it deletes a page once the page's last
//! movement is folded; until then the page's folded movements stay on disk, and readers skip
//! them, as they start at the SKU's `ledger_start`.
//!
//! # Retention
//!
//! Movements older than `[ledger] retention_days` are folded into their SKU's opening balance
//! and deleted, a bounded batch per SKU per pass. The pass only reads: it sums a SKU's oldest
//! movements and hands the sums to the SKU's actor ([`SkuCommand::TrimLedger`]), which folds
//! them and deletes their rows in one change, and only if the first of them is still the
//! first movement kept. Movements are never rewritten, so what was read is what is folded,
//! and nothing is folded twice.

use std::collections::BTreeMap;

use super::memtable::Table;
use super::rows::{MovementRow, SkuRow};
use super::{keys, Op, StateView, StoreError};
use crate::domain::location::LocationId;
use crate::domain::sku::SkuCommand;
use crate::domain::SkuId;

/// Most movements one SKU folds per pass, so that one change stays small.
pub const TRIM_ROWS_MAX: usize = 1000;

/// Most SKU rows one pass reads.
const SKU_PAGE: usize = 1000;

/// The trims of one page of SKUs, and the last SKU of the page when there are more.
pub type TrimPage = (Vec<(SkuId, SkuCommand)>, Option<SkuId>);

/// The trims due at `cutoff_ms` (movements made before it), one command per SKU, for the
/// SKUs after `after` (a page of at most [`SKU_PAGE`]); and the last SKU read, to go on from.
pub fn due_trims(store: &StateView, cutoff_ms: u64, after: Option<&SkuId>) -> Result<TrimPage, StoreError> {
    let start = after.map(keys::sku);
    let page = store.scan(&[keys::SKU], start.as_deref(), SKU_PAGE)?;
    let last = page.last().and_then(|(key, _)| keys::sku_of(key));
    let mut trims = Vec::new();
    for (key, bytes) in &page {
        let Some(sku) = keys::sku_of(key) else { continue };
        let row: SkuRow = store.decode_versioned(key, bytes)?;
        if row.ledger_start > row.movement_seq {
            continue;
        }
        let movements = read_movements(store, &sku, row.ledger_start, u64::MAX, TRIM_ROWS_MAX)?;
        let mut folded: BTreeMap<LocationId, [i64; 3]> = BTreeMap::new();
        let mut upto = None;
        for row in &movements {
            if row.at_ms >= cutoff_ms {
                break;
            }
            let sum = folded.entry(row.movement.location.clone()).or_default();
            sum[0] += row.movement.on_hand_delta;
            sum[1] += row.movement.reserved_delta;
            sum[2] += row.movement.committed_delta;
            upto = Some(row.movement.seq);
        }
        if let Some(upto_seq) = upto {
            trims.push((
                sku,
                SkuCommand::TrimLedger {
                    from_seq: row.ledger_start,
                    upto_seq,
                    folded: folded.into_iter().collect(),
                },
            ));
        }
    }
    let more = page.len() == SKU_PAGE;
    Ok((trims, if more { last } else { None }))
}

/// The version byte of a page: several movement rows under one key. Single rows carry
/// [`codec::FORMAT_VERSION`](super::codec::FORMAT_VERSION).
pub const PAGE_VERSION: u8 = 0x80;

/// Most movements in one page.
pub const PAGE_MOVEMENTS_MAX: usize = 64;

/// Most bytes of one page: far below sled's blob threshold (a quarter of a segment), and
/// small enough that a leaf holds many.
pub const PAGE_BYTES_MAX: usize = 4 * 1024;

/// Rows read per scan call while reading movements.
const READ_ROWS: usize = 64;

/// A run of one SKU's movements with consecutive seqs, being gathered into a page.
struct Run<'a> {
    /// Their rows, in seq order: (key, encoded single row).
    rows: Vec<(&'a [u8], &'a [u8])>,
    /// Bytes the page will take.
    bytes: usize,
}

impl<'a> Run<'a> {
    fn new() -> Self {
        Self {
            rows: Vec::with_capacity(PAGE_MOVEMENTS_MAX),
            bytes: 1,
        }
    }

    /// Whether the movement under `key` continues this run and fits in its page.
    fn takes(&self, key: &[u8], value: &[u8]) -> bool {
        let Some(&(last, _)) = self.rows.last() else {
            return true;
        };
        let (Some((prefix, seq)), Some((last_prefix, last_seq))) =
            (keys::movement_parts(key), keys::movement_parts(last))
        else {
            return false;
        };
        prefix == last_prefix
            && last_seq.checked_add(1) == Some(seq)
            && self.rows.len() < PAGE_MOVEMENTS_MAX
            && self.bytes + 4 + value.len() <= PAGE_BYTES_MAX
    }

    fn push(&mut self, key: &'a [u8], value: &'a [u8]) {
        self.bytes += 4 + value.len();
        self.rows.push((key, value));
    }

    /// The run as one op (a single movement stays a single row), and an empty run.
    fn flush(&mut self, ops: &mut Vec<Op>) {
        match self.rows.as_slice() {
            [] => {}
            [(key, value)] => ops.push(Op::Put(key.to_vec(), value.to_vec())),
            [.., (last, _)] => {
                let mut page = Vec::with_capacity(self.bytes);
                page.push(PAGE_VERSION);
                for (_, value) in &self.rows {
                    let len = u32::try_from(value.len()).expect("a movement row is far below 4 GiB");
                    page.extend_from_slice(&len.to_le_bytes());
                    page.extend_from_slice(value);
                }
                ops.push(Op::Put(last.to_vec(), page));
            }
        }
        self.rows.clear();
        self.bytes = 1;
    }
}

/// The ops a checkpoint writes for `rows`, in key order: every row as it is, except that
/// each run of one SKU's movements with consecutive seqs goes as pages (see the module
/// docs). A page holds at most [`PAGE_MOVEMENTS_MAX`] movements and [`PAGE_BYTES_MAX`] bytes.
pub fn checkpoint_ops(rows: &Table) -> Vec<Op> {
    let mut ops = Vec::with_capacity(rows.len());
    let mut run = Run::new();
    for (key, value) in rows {
        match value {
            Some(value) if keys::movement_parts(key).is_some() && value.first() != Some(&PAGE_VERSION) => {
                if !run.takes(key, value) {
                    run.flush(&mut ops);
                }
                run.push(key, value);
            }
            _ => {
                run.flush(&mut ops);
                ops.push(match value {
                    Some(value) => Op::Put(key.clone(), value.clone()),
                    None => Op::Delete(key.clone()),
                });
            }
        }
    }
    run.flush(&mut ops);
    ops
}

/// The movements stored under one ledger key: a page's, or a single row's.
fn decode_row(view: &StateView, key: &[u8], bytes: &[u8]) -> Result<Vec<MovementRow>, StoreError> {
    let Some(mut rest) = bytes.strip_prefix(&[PAGE_VERSION]) else {
        return Ok(vec![view.decode(key, bytes)?]);
    };
    let mut rows = Vec::new();
    while !rest.is_empty() {
        let (len, body) = rest.split_first_chunk::<4>().ok_or_else(|| torn(view, key))?;
        let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| torn(view, key))?;
        if body.len() < len {
            return Err(torn(view, key));
        }
        let (row, after) = body.split_at(len);
        rows.push(view.decode(key, row)?);
        rest = after;
    }
    Ok(rows)
}

/// A page whose lengths run past its end.
fn torn(view: &StateView, key: &[u8]) -> StoreError {
    view.corrupt(key, "a ledger page ends inside a movement")
}

/// Up to `max` movements of `sku` with seqs from `from_seq` up to (not including)
/// `until_seq`, in seq order, each once, from single rows and pages alike.
pub fn read_movements(
    view: &StateView,
    sku: &SkuId,
    from_seq: u64,
    until_seq: u64,
    max: usize,
) -> Result<Vec<MovementRow>, StoreError> {
    let prefix = keys::movements_of(sku);
    let mut out = Vec::new();
    let mut next = from_seq.max(1);
    let mut after = Some(keys::movement(sku, next - 1));
    while out.len() < max && next < until_seq {
        let rows = view.scan(&prefix, after.as_deref(), READ_ROWS)?;
        for (key, bytes) in &rows {
            for row in decode_row(view, key, bytes)? {
                let seq = row.movement.seq;
                if seq < next {
                    continue;
                }
                if seq >= until_seq || out.len() == max {
                    return Ok(out);
                }
                next = seq.saturating_add(1);
                out.push(row);
            }
        }
        match rows.last() {
            Some((key, _)) if rows.len() == READ_ROWS => after = Some(key.clone()),
            _ => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::sku::{Movement, MovementKind};
    use crate::persistence::checkpoint::{checkpoint_once, LogRetention};
    use crate::persistence::{codec, Memtable, SledStore, Storage};

    fn open() -> (tempfile::TempDir, StateView) {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        (dir, StateView::new(storage, Arc::new(Memtable::default())))
    }

    fn row(seq: u64, reason: Option<&str>) -> MovementRow {
        MovementRow {
            movement: Movement {
                seq,
                location: LocationId::default_location(),
                kind: MovementKind::Receipt,
                on_hand_delta: 1,
                reserved_delta: 0,
                committed_delta: 0,
                available_after: seq,
                reason: reason.map(str::to_owned),
                reference: None,
            },
            at_ms: 1_000 + seq,
            by: Arc::from("test"),
        }
    }

    fn put(sku: &SkuId, seq: u64) -> Op {
        Op::Put(keys::movement(sku, seq), codec::encode(&row(seq, None)))
    }

    /// A page of `seqs` as a checkpoint writes it.
    fn page(sku: &SkuId, seqs: std::ops::RangeInclusive<u64>) -> Op {
        let table: Table = seqs
            .map(|seq| (keys::movement(sku, seq), Some(codec::encode(&row(seq, None)))))
            .collect();
        let mut ops = checkpoint_ops(&table);
        assert_eq!(ops.len(), 1, "one page");
        ops.pop().unwrap()
    }

    fn checkpoint(view: &StateView) {
        let retention = LogRetention {
            max_events: 0,
            kafka: false,
        };
        checkpoint_once(view, retention, 0, u64::MAX).unwrap();
    }

    fn seqs(view: &StateView, sku: &SkuId, from: u64, until: u64, max: usize) -> Vec<u64> {
        read_movements(view, sku, from, until, max)
            .unwrap()
            .iter()
            .map(|row| row.movement.seq)
            .collect()
    }

    fn stored_keys(view: &StateView) -> Vec<(Vec<u8>, Vec<u8>)> {
        view.storage.scan(&[keys::MOVEMENT], None, usize::MAX).unwrap()
    }

    #[test]
    fn a_checkpoint_writes_runs_of_movements_as_pages_that_read_back_whole() {
        let (_dir, view) = open();
        let mug = SkuId::parse("mug").unwrap();
        let pin = SkuId::parse("pin").unwrap();
        let other = b"h-not-a-movement".to_vec();
        let mut ops: Vec<Op> = (1..=150).map(|seq| put(&mug, seq)).collect();
        ops.push(put(&pin, 7));
        ops.push(Op::Put(other.clone(), b"v".to_vec()));
        ops.push(Op::Delete(b"h-gone".to_vec()));
        view.memtable.apply(ops, 1, 0);
        assert_eq!(
            seqs(&view, &mug, 1, u64::MAX, usize::MAX),
            (1..=150).collect::<Vec<_>>()
        );
        checkpoint(&view);

        let stored = stored_keys(&view);
        let stored_seqs: Vec<u64> = stored
            .iter()
            .map(|(key, _)| keys::movement_parts(key).unwrap().1)
            .collect();
        // As many movements a page as its bounds allow, keyed by the last of them.
        let size = 4 + codec::encode(&row(1, None)).len();
        let per_page = ((PAGE_BYTES_MAX - 1) / size).min(PAGE_MOVEMENTS_MAX) as u64;
        let mut expected: Vec<u64> = (1..).map(|n| n * per_page).take_while(|&seq| seq < 150).collect();
        expected.extend([150, 7]);
        assert_eq!(stored_seqs, expected, "mug in pages keyed by their last seq; pin alone");
        assert_eq!(
            stored.last().unwrap().1,
            codec::encode(&row(7, None)),
            "a run of one stays a single row"
        );
        assert_eq!(
            view.storage.get(&other).unwrap(),
            Some(b"v".to_vec()),
            "other rows as they are"
        );

        assert_eq!(
            seqs(&view, &mug, 1, u64::MAX, usize::MAX),
            (1..=150).collect::<Vec<_>>()
        );
        assert_eq!(seqs(&view, &mug, 60, 70, usize::MAX), (60..70).collect::<Vec<_>>());
        assert_eq!(seqs(&view, &mug, 127, u64::MAX, 3), [127, 128, 129]);
        assert_eq!(seqs(&view, &pin, 1, u64::MAX, usize::MAX), [7]);
        let whole = read_movements(&view, &mug, 100, 101, 1).unwrap();
        assert_eq!(whole, [row(100, None)], "a movement reads back as it was written");

        // Movements after the checkpoint start a page of their own, read together with the
        // pages before them; a run broken by a missing seq is two pages.
        view.memtable
            .apply((151..=160).chain(162..=170).map(|seq| put(&mug, seq)), 2, 0);
        assert_eq!(
            seqs(&view, &mug, 140, u64::MAX, usize::MAX),
            (140..=160).chain(162..=170).collect::<Vec<_>>()
        );
        checkpoint(&view);
        let last_keys: Vec<u64> = stored_keys(&view)
            .iter()
            .map(|(key, _)| keys::movement_parts(key).unwrap().1)
            .collect();
        expected.splice(expected.len() - 1.., [160, 170, 7]);
        assert_eq!(last_keys, expected);
        assert_eq!(
            seqs(&view, &mug, 140, u64::MAX, usize::MAX),
            (140..=160).chain(162..=170).collect::<Vec<_>>()
        );
    }

    #[test]
    fn pages_stay_within_their_byte_bound() {
        let (_dir, view) = open();
        let mug = SkuId::parse("mug").unwrap();
        let reason = "r".repeat(500);
        let ops = (1..=40).map(|seq| Op::Put(keys::movement(&mug, seq), codec::encode(&row(seq, Some(&reason)))));
        view.memtable.apply(ops, 1, 0);
        checkpoint(&view);
        let stored = stored_keys(&view);
        assert!(
            stored.len() >= 5,
            "40 movements of over 500 bytes take at least five pages"
        );
        for (key, value) in &stored {
            assert!(value.len() <= PAGE_BYTES_MAX, "{} bytes under {key:?}", value.len());
        }
        assert_eq!(seqs(&view, &mug, 1, u64::MAX, usize::MAX), (1..=40).collect::<Vec<_>>());
    }

    #[test]
    fn reads_take_single_rows_pages_and_overlapping_pages_each_movement_once() {
        let (_dir, view) = open();
        let mug = SkuId::parse("mug").unwrap();
        // Rows of an earlier release (one per movement), pages, and a page that a checkpoint
        // failed after writing (its retry packed 6..=12 into other pages).
        let mut ops: Vec<Op> = (1..=3).map(|seq| put(&mug, seq)).collect();
        ops.extend([
            page(&mug, 4..=10),
            page(&mug, 6..=12),
            page(&mug, 11..=20),
            put(&mug, 21),
        ]);
        view.storage.apply(ops).unwrap();
        assert_eq!(seqs(&view, &mug, 1, u64::MAX, usize::MAX), (1..=21).collect::<Vec<_>>());
        assert_eq!(seqs(&view, &mug, 8, 14, usize::MAX), (8..14).collect::<Vec<_>>());
        assert_eq!(seqs(&view, &mug, 5, u64::MAX, 4), [5, 6, 7, 8]);
        assert_eq!(seqs(&view, &mug, 22, u64::MAX, usize::MAX), Vec::<u64>::new());
    }

    #[test]
    fn a_torn_page_is_a_failed_read() {
        let (_dir, view) = open();
        let mug = SkuId::parse("mug").unwrap();
        let Op::Put(key, mut bytes) = page(&mug, 1..=3) else {
            unreachable!()
        };
        bytes.truncate(bytes.len() - 1);
        view.storage.apply(vec![Op::Put(key, bytes)]).unwrap();
        let error = read_movements(&view, &mug, 1, u64::MAX, usize::MAX).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    }
}
