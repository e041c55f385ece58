//! Recorded pings: a ping is written here (fsynced, in group commits) before the ingress answers
//! 2xx, and removed in the same transaction that commits the lookup it asked for. What is here
//! after a crash is looked up again at start-up.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::{META, NEXT_PING, PINGS, Result, Store, StoreError};

const PING_V1: u8 = 1;
const TABLE: &str = "pings_v1";

/// A ping to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPing {
    /// The source it is for.
    pub source: String,
    /// The booking id it names.
    pub id: String,
    /// When it was received (ms since epoch).
    pub received_ms: i64,
}

/// A recorded ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingRow {
    /// Its sequence number (increasing across all sources).
    pub seq: u64,
    /// The booking id it names.
    pub id: String,
    /// When it was received (ms since epoch).
    pub received_ms: i64,
}

fn encode(received_ms: i64, id: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(9 + id.len());
    b.push(PING_V1);
    b.extend_from_slice(&received_ms.to_be_bytes());
    b.extend_from_slice(id.as_bytes());
    b
}

fn decode(seq: u64, b: &[u8]) -> Result<PingRow> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        table: TABLE,
        reason: format!("ping {seq}: {reason}"),
    };
    match b.first() {
        Some(&PING_V1) => {}
        Some(&v) => {
            return Err(StoreError::UnknownRowVersion {
                table: TABLE,
                version: v,
            });
        }
        None => return Err(corrupt("empty row")),
    }
    let ms: [u8; 8] = b
        .get(1..9)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| corrupt("truncated row"))?;
    let id = std::str::from_utf8(&b[9..]).map_err(|_| corrupt("id is not UTF-8"))?;
    Ok(PingRow {
        seq,
        id: id.to_string(),
        received_ms: i64::from_be_bytes(ms),
    })
}

impl Store {
    /// Records pings in ONE durable transaction (a group commit); returns their sequence
    /// numbers in order.
    pub fn record_pings(&self, pings: &[NewPing]) -> Result<Vec<u64>> {
        let txn = self.db.begin_write()?;
        let seqs = {
            let mut meta = txn.open_table(META)?;
            let mut t = txn.open_table(PINGS)?;
            let mut next = meta.get(NEXT_PING)?.map(|v| v.value()).unwrap_or(1);
            let mut seqs = Vec::with_capacity(pings.len());
            for p in pings {
                t.insert(
                    (p.source.as_str(), next),
                    encode(p.received_ms, &p.id).as_slice(),
                )?;
                seqs.push(next);
                next += 1;
            }
            meta.insert(NEXT_PING, next)?;
            seqs
        };
        txn.commit()?;
        Ok(seqs)
    }

    /// The recorded pings of `source`, oldest first, at most `limit`.
    pub fn pending_pings(&self, source: &str, limit: usize) -> Result<Vec<PingRow>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PINGS)?;
        let mut out = Vec::new();
        for entry in t.range((source, 0u64)..=(source, u64::MAX))? {
            let (k, v) = entry?;
            out.push(decode(k.value().1, v.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// How many pings of `source` are recorded.
    pub fn count_pings(&self, source: &str) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PINGS)?;
        let mut n = 0;
        for entry in t.range((source, 0u64)..=(source, u64::MAX))? {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    /// Forgets pings of `source` (given up on; the next poll is the safety net).
    pub fn drop_pings(&self, source: &str, seqs: &[u64]) -> Result<()> {
        let txn = self.db.begin_write()?;
        remove_in(&txn, source, seqs)?;
        txn.commit()?;
        Ok(())
    }
}

/// Removes pings of `source` inside `txn`.
pub(super) fn remove_in(txn: &WriteTransaction, source: &str, seqs: &[u64]) -> Result<()> {
    let mut t = txn.open_table(PINGS)?;
    for seq in seqs {
        t.remove((source, *seq))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(source: &str, id: &str, ms: i64) -> NewPing {
        NewPing {
            source: source.into(),
            id: id.into(),
            received_ms: ms,
        }
    }

    #[test]
    fn pings_are_recorded_in_order_and_removed() {
        let s = Store::in_memory().unwrap();
        let seqs = s
            .record_pings(&[ping("a", "1", 10), ping("b", "2", 11), ping("a", "3", 12)])
            .unwrap();
        assert_eq!(seqs, vec![1, 2, 3]);
        let a = s.pending_pings("a", 10).unwrap();
        assert_eq!(
            a,
            vec![
                PingRow {
                    seq: 1,
                    id: "1".into(),
                    received_ms: 10
                },
                PingRow {
                    seq: 3,
                    id: "3".into(),
                    received_ms: 12
                }
            ]
        );
        assert_eq!(s.count_pings("b").unwrap(), 1);
        s.drop_pings("a", &[1]).unwrap();
        assert_eq!(s.count_pings("a").unwrap(), 1);
        assert_eq!(s.pending_pings("a", 1).unwrap()[0].seq, 3);
        // Sequence numbers never repeat, even once the table is empty.
        s.drop_pings("a", &[3]).unwrap();
        s.drop_pings("b", &[2]).unwrap();
        assert_eq!(s.record_pings(&[ping("a", "x", 1)]).unwrap(), vec![4]);
    }

    #[test]
    fn a_damaged_ping_row_is_reported() {
        assert!(matches!(
            decode(1, &[9, 0]),
            Err(StoreError::UnknownRowVersion { version: 9, .. })
        ));
        assert!(matches!(
            decode(1, &[1, 0]),
            Err(StoreError::Corrupt { .. })
        ));
        let row = decode(7, &encode(-5, "abc")).unwrap();
        assert_eq!((row.seq, row.id.as_str(), row.received_ms), (7, "abc", -5));
    }
}
