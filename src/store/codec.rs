//! Row codecs: how rows are written to and read from redb values. Hot rows (the snapshot row
//! compared on every poll, staged changes) are fixed binary layouts that open with a version
//! byte; booking documents are zstd-compressed JSON; cold rows are serde_json. redb's own type
//! encodings never reach our data.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Result, StoreError};
use crate::outbox::{Attempt, Booking, Delivery, DeliveryState, Event, EventKind, FieldChange};

/// Encodes a serde row for `table`.
pub(super) fn encode<T: Serialize>(table: &'static str, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::Encode {
        table,
        reason: e.to_string(),
    })
}

/// Decodes a serde row read from `table`.
pub(super) fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

fn corrupt(table: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        reason: reason.into(),
    }
}

/// Splits `N` bytes off the front of `b`.
fn take<const N: usize>(table: &'static str, b: &mut &[u8]) -> Result<[u8; N]> {
    if b.len() < N {
        return Err(corrupt(table, "row is shorter than its layout"));
    }
    let (head, rest) = b.split_at(N);
    *b = rest;
    let mut out = [0u8; N];
    out.copy_from_slice(head);
    Ok(out)
}

/// The key of a booking's rows: the source name, a NUL, the booking id. Source names cannot hold
/// a NUL (config validation), so the first NUL always ends the source.
pub(super) fn booking_key(source: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(source.len() + 1 + id.len());
    k.extend_from_slice(source.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The bounds of every booking key of `source`.
pub(super) fn source_range(source: &str) -> (Vec<u8>, Vec<u8>) {
    let mut lo = source.as_bytes().to_vec();
    lo.push(0);
    let mut hi = source.as_bytes().to_vec();
    hi.push(1);
    (lo, hi)
}

/// The booking id of a key made by [`booking_key`].
pub(super) fn key_id<'k>(table: &'static str, key: &'k [u8]) -> Result<&'k str> {
    let at = key
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| corrupt(table, "key without a source separator"))?;
    std::str::from_utf8(&key[at + 1..]).map_err(|_| corrupt(table, "booking id is not UTF-8"))
}

const FLAG_CANCELLED: u8 = 1;
const FLAG_OUTSIDE: u8 = 2;

/// The snapshot row of one booking: what every poll compares, and where its document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapRow {
    /// Fingerprint of the significant content when last stored.
    pub fingerprint: u64,
    /// Cancelled when last seen (by status or by confirmed disappearance).
    pub cancelled: bool,
    /// Missing from full polls but confirmed active by a lookup: it left the polled window.
    pub outside: bool,
    /// The generation its document is stored under.
    pub generation: u32,
    /// When the state it records was observed: a [`crate::clock::Clock::stamp_us`] stamp
    /// (microseconds since the epoch; 0 if unknown). An older observation never replaces it.
    pub observed_us: i64,
}

const SNAP_V1: u8 = 1;
pub(super) const SNAP_TABLE: &str = "snapshot_v2";

impl SnapRow {
    pub(super) fn flags(&self) -> u8 {
        (u8::from(self.cancelled) * FLAG_CANCELLED) | (u8::from(self.outside) * FLAG_OUTSIDE)
    }

    /// `[1][flags][fingerprint u64][generation u32][observed i64]`, big-endian: 22 bytes.
    pub(super) fn encode(&self) -> [u8; 22] {
        let mut out = [0u8; 22];
        out[0] = SNAP_V1;
        out[1] = self.flags();
        out[2..10].copy_from_slice(&self.fingerprint.to_be_bytes());
        out[10..14].copy_from_slice(&self.generation.to_be_bytes());
        out[14..22].copy_from_slice(&self.observed_us.to_be_bytes());
        out
    }

    pub(super) fn decode(b: &[u8]) -> Result<SnapRow> {
        let mut b = b;
        let [version] = take::<1>(SNAP_TABLE, &mut b)?;
        if version != SNAP_V1 {
            return Err(unknown_version(SNAP_TABLE, version));
        }
        let [flags] = take::<1>(SNAP_TABLE, &mut b)?;
        Ok(SnapRow {
            fingerprint: u64::from_be_bytes(take(SNAP_TABLE, &mut b)?),
            generation: u32::from_be_bytes(take(SNAP_TABLE, &mut b)?),
            observed_us: i64::from_be_bytes(take(SNAP_TABLE, &mut b)?),
            cancelled: flags & FLAG_CANCELLED != 0,
            outside: flags & FLAG_OUTSIDE != 0,
        })
    }
}

fn unknown_version(table: &'static str, version: u8) -> StoreError {
    StoreError::UnknownRowVersion { table, version }
}

/// A change a running poll has staged for one booking (invisible until the poll is promoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// What was staged.
    pub op: StagedOp,
    /// Detection order within the poll (page, then position).
    pub order: u64,
    /// When the page (or lookup) it came from arrived: a [`crate::clock::Clock::stamp_us`]
    /// stamp in microseconds since the epoch.
    pub observed_us: i64,
}

/// The kinds of staged change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagedOp {
    /// A new or changed document, stored under the poll's generation.
    Doc {
        /// Its fingerprint.
        fingerprint: u64,
        /// Whether it is cancelled.
        cancelled: bool,
    },
    /// Back inside the polled window, unchanged.
    Inside,
    /// Gone from a full poll and treated as cancelled (`on_disappear = "cancel"`, or confirmed
    /// gone by a lookup).
    Gone,
    /// Missing from a full poll but found by a lookup, stored under the poll's generation: it
    /// left the window unless it is cancelled.
    Found {
        /// Its fingerprint.
        fingerprint: u64,
        /// Whether it is cancelled.
        cancelled: bool,
    },
}

const STAGED_V1: u8 = 1;
pub(super) const STAGING_TABLE: &str = "staging_v1";

impl Staged {
    /// `[1][op][flags][fingerprint u64][order u64][observed i64]`: 27 bytes.
    pub(super) fn encode(&self) -> [u8; 27] {
        let (op, fp, cancelled) = match self.op {
            StagedOp::Doc {
                fingerprint,
                cancelled,
            } => (1, fingerprint, cancelled),
            StagedOp::Inside => (2, 0, false),
            StagedOp::Gone => (3, 0, false),
            StagedOp::Found {
                fingerprint,
                cancelled,
            } => (4, fingerprint, cancelled),
        };
        let mut out = [0u8; 27];
        out[0] = STAGED_V1;
        out[1] = op;
        out[2] = u8::from(cancelled);
        out[3..11].copy_from_slice(&fp.to_be_bytes());
        out[11..19].copy_from_slice(&self.order.to_be_bytes());
        out[19..27].copy_from_slice(&self.observed_us.to_be_bytes());
        out
    }

    pub(super) fn decode(b: &[u8]) -> Result<Staged> {
        let mut b = b;
        let [version] = take::<1>(STAGING_TABLE, &mut b)?;
        if version != STAGED_V1 {
            return Err(unknown_version(STAGING_TABLE, version));
        }
        let [op, cancelled] = take::<2>(STAGING_TABLE, &mut b)?;
        let fingerprint = u64::from_be_bytes(take(STAGING_TABLE, &mut b)?);
        let order = u64::from_be_bytes(take(STAGING_TABLE, &mut b)?);
        let observed_us = i64::from_be_bytes(take(STAGING_TABLE, &mut b)?);
        let cancelled = cancelled != 0;
        let op = match op {
            1 => StagedOp::Doc {
                fingerprint,
                cancelled,
            },
            2 => StagedOp::Inside,
            3 => StagedOp::Gone,
            4 => StagedOp::Found {
                fingerprint,
                cancelled,
            },
            other => return Err(corrupt(STAGING_TABLE, format!("unknown staged op {other}"))),
        };
        Ok(Staged {
            op,
            order,
            observed_us,
        })
    }
}

const DOC_V1: u8 = 1;
pub(super) const DOCS_TABLE: &str = "docs_v2";
const CODEC_PLAIN: u8 = 0;
const CODEC_ZSTD: u8 = 1;
/// zstd's level for documents: fast, and most of the gain comes from the dictionary.
const ZSTD_LEVEL: i32 = 3;

/// Largest document a row may claim to hold (a guard against a corrupt length).
const MAX_DOC: usize = 256 * 1024 * 1024;

/// Compresses documents with one source's dictionary (none: plain zstd), reusing one zstd
/// context for a whole batch. A row is `[1][codec][dict u32][length u32][payload]`.
pub(super) struct DocWriter {
    dict_id: u32,
    zstd: zstd::bulk::Compressor<'static>,
}

fn doc_io(e: std::io::Error) -> StoreError {
    StoreError::Encode {
        table: DOCS_TABLE,
        reason: e.to_string(),
    }
}

impl DocWriter {
    pub(super) fn new(dict: Option<(u32, &[u8])>) -> Result<DocWriter> {
        Ok(match dict {
            Some((id, d)) => DocWriter {
                dict_id: id,
                zstd: zstd::bulk::Compressor::with_dictionary(ZSTD_LEVEL, d).map_err(doc_io)?,
            },
            None => DocWriter {
                dict_id: 0,
                zstd: zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(doc_io)?,
            },
        })
    }

    pub(super) fn encode(&mut self, json: &[u8]) -> Result<Vec<u8>> {
        let len = u32::try_from(json.len()).map_err(|_| StoreError::Encode {
            table: DOCS_TABLE,
            reason: "document larger than 4 GiB".into(),
        })?;
        let payload = self.zstd.compress(json).map_err(doc_io)?;
        let mut out = Vec::with_capacity(10 + payload.len());
        out.push(DOC_V1);
        out.push(CODEC_ZSTD);
        out.extend_from_slice(&self.dict_id.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&payload);
        Ok(out)
    }
}

/// Reads documents written by [`DocWriter`], keeping one zstd context per dictionary.
#[derive(Default)]
pub(super) struct DocReader {
    contexts: Vec<(u32, zstd::bulk::Decompressor<'static>)>,
}

/// Gives a compression dictionary by id.
pub(super) type Dicts<'d> = dyn FnMut(u32) -> Result<Option<Vec<u8>>> + 'd;

impl DocReader {
    pub(super) fn decode(&mut self, b: &[u8], dicts: &mut Dicts<'_>) -> Result<serde_json::Value> {
        let json = self.decode_json(b, dicts)?;
        serde_json::from_slice(&json).map_err(|e| corrupt(DOCS_TABLE, e.to_string()))
    }

    fn decode_json(&mut self, b: &[u8], dicts: &mut Dicts<'_>) -> Result<Vec<u8>> {
        let mut rest = b;
        let [version, codec] = take::<2>(DOCS_TABLE, &mut rest)?;
        if version != DOC_V1 {
            return Err(unknown_version(DOCS_TABLE, version));
        }
        let dict_id = u32::from_be_bytes(take(DOCS_TABLE, &mut rest)?);
        let len = u32::from_be_bytes(take(DOCS_TABLE, &mut rest)?) as usize;
        if len > MAX_DOC {
            return Err(corrupt(DOCS_TABLE, "document length out of range"));
        }
        match codec {
            CODEC_PLAIN => Ok(rest.to_vec()),
            CODEC_ZSTD => {
                let i = match self.contexts.iter().position(|(id, _)| *id == dict_id) {
                    Some(i) => i,
                    None => {
                        let z = if dict_id == 0 {
                            zstd::bulk::Decompressor::new()
                        } else {
                            let d = dicts(dict_id)?.ok_or_else(|| {
                                corrupt(
                                    DOCS_TABLE,
                                    format!("missing compression dictionary {dict_id}"),
                                )
                            })?;
                            zstd::bulk::Decompressor::with_dictionary(&d)
                        }
                        .map_err(|e| corrupt(DOCS_TABLE, e.to_string()))?;
                        self.contexts.push((dict_id, z));
                        self.contexts.len() - 1
                    }
                };
                self.contexts[i]
                    .1
                    .decompress(rest, len)
                    .map_err(|e| corrupt(DOCS_TABLE, e.to_string()))
            }
            other => Err(corrupt(DOCS_TABLE, format!("unknown codec {other}"))),
        }
    }
}

/// Appends a length-prefixed string.
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Reads a length-prefixed string.
fn take_str(table: &'static str, b: &mut &[u8]) -> Result<String> {
    let len = u32::from_be_bytes(take(table, b)?) as usize;
    if b.len() < len {
        return Err(corrupt(table, "string longer than its row"));
    }
    let (s, rest) = b.split_at(len);
    *b = rest;
    String::from_utf8(s.to_vec()).map_err(|_| corrupt(table, "string is not UTF-8"))
}

const EVENT_V1: u8 = 1;
pub(super) const EVENTS_TABLE: &str = "events_v2";

fn kind_byte(k: EventKind) -> u8 {
    match k {
        EventKind::New => 1,
        EventKind::Modify => 2,
        EventKind::Cancel => 3,
    }
}

/// An event: `[1][kind][seq u64][detected i64]` then the id, source, booking id, the booking's
/// JSON and the field changes' JSON (empty when none), each length-prefixed.
pub(super) fn encode_event(e: &Event) -> Result<Vec<u8>> {
    let changes = if e.changes.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&e.changes).map_err(|err| StoreError::Encode {
            table: EVENTS_TABLE,
            reason: err.to_string(),
        })?
    };
    let booking = e.booking.json();
    let mut out = Vec::with_capacity(64 + e.id.len() + booking.len() + changes.len());
    out.push(EVENT_V1);
    out.push(kind_byte(e.kind));
    out.extend_from_slice(&e.seq.to_be_bytes());
    out.extend_from_slice(&e.detected_ms.to_be_bytes());
    put_str(&mut out, &e.id);
    put_str(&mut out, &e.source);
    put_str(&mut out, &e.booking_id);
    put_str(&mut out, booking);
    put_str(&mut out, &changes);
    // A trailing flags byte, written only when set: rows without it (every row older than
    // backfills, and every detected change) read as flags 0.
    if e.backfill {
        out.push(EVENT_FLAG_BACKFILL);
    }
    Ok(out)
}

/// Event flag: enqueued by a backfill.
const EVENT_FLAG_BACKFILL: u8 = 1;

/// Undoes [`encode_event`].
pub(super) fn decode_event(b: &[u8]) -> Result<Event> {
    let t = EVENTS_TABLE;
    let mut b = b;
    let [version, kind] = take::<2>(t, &mut b)?;
    if version != EVENT_V1 {
        return Err(unknown_version(t, version));
    }
    let kind = match kind {
        1 => EventKind::New,
        2 => EventKind::Modify,
        3 => EventKind::Cancel,
        other => return Err(corrupt(t, format!("unknown event kind {other}"))),
    };
    let seq = u64::from_be_bytes(take(t, &mut b)?);
    let detected_ms = i64::from_be_bytes(take(t, &mut b)?);
    let id = take_str(t, &mut b)?;
    let source = take_str(t, &mut b)?;
    let booking_id = take_str(t, &mut b)?;
    let booking =
        Booking::from_json(take_str(t, &mut b)?).map_err(|e| corrupt(t, e.to_string()))?;
    let changes_json = take_str(t, &mut b)?;
    let changes: Vec<FieldChange> = if changes_json.is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&changes_json).map_err(|e| corrupt(t, e.to_string()))?
    };
    let flags = b.first().copied().unwrap_or(0);
    Ok(Event {
        id,
        seq,
        kind,
        source,
        booking_id,
        detected_ms,
        booking,
        changes,
        backfill: flags & EVENT_FLAG_BACKFILL != 0,
    })
}

const DELIVERY_V1: u8 = 1;
pub(super) const DELIVERIES_TABLE: &str = "deliveries_v2";

/// A delivery row: `[1][state][seq u64][attempts u32][next i64][created i64]`, the endpoint,
/// event id and lane, then the attempt history (`[count u8]`, each `[at i64][status u16, 0 for
/// none][latency u64][has error u8]` and the error and body strings).
pub(super) fn encode_delivery(d: &Delivery) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(96 + d.history.iter().map(|a| a.body.len() + 32).sum::<usize>());
    out.push(DELIVERY_V1);
    out.push(match d.state {
        DeliveryState::Pending => 1,
        DeliveryState::Delivered => 2,
        DeliveryState::Dead => 3,
    });
    out.extend_from_slice(&d.seq.to_be_bytes());
    out.extend_from_slice(&d.attempts.to_be_bytes());
    out.extend_from_slice(&d.next_ms.to_be_bytes());
    out.extend_from_slice(&d.created_ms.to_be_bytes());
    put_str(&mut out, &d.endpoint);
    put_str(&mut out, &d.event_id);
    put_str(&mut out, &d.lane);
    let history = &d.history[d.history.len().saturating_sub(u8::MAX as usize)..];
    out.push(history.len() as u8);
    for a in history {
        out.extend_from_slice(&a.at_ms.to_be_bytes());
        out.extend_from_slice(&a.status.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&a.latency_ms.to_be_bytes());
        out.push(u8::from(a.error.is_some()));
        put_str(&mut out, a.error.as_deref().unwrap_or(""));
        put_str(&mut out, &a.body);
    }
    out
}

/// Undoes [`encode_delivery`].
pub(super) fn decode_delivery(b: &[u8]) -> Result<Delivery> {
    let t = DELIVERIES_TABLE;
    let mut b = b;
    let [version, state] = take::<2>(t, &mut b)?;
    if version != DELIVERY_V1 {
        return Err(unknown_version(t, version));
    }
    let state = match state {
        1 => DeliveryState::Pending,
        2 => DeliveryState::Delivered,
        3 => DeliveryState::Dead,
        other => return Err(corrupt(t, format!("unknown delivery state {other}"))),
    };
    let seq = u64::from_be_bytes(take(t, &mut b)?);
    let attempts = u32::from_be_bytes(take(t, &mut b)?);
    let next_ms = i64::from_be_bytes(take(t, &mut b)?);
    let created_ms = i64::from_be_bytes(take(t, &mut b)?);
    let endpoint = take_str(t, &mut b)?;
    let event_id = take_str(t, &mut b)?;
    let lane = take_str(t, &mut b)?;
    let [count] = take::<1>(t, &mut b)?;
    let mut history = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let at_ms = i64::from_be_bytes(take(t, &mut b)?);
        let status = u16::from_be_bytes(take(t, &mut b)?);
        let latency_ms = u64::from_be_bytes(take(t, &mut b)?);
        let [has_error] = take::<1>(t, &mut b)?;
        let error = take_str(t, &mut b)?;
        let body = take_str(t, &mut b)?;
        history.push(Attempt {
            at_ms,
            status: (status != 0).then_some(status),
            error: (has_error != 0).then_some(error),
            latency_ms,
            body,
        });
    }
    Ok(Delivery {
        endpoint,
        event_id,
        seq,
        lane,
        state,
        attempts,
        next_ms,
        created_ms,
        history,
    })
}

/// Packs id hashes (a page's seen ids) as little-endian u64s.
pub(super) fn pack_hashes(hashes: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hashes.len() * 8);
    for h in hashes {
        out.extend_from_slice(&h.to_le_bytes());
    }
    out
}

/// Undoes [`pack_hashes`].
pub(super) fn unpack_hashes(b: &[u8]) -> impl Iterator<Item = u64> + '_ {
    b.chunks_exact(8).map(|c| {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        u64::from_le_bytes(a)
    })
}

/// A versioned opaque blob (the poll's checkpoint): `[1][bytes]`.
pub(super) fn encode_blob(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.push(1);
    out.extend_from_slice(bytes);
    out
}

/// Undoes [`encode_blob`].
pub(super) fn decode_blob(table: &'static str, b: &[u8]) -> Result<Vec<u8>> {
    match b.split_first() {
        Some((1, rest)) => Ok(rest.to_vec()),
        Some((v, _)) => Err(unknown_version(table, *v)),
        None => Err(corrupt(table, "empty row")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_rows_round_trip_and_refuse_other_versions() {
        let r = SnapRow {
            fingerprint: 0xDEAD_BEEF_0123_4567,
            cancelled: true,
            outside: false,
            generation: 7,
            observed_us: 1_700_000_000_123,
        };
        let b = r.encode();
        assert_eq!(SnapRow::decode(&b).unwrap(), r);
        let mut future = b;
        future[0] = 9;
        assert!(matches!(
            SnapRow::decode(&future),
            Err(StoreError::UnknownRowVersion { version: 9, .. })
        ));
        assert!(SnapRow::decode(&b[..5]).is_err());
    }

    #[test]
    fn staged_rows_round_trip() {
        for op in [
            StagedOp::Doc {
                fingerprint: 5,
                cancelled: true,
            },
            StagedOp::Inside,
            StagedOp::Gone,
            StagedOp::Found {
                fingerprint: 9,
                cancelled: false,
            },
        ] {
            let s = Staged {
                op,
                order: 42,
                observed_us: -1,
            };
            assert_eq!(Staged::decode(&s.encode()).unwrap(), s);
        }
    }

    #[test]
    fn documents_round_trip_with_and_without_a_dictionary() {
        let doc = serde_json::json!({"id": 7, "guest": "Zoë & \"Bob\"", "rooms": [1, 2]});
        let json = serde_json::to_vec(&doc).unwrap();
        let samples: Vec<Vec<u8>> = (0..200)
            .map(|i| format!(r#"{{"id":{i},"guest":"Guest {i}","rooms":[{i}]}}"#).into_bytes())
            .collect();
        let dict = zstd::dict::from_samples(&samples, 4096).unwrap();
        let mut dicts = |id: u32| Ok((id == 3).then(|| dict.clone()));
        let mut reader = DocReader::default();
        for d in [None, Some((3, dict.as_slice()))] {
            let b = DocWriter::new(d).unwrap().encode(&json).unwrap();
            assert_eq!(reader.decode(&b, &mut dicts).unwrap(), doc);
        }
        let b = DocWriter::new(Some((4, dict.as_slice())))
            .unwrap()
            .encode(&json)
            .unwrap();
        assert!(
            reader.decode(&b, &mut dicts).is_err(),
            "a missing dictionary is corruption"
        );
        let mut short = DocWriter::new(None).unwrap().encode(&json).unwrap();
        short.truncate(12);
        assert!(
            reader.decode(&short, &mut dicts).is_err(),
            "a truncated row is corruption"
        );
    }

    #[test]
    fn events_and_deliveries_round_trip() {
        let e = Event {
            id: "evt_1".into(),
            seq: 9,
            kind: EventKind::Modify,
            source: "s".into(),
            booking_id: "7".into(),
            detected_ms: 1_700_000_000_123,
            booking: Booking::from_value(serde_json::json!({"id": 7, "g": "Zoë & \"Bob\""}))
                .unwrap(),
            changes: vec![FieldChange {
                path: "/g".into(),
                old: serde_json::json!("a"),
                new: serde_json::json!(null),
            }],
            backfill: false,
        };
        let back = decode_event(&encode_event(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        let backfilled = Event {
            backfill: true,
            ..e.clone()
        };
        let back = decode_event(&encode_event(&backfilled).unwrap()).unwrap();
        assert!(back.backfill, "the flag survives");
        let mut d = Delivery::new("crm", &e);
        d.history.push(Attempt {
            at_ms: 5,
            status: Some(503),
            error: None,
            latency_ms: 12,
            body: "busy".into(),
        });
        d.history.push(Attempt {
            at_ms: 6,
            status: None,
            error: Some("timed out".into()),
            latency_ms: 15_000,
            body: String::new(),
        });
        d.attempts = 2;
        d.state = DeliveryState::Dead;
        assert_eq!(decode_delivery(&encode_delivery(&d)).unwrap(), d);
        let mut future = encode_delivery(&d);
        future[0] = 7;
        assert!(matches!(
            decode_delivery(&future),
            Err(StoreError::UnknownRowVersion { version: 7, .. })
        ));
        assert!(decode_event(&encode_event(&e).unwrap()[..20]).is_err());
    }

    #[test]
    fn keys_split_at_the_first_nul() {
        let k = booking_key("src", "a\0b");
        assert_eq!(key_id("t", &k).unwrap(), "a\0b");
        let (lo, hi) = source_range("src");
        assert!(lo.as_slice() <= k.as_slice() && k.as_slice() < hi.as_slice());
        assert!(booking_key("srcx", "1").as_slice() >= hi.as_slice());
    }

    #[test]
    fn hashes_pack() {
        let h = [1u64, u64::MAX, 0];
        assert_eq!(unpack_hashes(&pack_hashes(&h)).collect::<Vec<_>>(), h);
    }
}
