//! Walking the pages of one poll, one function per pagination style: a single request, page
//! numbers, offsets, cursors and next links. Each page is decoded and its records handed to the
//! [`Collector`]; any failure abandons the whole walk.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::client::SourceClient;
use super::decode::{extract, next_link};
use super::request::{self, Paging, Parts, with_param};
use super::{Fetched, PollKind, Record, SourceError};
use crate::config::{PageStop, Pagination, ParamIn, SourceConfig};
use crate::json::{JsonError, fingerprint, scalar_string};

/// The records of a walk so far. Data shifting between pages can repeat a booking; its later
/// copy wins and keeps the first copy's place.
#[derive(Default)]
struct Collector {
    out: Fetched,
    seen_ids: HashMap<String, usize>,
}

impl Collector {
    fn add(&mut self, records: Vec<Record>) {
        for r in records {
            match self.seen_ids.get(&r.id) {
                Some(&i) => self.out.records[i] = r,
                None => {
                    self.seen_ids.insert(r.id.clone(), self.out.records.len());
                    self.out.records.push(r);
                }
            }
        }
    }

    /// The number of the next page, refusing to go past `max_pages`.
    fn next_page(&self, cfg: &SourceConfig) -> Result<u32, SourceError> {
        let page = self.out.pages + 1;
        if page > cfg.max_pages {
            return Err(SourceError::TooManyPages(cfg.max_pages));
        }
        Ok(page)
    }
}

/// One numbered request: the extra pagination parameters, the values templates see, and where
/// the parameters go.
struct Numbered {
    extra: Vec<(String, Value)>,
    paging: Paging,
    param_in: ParamIn,
}

impl SourceClient {
    /// Fetches every page. Any failure aborts the whole cycle.
    pub async fn fetch_all(
        &self,
        cfg: &SourceConfig,
        kind: PollKind,
        now: DateTime<Utc>,
    ) -> Result<Fetched, SourceError> {
        let mut c = Collector::default();
        match &cfg.pagination {
            Pagination::None => self.single(cfg, kind, now, &mut c).await?,
            Pagination::Page { .. } => self.pages(cfg, kind, now, &mut c).await?,
            Pagination::Offset { .. } => self.offsets(cfg, kind, now, &mut c).await?,
            Pagination::Cursor {
                param,
                next,
                param_in,
            } => {
                self.cursors(cfg, kind, now, (param, next, *param_in), &mut c)
                    .await?
            }
            Pagination::NextLink { pointer } => {
                self.next_links(cfg, kind, now, pointer, &mut c).await?
            }
        }
        Ok(c.out)
    }

    /// No pagination: one request returns everything.
    async fn single(
        &self,
        cfg: &SourceConfig,
        kind: PollKind,
        now: DateTime<Utc>,
        c: &mut Collector,
    ) -> Result<(), SourceError> {
        let parts = request::base(cfg, kind, now, Paging::default())?;
        let doc = self.request(cfg, cfg.url.clone(), &parts, 1).await?;
        c.out.pages = 1;
        c.add(extract(cfg, &cfg.items, &doc, 1)?);
        Ok(())
    }

    /// Page numbers from `start`, until the stop rule says so.
    async fn pages(
        &self,
        cfg: &SourceConfig,
        kind: PollKind,
        now: DateTime<Utc>,
        c: &mut Collector,
    ) -> Result<(), SourceError> {
        let Pagination::Page {
            param,
            start,
            size,
            stop,
            param_in,
        } = &cfg.pagination
        else {
            return Ok(());
        };
        let request = |number: u64, _offset: u64| {
            let mut extra = vec![(param.clone(), Value::from(number))];
            if let Some((p, n)) = size {
                extra.push((p.clone(), Value::from(*n)));
            }
            Numbered {
                extra,
                paging: Paging {
                    page: Some(number),
                    limit: size.as_ref().map(|s| s.1),
                    ..Paging::default()
                },
                param_in: *param_in,
            }
        };
        let more = |doc: &Value, got: u64, number: u64, _offset: u64| match stop {
            PageStop::EmptyPage => size.as_ref().is_none_or(|(_, n)| got >= *n),
            PageStop::HasMore(p) => truthy(doc.pointer(p)),
            PageStop::TotalPages(p) => {
                let total = doc.pointer(p).and_then(as_u64).unwrap_or(0);
                number + 1 - start < total
            }
        };
        self.numbered(cfg, kind, now, *start, &request, &more, c)
            .await
    }

    /// An offset advanced by the number of records received, until a short page or the total.
    async fn offsets(
        &self,
        cfg: &SourceConfig,
        kind: PollKind,
        now: DateTime<Utc>,
        c: &mut Collector,
    ) -> Result<(), SourceError> {
        let Pagination::Offset {
            param,
            size,
            total,
            param_in,
        } = &cfg.pagination
        else {
            return Ok(());
        };
        let request = |_number: u64, offset: u64| Numbered {
            extra: vec![
                (param.clone(), Value::from(offset)),
                (size.0.clone(), Value::from(size.1)),
            ],
            paging: Paging {
                offset: Some(offset),
                limit: Some(size.1),
                ..Paging::default()
            },
            param_in: *param_in,
        };
        let more = |doc: &Value, got: u64, _number: u64, offset: u64| match total {
            Some(p) => offset < doc.pointer(p).and_then(as_u64).unwrap_or(0),
            None => got >= size.1,
        };
        self.numbered(cfg, kind, now, 0, &request, &more, c).await
    }

    /// The loop page numbers and offsets share: request, stop at an empty page, refuse a
    /// repeated page, then ask the style's stop rule whether to go on. `more` sees the page, the
    /// records it had, the page number and the offset after it.
    #[allow(clippy::too_many_arguments)]
    async fn numbered(
        &self,
        cfg: &SourceConfig,
        kind: PollKind,
        now: DateTime<Utc>,
        start: u64,
        request: &(dyn Fn(u64, u64) -> Numbered + Sync),
        more: &(dyn Fn(&Value, u64, u64, u64) -> bool + Sync),
        c: &mut Collector,
    ) -> Result<(), SourceError> {
        let mut prev_print: Option<String> = None;
        let mut number = start;
        let mut offset = 0u64;
        loop {
            let page = c.next_page(cfg)?;
            let n = request(number, offset);
            let parts = with_param(
                request::base(cfg, kind, now, n.paging)?,
                n.param_in,
                &n.extra,
            );
            let doc = self.request(cfg, cfg.url.clone(), &parts, page).await?;
            c.out.pages = page;
            let records = extract(cfg, &cfg.items, &doc, page)?;
            if records.is_empty() {
                return Ok(());
            }
            check_loop(&records, &mut prev_print, page)?;
            let got = records.len() as u64;
            c.add(records);
            offset += got;
            if !more(&doc, got, number, offset) {
                return Ok(());
            }
            number += 1;
        }
    }

    /// An opaque cursor from each page, sent back as a parameter, until there is none.
    async fn cursors(
        &self,
        cfg: &SourceConfig,
        kind: PollKind,
        now: DateTime<Utc>,
        (param, next, param_in): (&str, &str, ParamIn),
        c: &mut Collector,
    ) -> Result<(), SourceError> {
        let mut cursors: HashSet<String> = HashSet::new();
        let mut parts = request::base(cfg, kind, now, Paging::default())?;
        loop {
            let page = c.next_page(cfg)?;
            let doc = self.request(cfg, cfg.url.clone(), &parts, page).await?;
            c.out.pages = page;
            c.add(extract(cfg, &cfg.items, &doc, page)?);
            let cursor = match doc.pointer(next) {
                None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(()),
                Some(v) => scalar_string(v).unwrap_or_default(),
            };
            if cursor.is_empty() {
                return Ok(());
            }
            if !cursors.insert(cursor.clone()) {
                return Err(SourceError::PageLoop(page + 1));
            }
            let paging = Paging {
                cursor: Some(cursor.clone()),
                ..Paging::default()
            };
            parts = with_param(
                request::base(cfg, kind, now, paging)?,
                param_in,
                &[(param.to_string(), Value::String(cursor))],
            );
        }
    }

    /// The next page's URL from each page (same host only), until there is none.
    async fn next_links(
        &self,
        cfg: &SourceConfig,
        kind: PollKind,
        now: DateTime<Utc>,
        pointer: &str,
        c: &mut Collector,
    ) -> Result<(), SourceError> {
        let mut url = cfg.url.clone();
        let mut parts: Parts = request::base(cfg, kind, now, Paging::default())?;
        let mut visited: HashSet<String> = HashSet::new();
        loop {
            let page = c.next_page(cfg)?;
            visited.insert(url.to_string());
            let doc = self.request(cfg, url.clone(), &parts, page).await?;
            c.out.pages = page;
            c.add(extract(cfg, &cfg.items, &doc, page)?);
            match next_link(&cfg.url, &url, &doc, pointer, page)? {
                None => return Ok(()),
                Some(next) if visited.contains(next.as_str()) => {
                    return Err(SourceError::PageLoop(page + 1));
                }
                Some(next) => {
                    url = next;
                    // The link carries its own query; the body (for POST) is sent again.
                    parts.query.clear();
                }
            }
        }
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    scalar_string(v).and_then(|s| s.trim().parse::<u64>().ok())
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => matches!(s.as_str(), "true" | "1" | "yes"),
        _ => false,
    }
}

/// Refuses a page identical to the previous one (an API that ignores the page parameter).
fn check_loop(records: &[Record], prev: &mut Option<String>, page: u32) -> Result<(), SourceError> {
    let print = page_print(records).map_err(|e| SourceError::Template(e.to_string()))?;
    if prev.as_deref() == Some(print.as_str()) {
        return Err(SourceError::PageLoop(page));
    }
    *prev = Some(print);
    Ok(())
}

fn page_print(records: &[Record]) -> Result<String, JsonError> {
    fingerprint(&Value::Array(
        records.iter().map(|r| r.doc.clone()).collect(),
    ))
}
