//! Where a poll stands in a source's pages, one rule per pagination style (a single request, page
//! numbers, offsets, cursors, next links). A [`Pager`] builds the next request and, given what
//! the page held, moves on or stops; it is plain data, so a poll's checkpoint can keep it and a
//! restarted daemon resume from the page after the last one staged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::decode::next_link;
use super::request::{self, Paging, Parts, with_param};
use super::{PollKind, SourceError};
use crate::config::{PageStop, Pagination, SourceConfig};
use crate::json::scalar_string;

/// Where a walk over the pages stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pager {
    /// Pages fetched so far.
    pub pages: u32,
    /// The page number to ask for (page style).
    number: u64,
    /// The offset to ask for (offset style).
    offset: u64,
    /// The cursor to send (cursor style); none for the first page.
    cursor: Option<String>,
    /// The URL to fetch (next-link style); none for the first page.
    link: Option<String>,
    /// Hashes of the cursors or URLs already used, to refuse a loop.
    visited: Vec<u64>,
    /// The previous page's ids, hashed, to refuse a repeated page.
    prev_print: Option<u64>,
    /// No page is left.
    pub done: bool,
}

/// What a page held, as the pager needs it.
#[derive(Debug, Clone, Copy)]
pub struct PageSeen<'a> {
    /// The page's skeleton (its pagination values).
    pub skeleton: &'a Value,
    /// How many bookings it had.
    pub records: u64,
    /// A hash of its booking ids in order.
    pub print: u64,
}

fn hash(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

impl Pager {
    /// The start of a walk.
    pub fn start(cfg: &SourceConfig) -> Pager {
        Pager {
            number: match &cfg.pagination {
                Pagination::Page { start, .. } => *start,
                _ => 0,
            },
            ..Pager::default()
        }
    }

    /// The 1-based number of the next page.
    pub fn next_page(&self) -> u32 {
        self.pages + 1
    }

    /// The next request: its URL (query not yet added) and parts. Refuses to go past
    /// `max_pages`.
    pub(crate) fn request(
        &self,
        cfg: &SourceConfig,
        kind: PollKind,
        now: DateTime<Utc>,
    ) -> Result<(Url, Parts), SourceError> {
        if self.next_page() > cfg.max_pages {
            return Err(SourceError::TooManyPages(cfg.max_pages));
        }
        let base = |paging: Paging| request::base(cfg, kind, now, paging);
        Ok(match &cfg.pagination {
            Pagination::None => (cfg.url.clone(), base(Paging::default())?),
            Pagination::Page {
                param,
                size,
                param_in,
                ..
            } => {
                let mut extra = vec![(param.clone(), Value::from(self.number))];
                if let Some((p, n)) = size {
                    extra.push((p.clone(), Value::from(*n)));
                }
                let paging = Paging {
                    page: Some(self.number),
                    limit: size.as_ref().map(|s| s.1),
                    ..Paging::default()
                };
                (
                    cfg.url.clone(),
                    with_param(base(paging)?, *param_in, &extra),
                )
            }
            Pagination::Offset {
                param,
                size,
                param_in,
                ..
            } => {
                let extra = [
                    (param.clone(), Value::from(self.offset)),
                    (size.0.clone(), Value::from(size.1)),
                ];
                let paging = Paging {
                    offset: Some(self.offset),
                    limit: Some(size.1),
                    ..Paging::default()
                };
                (
                    cfg.url.clone(),
                    with_param(base(paging)?, *param_in, &extra),
                )
            }
            Pagination::Cursor {
                param, param_in, ..
            } => match &self.cursor {
                None => (cfg.url.clone(), base(Paging::default())?),
                Some(c) => {
                    let paging = Paging {
                        cursor: Some(c.clone()),
                        ..Paging::default()
                    };
                    let extra = [(param.clone(), Value::String(c.clone()))];
                    (
                        cfg.url.clone(),
                        with_param(base(paging)?, *param_in, &extra),
                    )
                }
            },
            Pagination::NextLink { .. } => match &self.link {
                None => (cfg.url.clone(), base(Paging::default())?),
                Some(link) => {
                    let url = Url::parse(link).map_err(|e| SourceError::BadNextLink {
                        page: self.next_page(),
                        reason: e.to_string(),
                    })?;
                    let mut parts = base(Paging::default())?;
                    // The link carries its own query; the body (for POST) is sent again.
                    parts.query.clear();
                    (url, parts)
                }
            },
        })
    }

    /// Moves past the page just fetched, or stops. Errors carry no secret the page echoed.
    pub fn advance(&mut self, cfg: &SourceConfig, seen: PageSeen<'_>) -> Result<(), SourceError> {
        self.step(cfg, seen).map_err(|e| e.redact(&cfg.redactor))
    }

    fn step(&mut self, cfg: &SourceConfig, seen: PageSeen<'_>) -> Result<(), SourceError> {
        let page = self.next_page();
        self.pages = page;
        match &cfg.pagination {
            Pagination::None => self.done = true,
            Pagination::Page {
                start, size, stop, ..
            } => {
                if !self.numbered_page(seen, page)? {
                    return Ok(());
                }
                let more = match stop {
                    PageStop::EmptyPage => size.as_ref().is_none_or(|(_, n)| seen.records >= *n),
                    PageStop::HasMore(p) => truthy(seen.skeleton.pointer(p)),
                    PageStop::TotalPages(p) => {
                        let total = seen.skeleton.pointer(p).and_then(as_u64).unwrap_or(0);
                        self.number + 1 - start < total
                    }
                };
                self.done = !more;
                self.number += 1;
            }
            Pagination::Offset { size, total, .. } => {
                if !self.numbered_page(seen, page)? {
                    return Ok(());
                }
                self.offset += seen.records;
                let more = match total {
                    Some(p) => self.offset < seen.skeleton.pointer(p).and_then(as_u64).unwrap_or(0),
                    None => seen.records >= size.1,
                };
                self.done = !more;
            }
            Pagination::Cursor { next, .. } => {
                let cursor = match seen.skeleton.pointer(next) {
                    None | Some(Value::Null) | Some(Value::Bool(false)) => None,
                    Some(v) => scalar_string(v).filter(|c| !c.is_empty()),
                };
                match cursor {
                    None => self.done = true,
                    Some(c) => {
                        if self.visited.contains(&hash(&c)) {
                            return Err(SourceError::PageLoop(page + 1));
                        }
                        self.visited.push(hash(&c));
                        self.cursor = Some(c);
                    }
                }
            }
            Pagination::NextLink { pointer } => {
                let current = match &self.link {
                    Some(l) => Url::parse(l).map_err(|e| SourceError::BadNextLink {
                        page,
                        reason: e.to_string(),
                    })?,
                    None => cfg.url.clone(),
                };
                if self.visited.is_empty() {
                    self.visited.push(hash(current.as_str()));
                }
                match next_link(&cfg.url, &current, seen.skeleton, pointer, page)? {
                    None => self.done = true,
                    Some(next) if self.visited.contains(&hash(next.as_str())) => {
                        return Err(SourceError::PageLoop(page + 1));
                    }
                    Some(next) => {
                        self.visited.push(hash(next.as_str()));
                        self.link = Some(next.to_string());
                    }
                }
            }
        }
        Ok(())
    }

    /// The rules page numbers and offsets share: an empty page ends the walk, and a page that
    /// repeats the previous one is refused. False when the walk ended.
    fn numbered_page(&mut self, seen: PageSeen<'_>, page: u32) -> Result<bool, SourceError> {
        if seen.records == 0 {
            self.done = true;
            return Ok(false);
        }
        if self.prev_print == Some(seen.print) {
            return Err(SourceError::PageLoop(page));
        }
        self.prev_print = Some(seen.print);
        Ok(true)
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

/// Hashes a page's booking ids in order (for [`PageSeen::print`]).
#[derive(Default)]
pub struct PagePrint(xxhash_rust::xxh3::Xxh3);

impl PagePrint {
    /// Adds the next id.
    pub fn add(&mut self, id: &str) {
        self.0.update(id.as_bytes());
        self.0.update(&[0]);
    }

    /// The hash.
    pub fn finish(&self) -> u64 {
        self.0.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn cfg(pagination: &str) -> SourceConfig {
        let text = format!(
            "[sources.s]\nurl = \"http://api.test/b\"\nevery = \"1m\"\nmax_pages = 5\n[sources.s.pagination]\n{pagination}\n"
        );
        Config::from_toml_str(&text, "t.toml")
            .unwrap_or_else(|e| panic!("{e}"))
            .sources
            .remove(0)
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-29T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn seen(skeleton: &Value, records: u64, print: u64) -> PageSeen<'_> {
        PageSeen {
            skeleton,
            records,
            print,
        }
    }

    #[test]
    fn page_numbers_follow_has_more_and_refuse_a_repeat() {
        let c = cfg("style = \"page\"\nparam = \"page\"\nhas_more = \"/more\"");
        let mut p = Pager::start(&c);
        let (_, parts) = p.request(&c, PollKind::Full, now()).unwrap();
        assert_eq!(parts.query, [("page".to_string(), "1".to_string())]);
        p.advance(&c, seen(&json!({"more": true}), 2, 1)).unwrap();
        let (_, parts) = p.request(&c, PollKind::Full, now()).unwrap();
        assert_eq!(parts.query, [("page".to_string(), "2".to_string())]);
        assert!(matches!(
            p.clone().advance(&c, seen(&json!({"more": true}), 2, 1)),
            Err(SourceError::PageLoop(2))
        ));
        p.advance(&c, seen(&json!({"more": false}), 2, 2)).unwrap();
        assert!(p.done);
        assert_eq!(p.pages, 2);
    }

    #[test]
    fn a_pager_survives_a_round_trip_through_its_checkpoint() {
        let c = cfg("style = \"offset\"\nsize = 2");
        let mut p = Pager::start(&c);
        p.advance(&c, seen(&json!({}), 2, 1)).unwrap();
        let back: Pager = serde_json::from_slice(&serde_json::to_vec(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        let (_, parts) = back.request(&c, PollKind::Full, now()).unwrap();
        assert!(
            parts
                .query
                .contains(&("offset".to_string(), "2".to_string()))
        );
    }

    #[test]
    fn cursors_and_links_stop_and_refuse_loops() {
        let c = cfg("style = \"cursor\"\nnext = \"/next\"");
        let mut p = Pager::start(&c);
        p.advance(&c, seen(&json!({"next": "abc"}), 1, 1)).unwrap();
        let (_, parts) = p.request(&c, PollKind::Full, now()).unwrap();
        assert_eq!(parts.query, [("cursor".to_string(), "abc".to_string())]);
        assert!(matches!(
            p.clone().advance(&c, seen(&json!({"next": "abc"}), 1, 2)),
            Err(SourceError::PageLoop(3))
        ));
        p.advance(&c, seen(&json!({"next": ""}), 1, 2)).unwrap();
        assert!(p.done);

        let c = cfg("style = \"next_link\"\nnext = \"/n\"");
        let mut p = Pager::start(&c);
        p.advance(&c, seen(&json!({"n": "?page=2"}), 1, 1)).unwrap();
        let (url, _) = p.request(&c, PollKind::Full, now()).unwrap();
        assert_eq!(url.as_str(), "http://api.test/b?page=2");
        assert!(matches!(
            p.clone()
                .advance(&c, seen(&json!({"n": "http://api.test/b"}), 1, 2)),
            Err(SourceError::PageLoop(3))
        ));
        assert!(
            p.clone()
                .advance(&c, seen(&json!({"n": "http://evil.test/"}), 1, 2))
                .is_err()
        );
    }

    #[test]
    fn max_pages_is_enforced_before_the_request() {
        let c = cfg("style = \"page\"");
        let mut p = Pager::start(&c);
        for i in 0..5 {
            p.request(&c, PollKind::Full, now()).unwrap();
            p.advance(&c, seen(&json!({}), 1, i)).unwrap();
        }
        assert!(matches!(
            p.request(&c, PollKind::Full, now()),
            Err(SourceError::TooManyPages(5))
        ));
    }
}
