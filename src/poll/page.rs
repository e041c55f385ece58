//! One page of a running poll (blocking: it runs on the blocking pool): decode it a booking at a
//! time, compare each with the snapshot (the in-memory index on full polls, the rows themselves
//! on incremental ones), and stage what changed together with the ids seen and the checkpoint,
//! in one small transaction. Unchanged bookings cost a fingerprint and one lookup.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::checkpoint::Checkpoint;
use super::index::{Entry, Seen, SnapshotIndex, id_hash};
use super::overlap::Hint;
use super::runtime::SourceRuntime;
use super::{PollError, watermark};
use crate::config::WatermarkFrom;
use crate::source::{self, PagePrint, PageSeen, RawPage, SourceError};
use crate::store::{PageOp, Staged, StagedOp, Store};

/// Pages are fsynced at least this often; a crash loses at most the pages staged since.
const DURABLE_EVERY: Duration = Duration::from_millis(250);

/// What one running poll holds in memory between pages.
pub(super) struct Run {
    /// Where the poll stands (also what is staged with every page).
    pub(super) cp: Checkpoint,
    /// The snapshot rows (full polls only).
    pub(super) index: Option<SnapshotIndex>,
    /// Ids seen so far.
    pub(super) seen: Seen,
    /// Ids with a change staged in this poll.
    pub(super) staged: HashSet<u64>,
    /// Whether the ids seen are staged with each page (they are needed to find disappearances).
    pub(super) keep_seen: bool,
    /// Whether this poll was resumed from a checkpoint.
    pub(super) resumed: bool,
    /// Pages staged by this process.
    pub(super) pages_this_run: u32,
    last_durable: Instant,
}

impl Run {
    pub(super) fn new(cp: Checkpoint, index: Option<SnapshotIndex>, keep_seen: bool) -> Run {
        let capacity = index.as_ref().map_or(0, SnapshotIndex::len);
        Run {
            cp,
            index,
            seen: Seen::with_capacity(capacity),
            staged: HashSet::new(),
            keep_seen,
            resumed: false,
            pages_this_run: 0,
            last_durable: Instant::now(),
        }
    }

    /// Decodes, compares and stages one page.
    pub(super) fn process(
        &mut self,
        rt: &SourceRuntime,
        store: &Store,
        page: RawPage,
    ) -> Result<(), PollError> {
        let cfg = &rt.cfg;
        let reader = match self.index {
            None => Some(store.reader(&cfg.name)?),
            Some(_) => None,
        };
        let mut ops: Vec<PageOp> = Vec::new();
        let mut page_hashes: Vec<u64> = Vec::new();
        let mut print = PagePrint::default();
        let mut records = 0u64;
        // Errors that are not the source's (a store read, a serialisation) stop the page too.
        let mut inner: Option<PollError> = None;
        let stop = |e: PollError, inner: &mut Option<PollError>| {
            *inner = Some(e);
            SourceError::Template("stopped".into())
        };
        let skeleton = source::page(cfg, &cfg.items, &page.body, page.number, &mut |rec| {
            records += 1;
            print.add(&rec.id);
            let h = id_hash(&rec.id);
            if self.seen.insert(h) {
                self.cp.bookings += 1;
            }
            if self.keep_seen {
                page_hashes.push(h);
            }
            if let Some(inc) = &cfg.incremental
                && let WatermarkFrom::Pointer(p) = &inc.watermark
                && let Some(t) = watermark::item_time(&rec.doc, p, cfg.tz)
            {
                self.cp.newest_item_ms = Some(self.cp.newest_item_ms.map_or(t, |n| n.max(t)));
            }
            let obs = rt
                .policy
                .observe(&rec.doc)
                .map_err(|e| stop(PollError::Json(e), &mut inner))?;
            let hint = rt.overlap.hint(h);
            let prev: Option<Entry> = match (hint, &self.index, &reader) {
                (Hint::Committed(e), _, _) => Some(e),
                (_, Some(index), _) => index.get(h),
                (_, None, Some(r)) => r
                    .get(&rec.id)
                    .map_err(|e| stop(PollError::Store(e), &mut inner))?
                    .map(|row| Entry {
                        fingerprint: row.fingerprint,
                        cancelled: row.cancelled,
                        outside: row.outside,
                    }),
                (_, None, None) => None,
            };
            // While a lookup of it is out, what this page saw is staged whatever it is, and
            // promotion keeps whichever observation is newer.
            let unchanged = hint != Hint::InFlight
                && prev.is_some_and(|p| {
                    p.fingerprint == obs.fingerprint && p.cancelled == obs.cancelled
                });
            let staged = |op, cp: &mut Checkpoint| {
                let s = Staged {
                    op,
                    order: cp.next_order,
                    observed_us: page.observed_us,
                };
                cp.next_order += 1;
                s
            };
            if !unchanged {
                let json = serde_json::to_vec(&rec.doc)
                    .map_err(|e| stop(PollError::Json(e.into()), &mut inner))?;
                let op = StagedOp::Doc {
                    fingerprint: obs.fingerprint,
                    cancelled: obs.cancelled,
                };
                ops.push(PageOp::Doc {
                    id: rec.id,
                    json,
                    staged: staged(op, &mut self.cp),
                });
                self.staged.insert(h);
            } else if prev.is_some_and(|p| p.outside) {
                // Back inside the polled window.
                ops.push(PageOp::Mark {
                    id: rec.id,
                    staged: staged(StagedOp::Inside, &mut self.cp),
                });
                self.staged.insert(h);
            } else if self.staged.contains(&h) {
                // Data shifting between pages repeated this booking: its later copy, equal to the
                // snapshot, wins over what an earlier copy staged.
                ops.push(PageOp::Unstage { id: rec.id });
            }
            Ok(())
        });
        if let Some(e) = inner {
            return Err(e);
        }
        let skeleton = skeleton?;
        self.cp.pager.advance(
            cfg,
            PageSeen {
                skeleton: &skeleton,
                records,
                print: print.finish(),
            },
        )?;
        if page.number == 1 {
            self.cp.source_clock_ms = source_clock(rt, &page);
        }
        self.cp.failures = 0;
        let durable = self.cp.pager.done || self.last_durable.elapsed() >= DURABLE_EVERY;
        let seen = self
            .keep_seen
            .then_some((page.number, page_hashes.as_slice()));
        let checkpoint = self.cp.encode().map_err(|e| PollError::Json(e.into()))?;
        store.stage_page(&cfg.name, &ops, seen, &checkpoint, durable)?;
        if durable {
            self.last_durable = Instant::now();
        }
        self.pages_this_run += 1;
        Ok(())
    }
}

/// The source's clock at the first page, when the watermark comes from a header.
fn source_clock(rt: &SourceRuntime, page: &RawPage) -> Option<i64> {
    let inc = rt.cfg.incremental.as_ref()?;
    let name = match &inc.watermark {
        WatermarkFrom::DateHeader => "date",
        WatermarkFrom::Header(h) => h.as_str(),
        _ => return None,
    };
    let value = page.headers.get(name).and_then(|v| v.to_str().ok());
    let t = value.and_then(|v| watermark::parse_time(v, rt.cfg.tz));
    if t.is_none() {
        tracing::warn!(
            source = %rt.cfg.name,
            header = name,
            value = value.unwrap_or("(missing)"),
            "the watermark header is missing or not a time; this poll's watermark is its start on pollhook's clock"
        );
    }
    t
}
