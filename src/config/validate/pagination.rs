//! The `[pagination]` table of a source: how pollhook walks a multi-page response (`none`,
//! `page`, `offset`, `cursor` or `next_link`) and where the paging parameter goes.

use super::Validator;
use crate::config::{PageStop, Pagination, ParamIn, raw};

impl Validator {
    /// The `[pagination]` table at `key`; `param_in` says whether the paging parameter goes in
    /// the query (default) or the body.
    pub(super) fn pagination(&mut self, key: &str, p: raw::RawPagination) -> Option<Pagination> {
        let param_in = match p.param_in.as_deref() {
            None | Some("query") => ParamIn::Query,
            Some("body") => ParamIn::Body,
            Some(o) => {
                self.bad(
                    format!("{key}.param_in"),
                    format!("`{o}` is not valid; use \"query\" or \"body\""),
                );
                ParamIn::Query
            }
        };
        match p.style.as_str() {
            "none" => Some(Pagination::None),
            "offset" => {
                let size = match (p.size_param, p.size) {
                    (Some(n), Some(s)) if s > 0 => Some((n, s)),
                    (None, Some(s)) if s > 0 => Some(("limit".to_string(), s)),
                    _ => {
                        self.bad(format!("{key}.size"), "offset pagination needs a page `size` of at least 1 (and optionally `size_param`, default \"limit\")");
                        None
                    }
                };
                if let Some(t) = &p.total {
                    self.pointer(&format!("{key}.total"), t);
                }
                Some(Pagination::Offset {
                    param: p.param.unwrap_or_else(|| "offset".into()),
                    size: size?,
                    total: p.total,
                    param_in,
                })
            }
            "cursor" => {
                let Some(next) = p.next else {
                    self.bad(format!("{key}.next"), "is required for cursor pagination: the JSON Pointer to the next cursor, e.g. \"/meta/next_cursor\"");
                    return None;
                };
                self.pointer(&format!("{key}.next"), &next);
                Some(Pagination::Cursor {
                    param: p.param.unwrap_or_else(|| "cursor".into()),
                    next,
                    param_in,
                })
            }
            "page" => Some(self.page_pagination(key, p, param_in)),
            "next_link" => {
                if p.param_in.is_some() {
                    self.bad(
                        format!("{key}.param_in"),
                        "does not apply to next_link pagination (the link carries its own query)",
                    );
                }
                let Some(pointer) = p.next else {
                    self.bad(format!("{key}.next"), "is required for next_link: the JSON Pointer to the next page's URL, e.g. \"/pages/nextPageLink\"");
                    return None;
                };
                self.pointer(&format!("{key}.next"), &pointer);
                Some(Pagination::NextLink { pointer })
            }
            other => {
                self.bad(
                    format!("{key}.style"),
                    format!("`{other}` is not valid; use \"none\", \"page\", \"offset\", \"cursor\" or \"next_link\""),
                );
                None
            }
        }
    }

    /// `style = "page"`: numbered pages, an optional page size, and how the last page is known.
    fn page_pagination(
        &mut self,
        key: &str,
        p: raw::RawPagination,
        param_in: ParamIn,
    ) -> Pagination {
        let size = match (p.size_param, p.size) {
            (Some(n), Some(s)) if s > 0 => Some((n, s)),
            (None, None) => None,
            _ => {
                self.bad(
                    format!("{key}.size"),
                    "give both `size_param` and a `size` of at least 1, or neither",
                );
                None
            }
        };
        let stop = match (p.has_more, p.total_pages) {
            (Some(_), Some(_)) => {
                self.bad(
                    format!("{key}.has_more"),
                    "give either `has_more` or `total_pages`, not both",
                );
                PageStop::EmptyPage
            }
            (Some(h), None) => {
                self.pointer(&format!("{key}.has_more"), &h);
                PageStop::HasMore(h)
            }
            (None, Some(t)) => {
                self.pointer(&format!("{key}.total_pages"), &t);
                PageStop::TotalPages(t)
            }
            (None, None) => PageStop::EmptyPage,
        };
        Pagination::Page {
            param: p.param.unwrap_or_else(|| "page".into()),
            start: p.start.unwrap_or(1),
            size,
            stop,
            param_in,
        }
    }
}
