//! `check --probe`: one full fetch of a live source with nothing committed, and what the
//! configuration makes of it (pages, bookings, a sample, statuses, cancellations). A source that
//! logs in reuses the token the daemon cached in the state file when that file can be read.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::PollError;
use super::index::id_hash;
use super::runtime::policy_of;
use crate::clock::Clock;
use crate::config::{Auth, SourceConfig};
use crate::http::auth::REFRESH_MARGIN;
use crate::source::{
    PagePrint, PageSeen, Pager, PollKind, SourceClient, SourceError, token_cache_key,
};
use crate::store::{Store, TokenPeek};

/// What `check --probe` learned from one full cycle of a live source (nothing is committed).
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Pages fetched.
    pub pages: u32,
    /// Bookings found (distinct ids).
    pub bookings: usize,
    /// A sample booking: its id and status (as compared).
    pub sample: Option<(String, Option<String>)>,
    /// How many are cancelled by the configured status values.
    pub cancelled: usize,
    /// A few cancelled ids.
    pub cancelled_examples: Vec<String>,
    /// The distinct status values seen, with counts.
    pub statuses: Vec<(String, usize)>,
    /// For a source that logs in (OAuth2, refresh token): where its access token came from.
    pub token: Option<String>,
}

/// Seeds `tokens` with the token the daemon cached for `cfg` in the state file at `state`, if
/// it can be read and is still fresh; says what happened.
fn reuse_token(cfg: &SourceConfig, state: &Path, tokens: &Store, now_ms: i64) -> String {
    let shown = state.display();
    let minted = "a new token is minted for this probe (and not kept: the probe writes nothing)";
    if !state.exists() {
        return format!("no state file at {shown} yet; {minted}");
    }
    let key = token_cache_key(&cfg.name);
    match Store::peek_token(state, &key) {
        TokenPeek::Found(t) if t.expires_ms - now_ms > REFRESH_MARGIN.as_millis() as i64 => {
            match tokens.set_token(&key, Some(&t)) {
                Ok(()) => format!("reusing the token cached in {shown}"),
                Err(e) => format!("cannot hold the cached token ({e}); {minted}"),
            }
        }
        TokenPeek::Found(_) => format!("the token cached in {shown} has expired; {minted}"),
        TokenPeek::Missing => format!("no token for this source cached in {shown}; {minted}"),
        TokenPeek::Busy => format!(
            "{shown} is held by a running pollhook, so its cached token cannot be read; {minted}"
        ),
        TokenPeek::Unreadable(e) => format!("cannot read {shown} ({e}); {minted}"),
    }
}

/// Fetches one full cycle of `cfg` and reports what the configuration makes of it. Tokens go
/// to an in-memory store, so it can run beside a daemon that holds the state file; a token the
/// daemon cached in `state` is reused when that file can be read (`None`: never).
pub async fn probe(cfg: &SourceConfig, state: Option<&Path>) -> Result<ProbeReport, PollError> {
    let store = Store::in_memory()?;
    let clock = Clock::system();
    let logs_in = matches!(cfg.auth, Auth::OAuth2 { .. } | Auth::TokenRefresh { .. });
    let token = match state {
        Some(path) if logs_in => Some(reuse_token(cfg, path, &store, clock.now_ms())),
        _ => None,
    };
    let client = SourceClient::new(cfg, Arc::new(store), clock)
        .map_err(|e| PollError::Source(SourceError::Template(e)))?;
    let policy = policy_of(cfg);
    let now = chrono::Utc::now();
    let mut pager = Pager::start(cfg);
    let mut seen: HashSet<u64> = HashSet::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut report = ProbeReport {
        pages: 0,
        bookings: 0,
        sample: None,
        cancelled: 0,
        cancelled_examples: Vec::new(),
        statuses: Vec::new(),
        token,
    };
    while !pager.done {
        let page = client.fetch(cfg, &pager, PollKind::Full, now).await?;
        let mut records = 0u64;
        let mut print = PagePrint::default();
        let skeleton = crate::source::page(cfg, &cfg.items, &page.body, page.number, &mut |r| {
            records += 1;
            print.add(&r.id);
            if seen.insert(id_hash(&r.id)) {
                report.bookings += 1;
            }
            let status = policy.status_of(&r.doc);
            if report.sample.is_none() {
                report.sample = Some((r.id.clone(), status.clone()));
            }
            *statuses
                .entry(status.unwrap_or_else(|| "(none)".into()))
                .or_default() += 1;
            if policy.is_cancelled(&r.doc) {
                report.cancelled += 1;
                if report.cancelled_examples.len() < 5 {
                    report.cancelled_examples.push(r.id);
                }
            }
            Ok(())
        })?;
        pager.advance(
            cfg,
            PageSeen {
                skeleton: &skeleton,
                records,
                print: print.finish(),
            },
        )?;
    }
    report.pages = pager.pages;
    report.statuses = statuses.into_iter().collect();
    Ok(report)
}
