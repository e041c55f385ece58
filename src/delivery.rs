//! Delivery: renders an event for an endpoint (v1 query-string ping or v2 JSON envelope), signs
//! it (Standard Webhooks), sends it, and records outcomes in batches (group commit).
//!
//! Rendering is pure ([`render`]); the retry decision is [`crate::outbox::decide`]. The worker
//! keeps a set of in-flight deliveries so a lane head is never sent twice at once, sends
//! concurrently (bounded per endpoint), and commits whatever outcomes have arrived in one redb
//! transaction, so the fsync cost is shared by many deliveries.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::{Notify, Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::auth::Authorizer;
use crate::config::{EndpointConfig, Format};
use crate::outbox::{
    Attempt, AttemptResult, Decision, Delivery, DeliveryState, Event, HISTORY_LIMIT, decide,
};
use crate::signing;
use crate::store::{DueItem, Store, StoreError};

/// How much of a receiver's response body is kept with the attempt.
pub const RESPONSE_BODY_CAP: usize = 1024;

/// Most deliveries in flight at once across all endpoints (bounds memory).
pub const MAX_IN_FLIGHT_TOTAL: usize = 1024;

/// Most outcomes committed in one transaction.
const COMMIT_BATCH: usize = 512;

/// A request ready to send (everything except the per-attempt timestamp and signature).
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// HTTP method.
    pub method: reqwest::Method,
    /// Final URL.
    pub url: Url,
    /// Body bytes (empty for v1).
    pub body: Vec<u8>,
    /// Content type, when there is a body.
    pub content_type: Option<&'static str>,
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms) {
        chrono::LocalResult::Single(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        _ => String::new(),
    }
}

/// Beds24 notify-URL variables and where pollhook finds them in a Beds24 API v2 booking by
/// default (`variables` in an endpoint's config overrides or adds). `BOOKID` is always the
/// booking id pollhook tracks.
pub const BEDS24_VARIABLES: &[(&str, &str)] = &[
    ("PROPERTYID", "/propertyId"),
    ("ROOMID", "/roomId"),
    ("UNITID", "/unitId"),
    ("GROUPID", "/masterId"),
    ("STATUS", "/status"),
    ("FIRSTNIGHT", "/arrival"),
    ("LEAVINGDAY", "/departure"),
    ("NUMADULT", "/numAdult"),
    ("NUMCHILD", "/numChild"),
    ("GUESTTITLE", "/title"),
    ("GUESTFIRSTNAME", "/firstName"),
    ("GUESTNAME", "/lastName"),
    ("GUESTLASTNAME", "/lastName"),
    ("GUESTEMAIL", "/email"),
    ("GUESTPHONE", "/phone"),
    ("GUESTCOMPANY", "/company"),
    ("PRICE", "/price"),
    ("REFERENCE", "/reference"),
    ("REFERER", "/referer"),
    ("REFERRER", "/referer"),
    ("APISOURCE", "/apiSource"),
    ("BOOKID", ""),
    ("REFERENCENUMBER", ""),
];

/// The `event.*` fields endpoint templates may use.
pub const EVENT_NAMES: &[&str] = &[
    "id",
    "type",
    "status",
    "source",
    "booking_id",
    "sequence",
    "attempt",
    "detected_at",
    "changes",
];

/// Names that endpoint templates (URL and body) may use.
pub const DELIVERY_NAMES: &[&str] = &["event", "booking", "beds24", "now", "today"];

/// What an endpoint template sees: the event, the attempt number and the booking.
pub struct DeliveryContext<'a> {
    /// The event.
    pub event: &'a Event,
    /// Attempt number (1 for the first try).
    pub attempt: u32,
    /// Beds24-style variables: name -> pointer.
    pub variables: &'a std::collections::BTreeMap<String, String>,
    /// The clock.
    pub now: chrono::DateTime<Utc>,
}

impl crate::template::Context for DeliveryContext<'_> {
    fn now(&self) -> chrono::DateTime<Utc> {
        self.now
    }
    fn name(&self, name: &str) -> Option<crate::template::Val> {
        use crate::template::Val;
        let e = self.event;
        let json = |v: Value| Some(Val::Json(v));
        match name {
            "event.id" => json(Value::String(e.id.clone())),
            "event.type" => json(Value::String(e.kind.event_type().into())),
            "event.status" => json(Value::String(e.kind.status_word().into())),
            "event.source" => json(Value::String(e.source.clone())),
            "event.booking_id" => json(Value::String(e.booking_id.clone())),
            "event.sequence" => json(Value::from(e.seq)),
            "event.attempt" => json(Value::from(self.attempt)),
            "event.detected_at" => {
                chrono::DateTime::<Utc>::from_timestamp_millis(e.detected_ms).map(Val::Time)
            }
            "event.changes" => json(serde_json::to_value(&e.changes).unwrap_or(Value::Null)),
            "booking" => json(e.booking.clone()),
            other => {
                let var = other.strip_prefix("beds24.")?;
                match var {
                    "BOOKID" | "REFERENCENUMBER" => json(Value::String(e.booking_id.clone())),
                    _ => {
                        let p = self.variables.get(var)?;
                        e.booking.pointer(p).cloned().map(Val::Json)
                    }
                }
            }
        }
    }
    fn pointer(&self, root: &str, pointer: &str) -> Option<Value> {
        match root {
            "booking" => self.event.booking.pointer(pointer).cloned(),
            _ => None,
        }
    }
}

/// The v2 body of an event for an endpoint: its custom template, else its preset.
pub fn v2_body(
    ep: &EndpointConfig,
    event: &Event,
    attempt: u32,
    now: chrono::DateTime<Utc>,
) -> Result<Value, String> {
    match &ep.body {
        Some(tree) => {
            let ctx = DeliveryContext {
                event,
                attempt,
                variables: &ep.variables,
                now,
            };
            tree.render(&ctx)
                .map_err(|e| format!("endpoints.{}.body: {e}", ep.name))
        }
        None => Ok(crate::presets::render(ep.preset, event, attempt)),
    }
}

/// Renders an event for an endpoint. v1 appends `bookid` and `status` (names configurable) to
/// the URL's existing query string; v2 builds the body. Every value placed in the URL is
/// percent-encoded, so it can never add a parameter or change the path or host.
pub fn render(ep: &EndpointConfig, event: &Event, attempt: u32) -> Result<Rendered, String> {
    let now = Utc::now();
    let mut url = match &ep.url_template {
        None => ep.url.clone(),
        Some(t) => {
            let ctx = DeliveryContext {
                event,
                attempt,
                variables: &ep.variables,
                now,
            };
            let text = t
                .render(&ctx, crate::template::Escape::UrlComponent)
                .map_err(|e| format!("endpoints.{}.url: {e}", ep.name))?;
            let u = Url::parse(&text)
                .map_err(|e| format!("endpoints.{}.url: rendered URL is invalid: {e}", ep.name))?;
            if u.origin() != ep.url.origin() {
                return Err(format!(
                    "endpoints.{}.url: rendered URL changed host",
                    ep.name
                ));
            }
            u
        }
    };
    Ok(match ep.format {
        Format::V1 => {
            url.query_pairs_mut()
                .append_pair(&ep.bookid_param, &event.booking_id)
                .append_pair(&ep.status_param, event.kind.status_word());
            Rendered {
                method: ep.method_for(event.kind),
                url,
                body: Vec::new(),
                content_type: None,
            }
        }
        Format::V2 => Rendered {
            method: ep.method_for(event.kind),
            url,
            body: match &ep.body {
                Some(_) => {
                    serde_json::to_vec(&v2_body(ep, event, attempt, now)?).unwrap_or_default()
                }
                None => crate::presets::to_vec(ep.preset, event, attempt),
            },
            content_type: Some("application/json"),
        },
    })
}

/// Parses `Retry-After` (delta seconds or an HTTP date) relative to `now`.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (at.with_timezone(&Utc) - now)
        .to_std()
        .ok()
        .or(Some(Duration::ZERO))
}

/// Applies an attempt to a delivery row (pure): counts it, keeps the latest history, and moves
/// the row to delivered, a later retry, or dead.
pub fn settle(
    mut d: Delivery,
    ep: &EndpointConfig,
    attempt: Attempt,
    result: AttemptResult,
    now_ms: i64,
    unit: f64,
) -> Delivery {
    d.attempts += 1;
    d.history.push(attempt);
    if d.history.len() > HISTORY_LIMIT {
        let extra = d.history.len() - HISTORY_LIMIT;
        d.history.drain(..extra);
    }
    match decide(&ep.retry, d.attempts, result, now_ms, unit) {
        Decision::Delivered => d.state = DeliveryState::Delivered,
        Decision::RetryAt(t) => d.next_ms = t,
        Decision::Dead => d.state = DeliveryState::Dead,
    }
    d
}

/// Something worth telling a watcher (the demo, the logs).
#[derive(Debug, Clone)]
pub enum Notice {
    /// A change was detected and queued.
    Detected(Arc<Event>),
    /// An attempt finished.
    Attempted {
        /// Endpoint name.
        endpoint: String,
        /// The event.
        event: Arc<Event>,
        /// The row after the attempt.
        delivery: Delivery,
    },
}

struct EndpointRuntime {
    cfg: EndpointConfig,
    http: reqwest::Client,
    permits: Arc<Semaphore>,
    auth: Authorizer,
    /// When the current run of failures began (cleared by a success).
    failing_since: Mutex<Option<i64>>,
    /// Whether the failing state has been reported (logged) for the current run.
    failing_reported: std::sync::atomic::AtomicBool,
    /// Outcome counters since start: delivered, failed attempts, dead-lettered.
    counters: [std::sync::atomic::AtomicU64; 3],
}

/// What the admin API shows about an endpoint. No secrets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointReport {
    /// Name.
    pub name: String,
    /// `enabled` from the configuration.
    pub enabled: bool,
    /// Suspended by pollhook (410 Gone), until an operator re-enables it.
    pub disabled: Option<crate::store::Disabled>,
    /// Failing continuously for longer than `failing_after`.
    pub failing: bool,
    /// Start of the current run of failures (ms since epoch).
    pub failing_since_ms: Option<i64>,
    /// Deliveries acknowledged since start.
    pub delivered_total: u64,
    /// Failed attempts since start (each retry counts).
    pub failed_attempts_total: u64,
    /// Deliveries dead-lettered since start.
    pub dead_total: u64,
}

/// Counts from one delivery round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Attempts made.
    pub attempted: usize,
    /// Of which delivered.
    pub delivered: usize,
    /// Of which scheduled for retry.
    pub retrying: usize,
    /// Of which dead-lettered.
    pub dead: usize,
}

impl RoundReport {
    fn count(&mut self, d: &Delivery) {
        self.attempted += 1;
        match d.state {
            DeliveryState::Delivered => self.delivered += 1,
            DeliveryState::Dead => self.dead += 1,
            DeliveryState::Pending => self.retrying += 1,
        }
    }
}

/// Sends due deliveries and records their outcomes.
pub struct Dispatcher {
    store: Store,
    endpoints: HashMap<String, Arc<EndpointRuntime>>,
    disabled: Mutex<HashMap<String, crate::store::Disabled>>,
    /// Endpoint name -> small integer, so the in-flight set is cheap to copy.
    ids: Arc<HashMap<String, u32>>,
    in_flight: Mutex<HashSet<(u32, u64)>>,
    notices: broadcast::Sender<Notice>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Dispatcher {
    /// Builds one HTTP client per endpoint (its own timeouts; redirects never followed).
    pub fn new(
        store: Store,
        endpoints: &[EndpointConfig],
        notices: broadcast::Sender<Notice>,
    ) -> Result<Dispatcher, String> {
        let mut map = HashMap::new();
        for ep in endpoints {
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(ep.connect_timeout)
                .timeout(ep.timeout)
                .user_agent(concat!("pollhook/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("endpoints.{}: cannot build HTTP client: {e}", ep.name))?;
            let auth = Authorizer::new(
                ep.auth.clone(),
                format!("endpoint:{}", ep.name),
                store.clone(),
                ep.timeout,
            )
            .map_err(|e| format!("endpoints.{}: {e}", ep.name))?;
            map.insert(
                ep.name.clone(),
                Arc::new(EndpointRuntime {
                    cfg: ep.clone(),
                    http,
                    permits: Arc::new(Semaphore::new(ep.max_in_flight as usize)),
                    auth,
                    failing_since: Mutex::new(None),
                    failing_reported: std::sync::atomic::AtomicBool::new(false),
                    counters: Default::default(),
                }),
            );
        }
        let disabled = store
            .endpoint_states()
            .map_err(|e| format!("cannot read endpoint states: {e}"))?
            .into_iter()
            .filter_map(|(name, st)| st.disabled.map(|d| (name, d)))
            .collect();
        let ids = Arc::new(
            map.keys()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as u32))
                .collect(),
        );
        Ok(Dispatcher {
            store,
            endpoints: map,
            ids,
            disabled: Mutex::new(disabled),
            in_flight: Mutex::new(HashSet::new()),
            notices,
        })
    }

    fn skip_fn(&self) -> impl Fn(&str, u64) -> bool + Send + 'static {
        let busy = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Endpoints not sending: off in the config, or suspended after a 410. Small integer sets,
        // since this runs before every due scan.
        let inactive: HashSet<u32> = {
            let disabled = self.disabled.lock().unwrap_or_else(|e| e.into_inner());
            self.endpoints
                .iter()
                .filter(|(n, e)| !e.cfg.enabled || disabled.contains_key(*n))
                .filter_map(|(n, _)| self.ids.get(n).copied())
                .collect()
        };
        let ids = self.ids.clone();
        move |ep: &str, seq: u64| match ids.get(ep) {
            // An endpoint no longer configured: its deliveries wait in the store.
            None => true,
            Some(i) => inactive.contains(i) || busy.contains(&(*i, seq)),
        }
    }

    async fn fetch_due(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<crate::store::DueBatch, StoreError> {
        let skip = self.skip_fn();
        self.store.run(move |s| s.due(now, limit, &skip)).await
    }

    /// One round at `now_ms`: every due lane head is attempted once (concurrently, bounded per
    /// endpoint) and all outcomes are committed in one transaction. For `once`, tests and admin.
    pub async fn deliver_due(&self, now_ms: i64) -> Result<RoundReport, StoreError> {
        let batch = self.fetch_due(now_ms, MAX_IN_FLIGHT_TOTAL).await?;
        let mut tasks = tokio::task::JoinSet::new();
        for item in batch.items {
            let Some(ep) = self.endpoints.get(&item.delivery.endpoint).cloned() else {
                continue;
            };
            tasks.spawn(async move {
                let _permit = ep.permits.clone().acquire_owned().await;
                attempt(&ep, item, now_ms).await
            });
        }
        let mut outcomes = Vec::new();
        while let Some(res) = tasks.join_next().await {
            if let Ok(o) = res {
                outcomes.push(o);
            }
        }
        self.commit(outcomes, now_ms).await
    }

    async fn commit(
        &self,
        outcomes: Vec<(Delivery, i64, Arc<Event>)>,
        now_ms: i64,
    ) -> Result<RoundReport, StoreError> {
        let rows: Vec<(Delivery, i64)> = outcomes.iter().map(|(d, p, _)| (d.clone(), *p)).collect();
        self.store.run(move |s| s.record(&rows, now_ms)).await?;
        for (d, _, _) in &outcomes {
            self.track_health(d).await;
        }
        let mut report = RoundReport::default();
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let watched = self.notices.receiver_count() > 0;
        for (d, _, event) in outcomes {
            if let Some(i) = self.ids.get(&d.endpoint) {
                in_flight.remove(&(*i, d.seq));
            }
            report.count(&d);
            log_outcome(&d, &event);
            if watched {
                let _ = self.notices.send(Notice::Attempted {
                    endpoint: d.endpoint.clone(),
                    event,
                    delivery: d,
                });
            }
        }
        Ok(report)
    }

    /// The daemon's delivery loop: keep up to [`MAX_IN_FLIGHT_TOTAL`] attempts running and sleep
    /// until the next due time, a `wake`, or a committed batch. Outcomes go to a separate
    /// committer task that writes whatever has arrived in one transaction (group commit), so
    /// sending goes on while a commit's fsync is in progress; a delivery stays "in flight" until
    /// its outcome is committed, so it is never sent twice at once.
    ///
    /// On cancel no new attempt starts; attempts in flight get `grace` to finish and be recorded.
    /// Anything unrecorded stays due in the store and is sent again (same event id) after a
    /// restart.
    pub async fn run(
        self: Arc<Self>,
        cancel: CancellationToken,
        wake: Arc<Notify>,
        grace: Duration,
    ) {
        let (tx, rx) = mpsc::channel::<(Delivery, i64, Arc<Event>)>(MAX_IN_FLIGHT_TOTAL);
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let committed = Arc::new(Notify::new());
        let mut committer = tokio::spawn(self.clone().committer(
            rx,
            running.clone(),
            committed.clone(),
        ));
        let mut next_due: Option<i64> = None;
        loop {
            let now = now_ms();
            let busy = running.load(std::sync::atomic::Ordering::Acquire);
            let free = MAX_IN_FLIGHT_TOTAL.saturating_sub(busy);
            if free > 0 {
                match self.fetch_due(now, free).await {
                    Ok(batch) => {
                        next_due = batch.next_due_ms;
                        for item in batch.items {
                            let Some(ep) = self.endpoints.get(&item.delivery.endpoint).cloned()
                            else {
                                continue;
                            };
                            if let Some(i) = self.ids.get(&item.delivery.endpoint) {
                                self.in_flight
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert((*i, item.delivery.seq));
                            }
                            running.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                let _permit = ep.permits.clone().acquire_owned().await;
                                let out = attempt(&ep, item, now_ms()).await;
                                let _ = tx.send(out).await;
                            });
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read due deliveries; retrying in 1s");
                        next_due = Some(now + 1000);
                    }
                }
            }
            // With every slot busy only a committed batch frees one: do not wake for due times.
            let busy = running.load(std::sync::atomic::Ordering::Acquire);
            let sleep_for = match next_due {
                _ if busy >= MAX_IN_FLIGHT_TOTAL => Duration::from_secs(3600),
                Some(t) => Duration::from_millis(t.saturating_sub(now_ms()).max(0) as u64),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = committed.notified() => {}
                _ = wake.notified() => {}
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
        // Shutdown: no new attempts. The committer ends once every attempt in flight has sent
        // its outcome (all senders dropped) and it has recorded them, or at the grace deadline.
        drop(tx);
        match tokio::time::timeout(grace, &mut committer).await {
            Ok(_) => {}
            Err(_) => {
                committer.abort();
                let left = running.load(std::sync::atomic::Ordering::Acquire);
                tracing::warn!(
                    left,
                    "abandoned deliveries still in flight at shutdown; they stay queued and are sent again on restart"
                );
            }
        }
    }

    /// Records outcomes as they arrive, as many per transaction as are waiting (up to
    /// [`COMMIT_BATCH`]).
    async fn committer(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<(Delivery, i64, Arc<Event>)>,
        running: Arc<std::sync::atomic::AtomicUsize>,
        committed: Arc<Notify>,
    ) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < COMMIT_BATCH {
                match rx.try_recv() {
                    Ok(o) => batch.push(o),
                    Err(_) => break,
                }
            }
            let n = batch.len();
            if let Err(e) = self.commit_or_forget(batch).await {
                tracing::error!(error = %e, "cannot record delivery outcomes; they will be sent again");
            }
            running.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
            committed.notify_one();
        }
    }

    /// Updates the endpoint's failing state from an outcome, and suspends it on 410 Gone.
    async fn track_health(&self, d: &Delivery) {
        let Some(ep) = self.endpoints.get(&d.endpoint) else {
            return;
        };
        let counter = match d.state {
            DeliveryState::Delivered => 0,
            DeliveryState::Pending => 1,
            DeliveryState::Dead => 2,
        };
        ep.counters[counter].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if d.state == DeliveryState::Dead {
            // The last attempt failed too.
            ep.counters[1].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let last = d.history.last();
        let at = last.map(|a| a.at_ms).unwrap_or_else(now_ms);
        if d.state == DeliveryState::Delivered {
            *ep.failing_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
            if ep
                .failing_reported
                .swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::info!(endpoint = %d.endpoint, "endpoint recovered");
            }
            return;
        }
        let since = *ep
            .failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(at);
        if at - since >= ep.cfg.failing_after.as_millis() as i64
            && !ep
                .failing_reported
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::error!(
                endpoint = %d.endpoint,
                since = %rfc3339(since),
                "endpoint FAILING: every delivery attempt has failed for longer than failing_after; events keep queueing"
            );
        }
        if last.and_then(|a| a.status) == Some(410) {
            let disabled = crate::store::Disabled {
                since_ms: at,
                reason: "the receiver answered 410 Gone".into(),
            };
            let name = d.endpoint.clone();
            let row = disabled.clone();
            match self
                .store
                .run(move |s| s.set_endpoint_disabled(&name, Some(row), at))
                .await
            {
                Ok(()) => tracing::error!(
                    endpoint = %d.endpoint,
                    "endpoint DISABLED: the receiver answered 410 Gone. Events keep queueing; re-enable with `pollhook enable {}` once it is fixed",
                    d.endpoint
                ),
                Err(e) => {
                    tracing::error!(endpoint = %d.endpoint, error = %e, "cannot persist the disabled state")
                }
            }
            self.disabled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(d.endpoint.clone(), disabled);
        }
    }

    /// Every endpoint's state for the admin API and metrics.
    pub async fn endpoint_report(&self) -> Result<Vec<EndpointReport>, StoreError> {
        let disabled = self
            .disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let now = now_ms();
        let mut out: Vec<EndpointReport> = self
            .endpoints
            .values()
            .map(|ep| {
                let since = *ep.failing_since.lock().unwrap_or_else(|e| e.into_inner());
                EndpointReport {
                    name: ep.cfg.name.clone(),
                    enabled: ep.cfg.enabled,
                    disabled: disabled.get(&ep.cfg.name).cloned(),
                    failing: since
                        .is_some_and(|s| now - s >= ep.cfg.failing_after.as_millis() as i64),
                    failing_since_ms: since,
                    delivered_total: ep.counters[0].load(std::sync::atomic::Ordering::Relaxed),
                    failed_attempts_total: ep.counters[1]
                        .load(std::sync::atomic::Ordering::Relaxed),
                    dead_total: ep.counters[2].load(std::sync::atomic::Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Re-enables an endpoint suspended by a 410; its queued events become due now.
    /// Returns false for an unknown endpoint.
    pub async fn enable(&self, endpoint: &str) -> Result<bool, StoreError> {
        let Some(ep) = self.endpoints.get(endpoint) else {
            return Ok(false);
        };
        let name = endpoint.to_string();
        let now = now_ms();
        self.store
            .run(move |s| s.set_endpoint_disabled(&name, None, now))
            .await?;
        self.disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(endpoint);
        *ep.failing_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
        ep.failing_reported
            .store(false, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(endpoint, "endpoint re-enabled");
        Ok(true)
    }

    async fn commit_or_forget(
        &self,
        batch: Vec<(Delivery, i64, Arc<Event>)>,
    ) -> Result<(), StoreError> {
        let keys: Vec<(u32, u64)> = batch
            .iter()
            .filter_map(|(d, _, _)| self.ids.get(&d.endpoint).map(|i| (*i, d.seq)))
            .collect();
        let res = self.commit(batch, now_ms()).await.map(|_| ());
        if res.is_err() {
            // Not recorded: release them so they are attempted again (same event id).
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            for k in keys {
                in_flight.remove(&k);
            }
        }
        res
    }
}

fn log_outcome(d: &Delivery, event: &Event) {
    let last = d.history.last();
    let status = last.and_then(|a| a.status);
    let error = last.and_then(|a| a.error.as_deref()).unwrap_or("");
    match d.state {
        DeliveryState::Delivered => tracing::debug!(
            endpoint = %d.endpoint, event = %event.id, kind = event.kind.status_word(),
            booking = %event.booking_id, status, attempts = d.attempts, "delivered"
        ),
        DeliveryState::Pending => tracing::warn!(
            endpoint = %d.endpoint, event = %event.id, booking = %event.booking_id, status, error,
            attempts = d.attempts, next = %rfc3339(d.next_ms), "delivery failed; will retry"
        ),
        DeliveryState::Dead => tracing::error!(
            endpoint = %d.endpoint, event = %event.id, booking = %event.booking_id, status, error,
            attempts = d.attempts, "delivery dead-lettered after its last attempt"
        ),
    }
}

/// Makes one attempt and returns the updated row, the due time it was fetched under, and the event.
async fn attempt(
    ep: &EndpointRuntime,
    item: DueItem,
    now_ms_at_fetch: i64,
) -> (Delivery, i64, Arc<Event>) {
    let DueItem { delivery, event } = item;
    let prev_next = delivery.next_ms;
    let started = Instant::now();
    let at_ms = now_ms();
    let rendered = match render(&ep.cfg, &event, delivery.attempts + 1) {
        Ok(r) => r,
        Err(error) => {
            // A template that cannot be rendered is retried on schedule (fix the config and
            // reload) and ends as a dead letter like any other failure.
            tracing::error!(endpoint = %ep.cfg.name, event = %event.id, %error, "cannot render the request");
            let attempt = Attempt {
                at_ms,
                status: None,
                error: Some(error),
                latency_ms: 0,
                body: String::new(),
            };
            let settle_now = now_ms().max(now_ms_at_fetch);
            let row = settle(
                delivery,
                &ep.cfg,
                attempt,
                AttemptResult::Transport,
                settle_now,
                rand::random::<f64>(),
            );
            return (row, prev_next, event);
        }
    };
    let ts = at_ms / 1000;
    let mut headers = HeaderMap::new();
    for (k, v) in &ep.cfg.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(n, v);
        }
    }
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put("webhook-id", &event.id);
    put("webhook-timestamp", &ts.to_string());
    if !ep.cfg.keys.is_empty() {
        put(
            "webhook-signature",
            &signing::sign(&ep.cfg.keys, &event.id, ts, &rendered.body),
        );
    }
    if let Some(ct) = rendered.content_type {
        put("content-type", ct);
    }
    // Shared, so a repeat after a 401 does not copy the body.
    let body = bytes::Bytes::from(rendered.body);
    let mut retried_auth = false;
    let result = loop {
        let req = ep
            .http
            .request(rendered.method.clone(), rendered.url.clone())
            .headers(headers.clone())
            .body(body.clone());
        let req = match ep.auth.apply(req).await {
            Ok(r) => r,
            Err(e) => break Err(e.to_string()),
        };
        match req.send().await {
            Ok(resp)
                if resp.status() == reqwest::StatusCode::UNAUTHORIZED
                    && ep.auth.uses_tokens()
                    && !retried_auth =>
            {
                // A cached token may have been revoked: mint a new one and try once more.
                retried_auth = true;
                ep.auth.invalidate().await;
            }
            Ok(resp) => break Ok(resp),
            Err(e) => break Err(crate::source::describe_reqwest(e)),
        }
    };
    let (attempt_result, status, error, body) = match result {
        Ok(mut resp) => {
            let code = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()));
            let mut body = Vec::new();
            while body.len() < RESPONSE_BODY_CAP {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        body.extend_from_slice(&c[..c.len().min(RESPONSE_BODY_CAP - body.len())])
                    }
                    _ => break,
                }
            }
            (
                AttemptResult::Status { code, retry_after },
                Some(code),
                None,
                crate::source::snippet(&body, RESPONSE_BODY_CAP),
            )
        }
        Err(e) => (AttemptResult::Transport, None, Some(e), String::new()),
    };
    let attempt = Attempt {
        at_ms,
        status,
        error,
        latency_ms: started.elapsed().as_millis() as u64,
        body,
    };
    // Retry times are measured from when the attempt ended (or the round's clock in tests).
    let settle_now = now_ms().max(now_ms_at_fetch);
    let row = settle(
        delivery,
        &ep.cfg,
        attempt,
        attempt_result,
        settle_now,
        rand::random::<f64>(),
    );
    (row, prev_next, event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::outbox::{EventKind, FieldChange};
    use serde_json::json;

    fn endpoint(extra: &str) -> EndpointConfig {
        let text = format!(
            "[sources.s]\nurl = \"http://127.0.0.1:1/\"\nevery = \"1m\"\n[endpoints.e]\n{extra}\n"
        );
        Config::from_toml_str(&text, "t.toml")
            .unwrap()
            .endpoints
            .remove(0)
    }

    fn event(id: &str) -> Event {
        Event {
            id: "evt_1".into(),
            seq: 9,
            kind: EventKind::Modify,
            source: "s".into(),
            booking_id: id.into(),
            detected_ms: 1_700_000_000_123,
            booking: json!({"id": id, "guest": "Zoë & \"Bob\""}),
            changes: vec![FieldChange {
                path: "/guest".into(),
                old: json!("Zoë"),
                new: json!("Zoë & \"Bob\""),
            }],
        }
    }

    #[test]
    fn v1_appends_to_the_existing_query_and_encodes_values() {
        let ep = endpoint("url = \"https://crm.test/hook?key=abc\"\nformat = \"v1\"");
        let r = render(&ep, &event("12&status=cancel#x"), 1).unwrap();
        assert_eq!(r.method, reqwest::Method::GET);
        assert_eq!(
            r.url.as_str(),
            "https://crm.test/hook?key=abc&bookid=12%26status%3Dcancel%23x&status=modify"
        );
        let pairs: Vec<(String, String)> = r.url.query_pairs().into_owned().collect();
        assert_eq!(pairs.len(), 3, "an id can never add a parameter");
        assert!(r.body.is_empty());
        let plain = endpoint("url = \"https://crm.test/hook\"\nformat = \"v1\"");
        assert_eq!(
            render(&plain, &event("7"), 1).unwrap().url.as_str(),
            "https://crm.test/hook?bookid=7&status=modify"
        );
    }

    #[test]
    fn v2_envelope_carries_everything() {
        let ep = endpoint("url = \"https://crm.test/hook\"");
        let r = render(&ep, &event("7"), 1).unwrap();
        assert_eq!(r.method, reqwest::Method::POST);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["id"], "evt_1");
        assert_eq!(v["type"], "booking.modified");
        assert_eq!(v["status"], "modify");
        assert_eq!(v["detected_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["booking_id"], "7");
        assert_eq!(v["sequence"], 9);
        assert_eq!(v["booking"]["guest"], "Zoë & \"Bob\"");
        assert_eq!(v["changes"][0]["path"], "/guest");
        assert_eq!(v["changes"][0]["old"], "Zoë");
    }

    #[test]
    fn v1_url_variables_are_filled_and_encoded_and_cannot_inject() {
        let ep = endpoint(
            "url = \"https://crm.test/p/[PROPERTYID]/notify?guest=[GUESTNAME]&room={{ booking/roomId }}&r=roomId[]\"\nformat = \"v1\"\nvariables = { ROOMNAME = \"/room/name\" }",
        );
        let mut ev = event("9");
        ev.booking =
            json!({"propertyId": "12/../admin", "lastName": "O'Brien & Co=x?#", "roomId": 3});
        let r = render(&ep, &ev, 1).unwrap();
        assert_eq!(r.url.host_str(), Some("crm.test"));
        assert_eq!(
            r.url.path(),
            "/p/12%2F..%2Fadmin/notify",
            "a value cannot change the path"
        );
        let pairs: Vec<(String, String)> = r.url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("guest".to_string(), "O'Brien & Co=x?#".to_string()),
                ("room".into(), "3".into()),
                ("r".into(), "roomId[]".into()),
                ("bookid".into(), "9".into()),
                ("status".into(), "modify".into()),
            ],
            "a value can never add a parameter"
        );
    }

    #[test]
    fn placeholders_in_the_host_are_refused() {
        let text = "[sources.s]\nurl = \"http://127.0.0.1:1/\"\nevery = \"1m\"\n[endpoints.e]\nurl = \"https://{{ booking/host }}.test/x\"\n";
        let e = Config::from_toml_str(text, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("endpoints.e.url") && e.contains("host"), "{e}");
        let text = text.replace("{{ booking/host }}.test", "crm.test/{{ nonsense.x }}");
        let e = Config::from_toml_str(&text, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("endpoints.e.url"), "{e}");
    }

    #[test]
    fn custom_bodies_are_json_encoded_whatever_the_values() {
        let ep = endpoint(
            "url = \"https://crm.test/h\"\nbody = { id = \"{{ event.id }}\", kind = \"{{ event.status }}\", guest = \"{{ booking/guest }}\", note = \"Guest: {{ booking/guest }}\", seq = \"{{ event.sequence }}\", try = \"{{ event.attempt }}\", changes = \"{{ event.changes }}\", missing = \"{{ booking/nope }}\" }",
        );
        let r = render(&ep, &event("7"), 3).unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["id"], "evt_1");
        assert_eq!(v["kind"], "modify");
        assert_eq!(v["guest"], "Zoë & \"Bob\"");
        assert_eq!(v["note"], "Guest: Zoë & \"Bob\"");
        assert_eq!(v["seq"], 9);
        assert_eq!(v["try"], 3);
        assert_eq!(v["changes"][0]["path"], "/guest");
        assert_eq!(v["missing"], Value::Null);
    }

    #[test]
    fn presets_are_selected_per_endpoint() {
        let ep = endpoint("url = \"https://crm.test/h\"\npreset = \"beds24\"");
        let v: Value = serde_json::from_slice(&render(&ep, &event("7"), 3).unwrap().body).unwrap();
        assert_eq!(v["retries"], 2);
        assert_eq!(v["booking"]["id"], "7");
        let ep = endpoint("url = \"https://crm.test/h\"\npreset = \"stayntouch\"");
        let v: Value = serde_json::from_slice(&render(&ep, &event("7"), 1).unwrap().body).unwrap();
        assert_eq!(v["event"], "edit_reservation");
        let bad = "[sources.s]\nurl = \"http://127.0.0.1:1/\"\nevery = \"1m\"\n[endpoints.e]\nurl = \"https://x.test/\"\npreset = \"acme\"\n";
        let e = Config::from_toml_str(bad, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("endpoints.e.preset") && e.contains("stayntouch"),
            "{e}"
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn settle_counts_attempts_and_bounds_history() {
        let ep = endpoint("url = \"https://crm.test/hook\"\nretry_schedule = [\"0s\", \"1s\"]");
        let mut d = Delivery::new("e", &event("1"));
        let a = Attempt {
            at_ms: 0,
            status: Some(500),
            error: None,
            latency_ms: 1,
            body: String::new(),
        };
        let fail = AttemptResult::Status {
            code: 500,
            retry_after: None,
        };
        d = settle(d, &ep, a.clone(), fail, 1000, 0.5);
        assert_eq!(
            (d.state, d.attempts, d.next_ms),
            (DeliveryState::Pending, 1, 2000)
        );
        d = settle(d, &ep, a.clone(), fail, 2000, 0.5);
        assert_eq!((d.state, d.attempts), (DeliveryState::Dead, 2));
        let mut d = Delivery::new("e", &event("1"));
        for _ in 0..(HISTORY_LIMIT + 5) {
            d.history.push(a.clone());
        }
        d = settle(
            d,
            &ep,
            a,
            AttemptResult::Status {
                code: 200,
                retry_after: None,
            },
            0,
            0.5,
        );
        assert_eq!(d.history.len(), HISTORY_LIMIT);
        assert_eq!(d.state, DeliveryState::Delivered);
    }
}
