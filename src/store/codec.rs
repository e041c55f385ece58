//! Row codecs: how rows are written to and read from redb values. Hot rows (the snapshot row
//! compared on every poll, staged changes) are fixed binary layouts that open with a version
//! byte; booking documents are zstd-compressed JSON; cold rows are serde_json. redb's own type
//! encodings never reach our data.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Result, StoreError};

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
    /// When the state it records was observed (ms since epoch; 0 if unknown).
    pub observed_ms: i64,
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
        out[14..22].copy_from_slice(&self.observed_ms.to_be_bytes());
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
            observed_ms: i64::from_be_bytes(take(SNAP_TABLE, &mut b)?),
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
    /// When the page it came from arrived (ms since epoch).
    pub observed_ms: i64,
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
        out[19..27].copy_from_slice(&self.observed_ms.to_be_bytes());
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
        let observed_ms = i64::from_be_bytes(take(STAGING_TABLE, &mut b)?);
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
            observed_ms,
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
pub(super) struct DocReader<'d> {
    dicts: &'d mut dyn FnMut(u32) -> Result<Option<Vec<u8>>>,
    contexts: Vec<(u32, zstd::bulk::Decompressor<'static>)>,
}

impl<'d> DocReader<'d> {
    /// `dicts` gives a dictionary by id.
    pub(super) fn new(dicts: &'d mut dyn FnMut(u32) -> Result<Option<Vec<u8>>>) -> Self {
        DocReader {
            dicts,
            contexts: Vec::new(),
        }
    }

    pub(super) fn decode(&mut self, b: &[u8]) -> Result<serde_json::Value> {
        let json = self.decode_json(b)?;
        serde_json::from_slice(&json).map_err(|e| corrupt(DOCS_TABLE, e.to_string()))
    }

    fn decode_json(&mut self, b: &[u8]) -> Result<Vec<u8>> {
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
                            let d = (self.dicts)(dict_id)?.ok_or_else(|| {
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
            observed_ms: 1_700_000_000_123,
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
                observed_ms: -1,
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
        let mut reader = DocReader::new(&mut dicts);
        for d in [None, Some((3, dict.as_slice()))] {
            let b = DocWriter::new(d).unwrap().encode(&json).unwrap();
            assert_eq!(reader.decode(&b).unwrap(), doc);
        }
        let b = DocWriter::new(Some((4, dict.as_slice())))
            .unwrap()
            .encode(&json)
            .unwrap();
        assert!(
            reader.decode(&b).is_err(),
            "a missing dictionary is corruption"
        );
        let mut short = DocWriter::new(None).unwrap().encode(&json).unwrap();
        short.truncate(12);
        assert!(
            reader.decode(&short).is_err(),
            "a truncated row is corruption"
        );
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
