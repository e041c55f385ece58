//! Simulated legacy booking API (the shape of Beds24 API v2 `GET /bookings`) for `pollhook demo` and the tests. This file is the core: the bookings, the [`Simulator`] handle, its HTTP server on 127.0.0.1 with the generic listing, and the optional random change generator.
//!
//! Besides `/api/v2/bookings` the same server answers as six real vendors, each route a view of
//! the one booking store in that vendor's published shape, auth and traps (see
//! `/work/shared/reference/booking-apis.md`, cited per route as "ref §n"):
//!
//! | route | vendor | auth |
//! |---|---|---|
//! | `GET /beds24/v2/authentication/token`, `GET /beds24/v2/bookings` | Beds24 API v2 | header `refreshToken` mints a `token` header value |
//! | `POST /beds24/json/getBookings` | Beds24 JSON API v1 | `authentication.apiKey`/`propKey` in the body |
//! | `GET /smoobu/api/reservations` | Smoobu | header `Api-Key` |
//! | `GET /checkfront/api/3.0/booking/index` | Checkfront | HTTP Basic key:secret |
//! | `POST /hostaway/v1/accessTokens`, `GET /hostaway/v1/reservations` | Hostaway | client credentials mint a Bearer token |
//! | `GET /rezgo/xml?i=search_bookings` | Rezgo | query `transcode` + `key` |
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the booking store, [`Simulator`], the router, `/api/v2/bookings`, the pace task |
//! | `faults.rs` | fault injection: failures, broken pages, throttling, soft failures, latency |
//! | `vendor.rs` | what the vendor routes share: request decoding, vendor state, credits, helpers |
//! | `beds24.rs`, `smoobu.rs`, `checkfront.rs`, `hostaway.rs`, `rezgo.rs` | one vendor each |

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use chrono::{DateTime, Days, NaiveDate, SecondsFormat, SubsecRound, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, DropGuard};

mod beds24;
mod checkfront;
mod faults;
mod hostaway;
mod rezgo;
mod smoobu;
#[cfg(test)]
mod test_support;
mod vendor;

pub use beds24::{BEDS24_REFRESH_TOKEN, BEDS24_V1_APIKEY, BEDS24_V1_PROPKEY};
pub use checkfront::{CHECKFRONT_KEY, CHECKFRONT_SECRET};
pub use hostaway::{HOSTAWAY_CLIENT_ID, HOSTAWAY_CLIENT_SECRET};
pub use rezgo::{REZGO_CID, REZGO_KEY};
pub use smoobu::SMOOBU_API_KEY;
pub use vendor::SimRequest;

use faults::PageFault;
use vendor::{InFlight, Route, VendorRequest, VendorState};

/// Path of the booking listing, relative to [`Simulator::base_url`].
const BOOKINGS_PATH: &str = "/api/v2/bookings";
/// The first booking id handed out; later ones count upward from it.
const FIRST_ID: u64 = 1001;
/// How many [`SimChange`]s a slow [`Simulator::on_change`] subscriber may fall behind before it lags.
const CHANGE_CAPACITY: usize = 1024;

const FIRST_NAMES: &[&str] = &[
    "Ada",
    "Alan",
    "Grace",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Ken",
    "Frances",
    "Dennis",
    "Radia",
    "Niklaus",
    "Hedy",
    "Tony",
    "Katherine",
    "John",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson", "Allen",
    "Ritchie", "Perlman", "Wirth", "Lamarr", "Hoare", "Johnson", "McCarthy",
];

/// How the simulator starts and whether it changes bookings by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Bookings per page when the request has no `perPage` (default 20).
    pub page_size: usize,
    /// Bookings present at start, ids 1001 upward (default 12).
    pub initial_bookings: usize,
    /// `None`: bookings change only through the mutators. `Some(d)`: every `d` one random change
    /// (create 40%, modify 40%, cancel 20%).
    pub pace: Option<Duration>,
    /// Seed of the random generator for names, dates, prices and the paced changes.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            page_size: 20,
            initial_bookings: 12,
            pace: None,
            seed: 0x5EED,
        }
    }
}

/// One change the simulator made, as told by [`Simulator::on_change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimChange {
    /// `"created"`, `"modified"`, `"cancelled"`, `"reactivated"` or `"removed"`.
    pub kind: &'static str,
    /// The booking's id.
    pub id: u64,
}

/// One booking as the simulator keeps it; [`Booking::to_json`] gives the Beds24-like wire shape.
#[derive(Debug, Clone)]
struct Booking {
    id: u64,
    property_id: u64,
    room_id: u64,
    status: &'static str,
    arrival: NaiveDate,
    departure: NaiveDate,
    num_adult: u32,
    num_child: u32,
    first_name: String,
    last_name: String,
    email: String,
    price: f64,
    booking_time: DateTime<Utc>,
    modified_time: DateTime<Utc>,
    /// When it was last cancelled (`None` unless the status is `"cancelled"`).
    cancel_time: Option<DateTime<Utc>>,
    /// Set by every real change after creation (not by [`Simulator::touch_booking`]): Smoobu's
    /// `"modification of booking"` and Hostaway's `"modified"`.
    modified_since_created: bool,
}

impl Booking {
    /// A random booking made at `booked_at`, arriving 3 to 120 days after `today`.
    fn random(rng: &mut StdRng, id: u64, booked_at: DateTime<Utc>, today: NaiveDate) -> Booking {
        let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
        let last = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
        let arrival = add_days(today, rng.random_range(3..=120));
        let nights: u64 = rng.random_range(1..=7);
        let rate: u32 = rng.random_range(16..=44) * 5;
        let status = match rng.random_range(0..100) {
            0..70 => "confirmed",
            70..90 => "new",
            _ => "request",
        };
        let num_child = if rng.random_bool(0.25) {
            rng.random_range(1..=2)
        } else {
            0
        };
        Booking {
            id,
            property_id: rng.random_range(201..=202),
            room_id: rng.random_range(3001..=3006),
            status,
            arrival,
            departure: add_days(arrival, nights),
            num_adult: rng.random_range(1..=4),
            num_child,
            first_name: first.to_string(),
            last_name: last.to_string(),
            email: format!("{}.{}@example.com", first, last).to_lowercase(),
            price: f64::from(rate) * nights as f64,
            booking_time: booked_at,
            modified_time: booked_at,
            cancel_time: None,
            modified_since_created: false,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "propertyId": self.property_id,
            "roomId": self.room_id,
            "status": self.status,
            "arrival": self.arrival.format("%Y-%m-%d").to_string(),
            "departure": self.departure.format("%Y-%m-%d").to_string(),
            "numAdult": self.num_adult,
            "numChild": self.num_child,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "email": self.email,
            "price": self.price,
            "bookingTime": rfc3339(self.booking_time),
            "modifiedTime": rfc3339(self.modified_time),
        })
    }

    /// Sets `modifiedTime` to now, and always moves it forward by at least one second, so two
    /// changes within the same second still show different timestamps.
    fn bump(&mut self) {
        self.modified_time = next_modified(self.modified_time);
    }

    fn nights(&self) -> i64 {
        (self.departure - self.arrival).num_days().max(1)
    }
}

fn now_secs() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// The `modifiedTime` a change made now gets: now, or one second after `previous` if now is not
/// later.
fn next_modified(previous: DateTime<Utc>) -> DateTime<Utc> {
    let now = now_secs();
    if now > previous {
        now
    } else {
        previous + TimeDelta::seconds(1)
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn add_days(d: NaiveDate, n: u64) -> NaiveDate {
    d.checked_add_days(Days::new(n)).unwrap_or(d)
}

/// Everything that changes, behind one lock that is never held across an `.await`.
struct SimState {
    bookings: BTreeMap<u64, Booking>,
    next_id: u64,
    rng: StdRng,
    requests: u64,
    fail_remaining: u32,
    fail_status: u16,
    corrupt_pages: Vec<u32>,
    drop_id_pages: Vec<u32>,
    /// [`Simulator::refuse_page`]: (page, status) answered once each.
    refused_pages: Vec<(u32, u16)>,
    /// The page number of every listing request served, in order.
    listed_pages: Vec<usize>,
    /// [`Simulator::set_today`]; `None`: the real UTC date.
    today: Option<NaiveDate>,
    vendor: VendorState,
}

impl SimState {
    fn today(&self) -> NaiveDate {
        self.today.unwrap_or_else(|| Utc::now().date_naive())
    }
}

/// What the server task, the pace task and the handles share.
struct Shared {
    state: Mutex<SimState>,
    base_url: String,
    page_size: usize,
    changes: broadcast::Sender<SimChange>,
    cancel: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, kind: &'static str, id: u64) {
        tracing::debug!(kind, id, "simulator change");
        // No subscriber is fine: nobody is watching.
        let _ = self.changes.send(SimChange { kind, id });
    }

    fn create(&self) -> u64 {
        let id = {
            let mut st = self.lock();
            let id = st.next_id;
            st.next_id += 1;
            let today = st.today();
            let booking = Booking::random(&mut st.rng, id, now_secs(), today);
            st.bookings.insert(id, booking);
            id
        };
        self.emit("created", id);
        id
    }

    /// Applies `f` to booking `id` if it exists and `f` says it changed something; bumps
    /// `modifiedTime` then, and tells `kind` (if any).
    fn change(
        &self,
        id: u64,
        kind: Option<&'static str>,
        f: impl FnOnce(&mut Booking, &mut StdRng) -> bool,
    ) -> bool {
        let changed = {
            let mut st = self.lock();
            let SimState { bookings, rng, .. } = &mut *st;
            match bookings.get_mut(&id) {
                Some(b) => {
                    let changed = f(b, rng);
                    if changed {
                        b.bump();
                        if b.status == "cancelled" && b.cancel_time.is_none() {
                            b.cancel_time = Some(b.modified_time);
                        }
                    }
                    changed
                }
                None => false,
            }
        };
        if changed && let Some(kind) = kind {
            self.emit(kind, id);
        }
        changed
    }

    fn modify(&self, id: u64) -> bool {
        self.change(id, Some("modified"), |b, rng| {
            match rng.random_range(0..3) {
                0 => {
                    let old = b.num_adult;
                    while b.num_adult == old {
                        b.num_adult = rng.random_range(1..=4);
                    }
                }
                1 => {
                    let per_night = (b.price / b.nights() as f64).round();
                    if b.nights() > 1 && rng.random_bool(0.5) {
                        b.departure = b.departure.pred_opt().unwrap_or(b.departure);
                        b.price -= per_night;
                    } else {
                        b.departure = add_days(b.departure, 1);
                        b.price += per_night;
                    }
                }
                _ => b.price += f64::from(rng.random_range(2..=12u32) * 5),
            }
            b.modified_since_created = true;
            true
        })
    }

    fn cancel(&self, id: u64) -> bool {
        self.change(id, Some("cancelled"), |b, _| {
            if b.status == "cancelled" {
                return false;
            }
            b.status = "cancelled";
            b.modified_since_created = true;
            true
        })
    }

    fn reactivate(&self, id: u64) -> bool {
        self.change(id, Some("reactivated"), |b, _| {
            if b.status != "cancelled" {
                return false;
            }
            b.status = "confirmed";
            b.cancel_time = None;
            b.modified_since_created = true;
            true
        })
    }

    fn touch(&self, id: u64) -> bool {
        self.change(id, None, |_, _| true)
    }

    fn set_guest_name(&self, id: u64, first: &str, last: &str) -> bool {
        self.change(id, Some("modified"), |b, _| {
            b.first_name = first.to_string();
            b.last_name = last.to_string();
            b.modified_since_created = true;
            true
        })
    }

    fn set_dates(&self, id: u64, arrival: NaiveDate, departure: NaiveDate) -> bool {
        if departure <= arrival {
            return false;
        }
        self.change(id, Some("modified"), |b, _| {
            b.arrival = arrival;
            b.departure = departure;
            b.modified_since_created = true;
            true
        })
    }

    fn remove(&self, id: u64) -> bool {
        let removed = self.lock().bookings.remove(&id).is_some();
        if removed {
            self.emit("removed", id);
        }
        removed
    }

    /// One paced random change: create 40%, modify 40%, cancel 20%; creates when nothing fits.
    fn pace_step(&self) {
        enum Op {
            Create,
            Modify(u64),
            Cancel(u64),
        }
        let op = {
            let mut st = self.lock();
            let SimState { bookings, rng, .. } = &mut *st;
            let roll = rng.random_range(0..100);
            let live: Vec<u64> = bookings
                .values()
                .filter(|b| b.status != "cancelled")
                .map(|b| b.id)
                .collect();
            let pick = |rng: &mut StdRng| live.get(rng.random_range(0..live.len().max(1))).copied();
            match roll {
                0..40 => Op::Create,
                40..80 => pick(rng).map_or(Op::Create, Op::Modify),
                _ => pick(rng).map_or(Op::Create, Op::Cancel),
            }
        };
        match op {
            Op::Create => {
                self.create();
            }
            Op::Modify(id) => {
                self.modify(id);
            }
            Op::Cancel(id) => {
                self.cancel(id);
            }
        }
    }
}

/// Handle on a running simulated booking API. Cheap to clone; the server and the pace task stop
/// on [`Simulator::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
    _stop_on_drop: Arc<DropGuard>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("base_url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Binds 127.0.0.1 on a free port, creates the initial bookings, serves the API in a spawned
    /// task and starts the pace task if `cfg.pace` is set.
    pub async fn start(cfg: SimConfig) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr: SocketAddr = listener.local_addr()?;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let now = now_secs();
        let today = now.date_naive();
        let mut bookings = BTreeMap::new();
        for i in 0..cfg.initial_bookings as u64 {
            let id = FIRST_ID + i;
            let booked_at = now - TimeDelta::minutes(rng.random_range(60..=72 * 60));
            bookings.insert(id, Booking::random(&mut rng, id, booked_at, today));
        }
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            state: Mutex::new(SimState {
                next_id: FIRST_ID + cfg.initial_bookings as u64,
                bookings,
                rng,
                requests: 0,
                fail_remaining: 0,
                fail_status: 500,
                corrupt_pages: Vec::new(),
                drop_id_pages: Vec::new(),
                refused_pages: Vec::new(),
                listed_pages: Vec::new(),
                today: None,
                vendor: VendorState::new(),
            }),
            base_url: format!("http://{addr}"),
            page_size: cfg.page_size.max(1),
            changes: broadcast::channel(CHANGE_CAPACITY).0,
            cancel: cancel.clone(),
        });

        let app = router(Arc::clone(&shared));
        let stop = cancel.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "simulator server stopped");
            }
        });

        if let Some(pace) = cfg.pace {
            let period = pace.max(Duration::from_millis(1));
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + period, period);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shared.cancel.cancelled() => break,
                        _ = tick.tick() => shared.pace_step(),
                    }
                }
            });
        }

        tracing::debug!(%addr, "simulator listening");
        Ok(Simulator {
            shared,
            _stop_on_drop: Arc::new(cancel.drop_guard()),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// `http://127.0.0.1:PORT/api/v2/bookings`, the listing a poller fetches.
    pub fn bookings_url(&self) -> String {
        format!("{}{BOOKINGS_PATH}", self.shared.base_url)
    }

    /// Stops the server (after in-flight requests) and the pace task.
    pub fn shutdown(&self) {
        self.shared.cancel.cancel();
    }

    /// Creates a random booking and returns its id (1001 upward).
    pub fn create_booking(&self) -> u64 {
        self.shared.create()
    }

    /// Changes the number of adults, the departure (and price with it) or the price, and bumps
    /// `modifiedTime`. False if there is no such booking.
    pub fn modify_booking(&self, id: u64) -> bool {
        self.shared.modify(id)
    }

    /// Sets the status to `"cancelled"` and bumps `modifiedTime`. False if there is no such
    /// booking or it is cancelled already.
    pub fn cancel_booking(&self, id: u64) -> bool {
        self.shared.cancel(id)
    }

    /// Sets a cancelled booking back to `"confirmed"` and bumps `modifiedTime`. False if there is
    /// no such booking or it is not cancelled.
    pub fn reactivate_booking(&self, id: u64) -> bool {
        self.shared.reactivate(id)
    }

    /// Deletes the booking: it disappears from the listing entirely. False if there is no such
    /// booking.
    pub fn remove_booking(&self, id: u64) -> bool {
        self.shared.remove(id)
    }

    /// Only bumps `modifiedTime` (a noisy timestamp, no real change; no [`SimChange`] is sent).
    /// False if there is no such booking.
    pub fn touch_booking(&self, id: u64) -> bool {
        self.shared.touch(id)
    }

    /// Sets the guest's first and last name and bumps `modifiedTime` (told as `"modified"`).
    /// False if there is no such booking.
    pub fn set_guest_name(&self, id: u64, first: &str, last: &str) -> bool {
        self.shared.set_guest_name(id, first, last)
    }

    /// The current bookings in wire shape, sorted by id (removed ones are absent).
    pub fn bookings(&self) -> Vec<Value> {
        self.shared
            .lock()
            .bookings
            .values()
            .map(Booking::to_json)
            .collect()
    }

    /// How many `GET /api/v2/bookings` listing requests were served, failed ones included
    /// (single-booking lookups are not counted).
    pub fn requests(&self) -> u64 {
        self.shared.lock().requests
    }

    /// The page number of every listing request with a valid page, in the order they came.
    pub fn listed_pages(&self) -> Vec<usize> {
        self.shared.lock().listed_pages.clone()
    }

    /// Subscribes to the changes made from now on (by the mutators and the pace task). A
    /// subscriber more than 1024 changes behind gets `RecvError::Lagged`.
    pub fn on_change(&self) -> broadcast::Receiver<SimChange> {
        self.shared.changes.subscribe()
    }
}

/// The vendor views: clock, URLs, tokens, credits and the request log (the fault knobs are in
/// `faults.rs`).
impl Simulator {
    /// Sets the simulator's "today": the date that vendor default windows (Beds24 v2 upcoming,
    /// Beds24 v1 arrival window) and new random bookings are relative to. `modifiedTime` stays
    /// real time.
    pub fn set_today(&self, date: NaiveDate) {
        self.shared.lock().today = Some(date);
    }

    /// The simulator's "today": the last [`Simulator::set_today`], else the real UTC date.
    pub fn today(&self) -> NaiveDate {
        self.shared.lock().today()
    }

    /// Moves a booking to new dates and bumps `modifiedTime` (told as `"modified"`). False if
    /// there is no such booking or `departure` is not after `arrival`.
    pub fn set_booking_dates(&self, id: u64, arrival: NaiveDate, departure: NaiveDate) -> bool {
        self.shared.set_dates(id, arrival, departure)
    }

    /// `http://127.0.0.1:PORT/beds24/v2`: the Beds24 API v2 base URL (`/authentication/token`,
    /// `/bookings`).
    pub fn beds24_v2_base_url(&self) -> String {
        format!("{}/beds24/v2", self.shared.base_url)
    }

    /// `http://127.0.0.1:PORT/beds24/json`: the Beds24 JSON API v1 base URL (`/getBookings`).
    pub fn beds24_v1_base_url(&self) -> String {
        format!("{}/beds24/json", self.shared.base_url)
    }

    /// `http://127.0.0.1:PORT/smoobu`: the Smoobu base URL (`/api/reservations`).
    pub fn smoobu_base_url(&self) -> String {
        format!("{}/smoobu", self.shared.base_url)
    }

    /// `http://127.0.0.1:PORT/checkfront`: the Checkfront host URL (`/api/3.0/booking/index`).
    pub fn checkfront_base_url(&self) -> String {
        format!("{}/checkfront", self.shared.base_url)
    }

    /// `http://127.0.0.1:PORT/hostaway/v1`: the Hostaway base URL (`/accessTokens`,
    /// `/reservations`).
    pub fn hostaway_base_url(&self) -> String {
        format!("{}/hostaway/v1", self.shared.base_url)
    }

    /// `http://127.0.0.1:PORT/rezgo/xml`: the Rezgo XML endpoint (everything is in the query).
    pub fn rezgo_url(&self) -> String {
        format!("{}{}", self.shared.base_url, rezgo::REZGO_PATH)
    }

    /// Lifetime in seconds of the Beds24 v2 tokens minted from now on (default 3600; 0 mints
    /// tokens that are already expired). Also the `expiresIn` the mint answers.
    pub fn set_token_ttl(&self, secs: u64) {
        self.shared.lock().vendor.token_ttl = secs;
    }

    /// How many Beds24 v2 tokens `GET /beds24/v2/authentication/token` has minted.
    pub fn tokens_minted(&self) -> u32 {
        self.shared.lock().vendor.beds24_minted
    }

    /// How many Hostaway access tokens `POST /hostaway/v1/accessTokens` has minted.
    pub fn hostaway_tokens_minted(&self) -> u32 {
        self.shared.lock().vendor.hostaway_minted
    }

    /// Invalidates every Beds24 v2 and Hostaway token minted so far: using one answers 401 until
    /// the client mints a new one.
    pub fn revoke_tokens(&self) {
        let mut st = self.shared.lock();
        st.vendor.beds24_tokens.clear();
        st.vendor.hostaway_tokens.clear();
    }

    /// Page size of the Beds24 v2 listing (default 100, as observed on the real API), and the
    /// largest page Smoobu, Checkfront and Hostaway serve whatever `pageSize`/`limit` asks for
    /// (their answers report the size actually used). 0 is taken as 1.
    pub fn set_vendor_page_size(&self, n: usize) {
        self.shared.lock().vendor.page_size = n.max(1);
    }

    /// Sets the Beds24 v2 credits left in the current five-minute window (starts at 100 and goes
    /// back to 100 when the window ends). Every Beds24 v2 request, token mints included, costs 1;
    /// with none left the request answers 429 with `Retry-After` set to the window's remaining
    /// seconds.
    pub fn set_credits(&self, n: i64) {
        self.shared.lock().vendor.credits = n;
    }

    /// The Beds24 v2 credits left in the current five-minute window.
    pub fn credits(&self) -> i64 {
        self.shared.lock().vendor.credits
    }

    /// Every request to a vendor route so far (token requests included), in arrival order.
    pub fn vendor_requests(&self) -> Vec<SimRequest> {
        self.shared.lock().vendor.log.clone()
    }

    /// The highest number of vendor requests that were being served at the same time.
    pub fn max_concurrent_requests(&self) -> usize {
        self.shared.lock().vendor.max_in_flight
    }
}

/// The generic listing and one-booking routes, every vendor route, and 404 for the rest.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(BOOKINGS_PATH, get(list_bookings))
        .route(&format!("{BOOKINGS_PATH}/{{id}}"), get(one_booking))
        .route(
            beds24::BEDS24_V2_TOKEN_PATH,
            vendor_route(Route::Beds24V2Token),
        )
        .route(
            beds24::BEDS24_V2_BOOKINGS_PATH,
            vendor_route(Route::Beds24V2Bookings),
        )
        .route(
            beds24::BEDS24_V1_PATH,
            vendor_route(Route::Beds24V1GetBookings),
        )
        .route(smoobu::SMOOBU_PATH, vendor_route(Route::SmoobuReservations))
        .route(
            checkfront::CHECKFRONT_PATH,
            vendor_route(Route::CheckfrontIndex),
        )
        .route(
            hostaway::HOSTAWAY_TOKEN_PATH,
            vendor_route(Route::HostawayToken),
        )
        .route(
            hostaway::HOSTAWAY_RESERVATIONS_PATH,
            vendor_route(Route::HostawayReservations),
        )
        .route(rezgo::REZGO_PATH, vendor_route(Route::Rezgo))
        .fallback(not_found)
        .with_state(shared)
}

/// The method router of one vendor route: decodes the request once for [`serve_vendor`].
fn vendor_route(route: Route) -> MethodRouter<Arc<Shared>> {
    let handler = move |State(shared): State<Arc<Shared>>,
                        method: Method,
                        uri: Uri,
                        headers: HeaderMap,
                        body: Bytes| {
        serve_vendor(
            shared,
            route,
            VendorRequest::new(method, &uri, headers, body),
        )
    };
    match route {
        Route::Beds24V1GetBookings | Route::HostawayToken => post(handler),
        _ => get(handler),
    }
}

/// Logs the request, counts it in flight, waits the latency, applies throttling, then answers as
/// the route's vendor.
async fn serve_vendor(shared: Arc<Shared>, route: Route, req: VendorRequest) -> Response {
    let (throttle, latency) = {
        let mut st = shared.lock();
        let v = &mut st.vendor;
        v.log.push(req.to_log());
        v.in_flight += 1;
        v.max_in_flight = v.max_in_flight.max(v.in_flight);
        let throttle = v.take_throttle();
        (throttle, v.latency)
    };
    let _in_flight = InFlight(Arc::clone(&shared));
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some((status, retry_after)) = throttle {
        return faults::throttled(route.vendor(), status, retry_after);
    }
    match route {
        Route::Beds24V2Token => beds24::beds24_v2_token(&shared, &req),
        Route::Beds24V2Bookings => beds24::beds24_v2_bookings(&shared, &req),
        Route::Beds24V1GetBookings => beds24::beds24_v1_get_bookings(&shared, &req),
        Route::SmoobuReservations => smoobu::smoobu_reservations(&shared, &req),
        Route::CheckfrontIndex => checkfront::checkfront_index(&shared, &req),
        Route::HostawayToken => hostaway::hostaway_token(&shared, &req),
        Route::HostawayReservations => hostaway::hostaway_reservations(&shared, &req),
        Route::Rezgo => rezgo::rezgo(&shared, &req),
    }
}

fn error_response(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({
        "success": false,
        "type": "error",
        "code": code.as_u16(),
        "error": message,
    });
    (code, axum::Json(body)).into_response()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses an optional positive integer parameter; `Err` names the offending parameter.
fn positive_param(params: &[(String, String)], name: &str) -> Result<Option<usize>, String> {
    match params.iter().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(format!("invalid {name}: {v:?}")),
        },
    }
}

/// `GET /api/v2/bookings?page=N&perPage=M`: one page of bookings sorted by id.
async fn list_bookings(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let params = Query::<Vec<(String, String)>>::try_from_uri(&uri).map(|q| q.0);

    let (data, next_exists, fault, page) = {
        let mut st = shared.lock();
        st.requests += 1;
        if let Some(status) = st.take_listing_failure() {
            drop(st);
            return error_response(status, "simulated failure");
        }
        let params = match &params {
            Ok(p) => p,
            Err(e) => return error_response(400, &e.to_string()),
        };
        let (page, per_page) = match (
            positive_param(params, "page"),
            positive_param(params, "perPage"),
        ) {
            (Ok(page), Ok(per_page)) => (page.unwrap_or(1), per_page.unwrap_or(shared.page_size)),
            (Err(e), _) | (_, Err(e)) => return error_response(400, &e),
        };
        st.listed_pages.push(page);
        if let Some(status) = st.take_refusal(page) {
            drop(st);
            return error_response(
                status,
                "this page link has expired; start again from page 1",
            );
        }
        let start = (page - 1).saturating_mul(per_page);
        let data: Vec<Value> = st
            .bookings
            .values()
            .skip(start)
            .take(per_page)
            .map(Booking::to_json)
            .collect();
        let next_exists = start.saturating_add(per_page) < st.bookings.len();
        let fault = st.take_page_fault(page, !data.is_empty());
        (data, next_exists, fault, page)
    };

    let mut data = data;
    if let PageFault::DropId = fault {
        faults::drop_first_id(&mut data);
    }
    let next_link = if next_exists {
        let mut query: Vec<String> = Vec::new();
        let mut page_set = false;
        for (k, v) in params.as_deref().unwrap_or_default() {
            if k == "page" {
                if !page_set {
                    query.push(format!("page={}", page + 1));
                    page_set = true;
                }
            } else {
                query.push(format!("{}={}", encode_component(k), encode_component(v)));
            }
        }
        if !page_set {
            query.push(format!("page={}", page + 1));
        }
        Value::String(format!(
            "{}{BOOKINGS_PATH}?{}",
            shared.base_url,
            query.join("&")
        ))
    } else {
        Value::Null
    };
    let body = json!({
        "success": true,
        "type": "booking",
        "count": data.len(),
        "pages": { "nextPageExists": next_exists, "nextPageLink": next_link },
        "data": data,
    });

    if let PageFault::Corrupt = fault {
        return faults::corrupted(&body);
    }
    axum::Json(body).into_response()
}

/// `GET /api/v2/bookings/{id}`: that booking, or `data: []` if there is none.
async fn one_booking(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.trim().parse::<u64>() else {
        return error_response(400, "invalid booking id");
    };
    let data: Vec<Value> = shared
        .lock()
        .bookings
        .get(&id)
        .map(Booking::to_json)
        .into_iter()
        .collect();
    axum::Json(json!({
        "success": true,
        "type": "booking",
        "count": data.len(),
        "data": data,
    }))
    .into_response()
}

async fn not_found() -> Response {
    error_response(404, "not found")
}

#[cfg(test)]
mod tests {
    use super::test_support::client;
    use super::test_support::listing::{find, get_json, ids, sim};
    use super::*;
    use std::collections::HashSet;

    #[tokio::test]
    async fn pagination_follows_absolute_next_links() {
        let sim = sim(25, 10).await;
        let c = client();
        let (status, p1) = get_json(&c, &sim.bookings_url()).await;
        assert_eq!(status, 200);
        assert_eq!(p1["success"], true);
        assert_eq!(p1["type"], "booking");
        assert_eq!(p1["count"], 10);
        assert_eq!(p1["pages"]["nextPageExists"], true);
        let link2 = p1["pages"]["nextPageLink"]
            .as_str()
            .expect("link")
            .to_string();
        assert_eq!(link2, format!("{}?page=2", sim.bookings_url()));
        assert!(link2.starts_with("http://127.0.0.1:"));

        let (_, p2) = get_json(&c, &link2).await;
        assert_eq!(p2["count"], 10);
        let link3 = p2["pages"]["nextPageLink"]
            .as_str()
            .expect("link")
            .to_string();
        assert_eq!(link3, format!("{}?page=3", sim.bookings_url()));

        let (_, p3) = get_json(&c, &link3).await;
        assert_eq!(p3["count"], 5);
        assert_eq!(p3["pages"]["nextPageExists"], false);
        assert!(p3["pages"]["nextPageLink"].is_null());

        let mut all = ids(&p1);
        all.extend(ids(&p2));
        all.extend(ids(&p3));
        assert_eq!(all, (1001..=1025).collect::<Vec<u64>>());

        let (status, p4) = get_json(&c, &format!("{}?page=4", sim.bookings_url())).await;
        assert_eq!(status, 200);
        assert_eq!(p4["count"], 0);
        assert_eq!(p4["data"], json!([]));
        assert_eq!(p4["pages"]["nextPageExists"], false);

        // perPage overrides page_size and is kept in the next link.
        let (_, big) = get_json(&c, &format!("{}?perPage=20", sim.bookings_url())).await;
        assert_eq!(big["count"], 20);
        let link = big["pages"]["nextPageLink"].as_str().expect("link");
        assert_eq!(link, format!("{}?perPage=20&page=2", sim.bookings_url()));
        let (_, rest) = get_json(&c, link).await;
        assert_eq!(ids(&rest), (1021..=1025).collect::<Vec<u64>>());

        let (status, bad) = get_json(&c, &format!("{}?page=0", sim.bookings_url())).await;
        assert_eq!(status, 400);
        assert_eq!(bad["success"], false);
        assert_eq!(sim.requests(), 7);
    }

    #[tokio::test]
    async fn booking_shape_is_beds24_like() {
        let sim = sim(1, 20).await;
        let (_, page) = get_json(&client(), &sim.bookings_url()).await;
        let b = &page["data"][0];
        for key in [
            "id",
            "propertyId",
            "roomId",
            "status",
            "arrival",
            "departure",
            "numAdult",
            "numChild",
            "firstName",
            "lastName",
            "email",
            "price",
            "bookingTime",
            "modifiedTime",
        ] {
            assert!(b.get(key).is_some(), "missing {key} in {b}");
        }
        assert_eq!(b["id"], 1001);
        assert!(b["price"].is_f64());
        let modified = b["modifiedTime"].as_str().expect("modifiedTime");
        assert!(
            modified.ends_with('Z') && modified.len() == 20,
            "{modified}"
        );
        assert!(DateTime::parse_from_rfc3339(modified).is_ok());
        let arrival = NaiveDate::parse_from_str(b["arrival"].as_str().expect("a"), "%Y-%m-%d");
        let departure = NaiveDate::parse_from_str(b["departure"].as_str().expect("d"), "%Y-%m-%d");
        assert!(arrival.expect("arrival") < departure.expect("departure"));
    }

    #[tokio::test]
    async fn same_seed_same_guests() {
        let a = sim(5, 20).await;
        let b = sim(5, 20).await;
        let names = |s: &Simulator| -> Vec<(Value, Value, Value)> {
            s.bookings()
                .into_iter()
                .map(|b| {
                    (
                        b["firstName"].clone(),
                        b["lastName"].clone(),
                        b["price"].clone(),
                    )
                })
                .collect()
        };
        assert_eq!(names(&a), names(&b));
    }

    #[tokio::test]
    async fn mutators_show_on_next_fetch() {
        let sim = sim(3, 20).await;
        let c = client();
        let mut changes = sim.on_change();
        let fetch = || {
            let c = c.clone();
            let url = sim.bookings_url();
            async move {
                let (_, page) = get_json(&c, &url).await;
                page["data"].as_array().cloned().unwrap_or_default()
            }
        };
        let by_id = |data: &[Value], id: u64| data.iter().find(|b| b["id"] == id).cloned();

        let id = sim.create_booking();
        assert_eq!(id, 1004);
        let data = fetch().await;
        let created = by_id(&data, id).expect("created booking listed");

        assert!(sim.modify_booking(id));
        let modified = by_id(&fetch().await, id).expect("listed");
        assert_ne!(modified, created);
        let significant = ["numAdult", "price", "departure"];
        assert!(significant.iter().any(|k| modified[k] != created[k]));
        assert!(modified["modifiedTime"].as_str() > created["modifiedTime"].as_str());

        let mut noisy = modified.clone();
        assert!(sim.touch_booking(id));
        let touched = by_id(&fetch().await, id).expect("listed");
        assert!(touched["modifiedTime"].as_str() > modified["modifiedTime"].as_str());
        noisy["modifiedTime"] = touched["modifiedTime"].clone();
        assert_eq!(touched, noisy, "touch changes only modifiedTime");

        assert!(sim.set_guest_name(id, "Zoë", "Ångström"));
        let renamed = by_id(&fetch().await, id).expect("listed");
        assert_eq!(renamed["firstName"], "Zoë");
        assert_eq!(renamed["lastName"], "Ångström");

        assert!(sim.cancel_booking(id));
        assert!(!sim.cancel_booking(id), "already cancelled");
        let cancelled = by_id(&fetch().await, id).expect("still listed");
        assert_eq!(cancelled["status"], "cancelled");
        assert!(cancelled["modifiedTime"].as_str() > renamed["modifiedTime"].as_str());

        assert!(sim.reactivate_booking(id));
        assert!(!sim.reactivate_booking(id), "not cancelled any more");
        assert_eq!(
            by_id(&fetch().await, id).expect("listed")["status"],
            "confirmed"
        );

        let (_, one) = get_json(&c, &format!("{}/{id}", sim.bookings_url())).await;
        assert_eq!(one["success"], true);
        assert_eq!(one["data"][0]["id"], id);

        assert!(sim.remove_booking(id));
        assert!(by_id(&fetch().await, id).is_none());
        assert!(find(&sim, id).is_none());
        let (_, gone) = get_json(&c, &format!("{}/{id}", sim.bookings_url())).await;
        assert_eq!(gone["data"], json!([]));
        let (status, _) = get_json(&c, &format!("{}/abc", sim.bookings_url())).await;
        assert_eq!(status, 400);

        for unknown in [
            sim.modify_booking(9999),
            sim.cancel_booking(9999),
            sim.reactivate_booking(9999),
            sim.remove_booking(9999),
            sim.touch_booking(9999),
            sim.set_guest_name(9999, "a", "b"),
        ] {
            assert!(!unknown);
        }

        let mut kinds = Vec::new();
        while let Ok(ch) = changes.try_recv() {
            assert_eq!(ch.id, id);
            kinds.push(ch.kind);
        }
        assert_eq!(
            kinds,
            [
                "created",
                "modified",
                "modified",
                "cancelled",
                "reactivated",
                "removed"
            ]
        );
    }

    #[tokio::test]
    async fn pace_makes_changes() {
        let sim = Simulator::start(SimConfig {
            pace: Some(Duration::from_millis(20)),
            initial_bookings: 5,
            ..SimConfig::default()
        })
        .await
        .expect("start");
        let mut changes = sim.on_change();
        let mut seen = Vec::new();
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            while seen.len() < 8 {
                match changes.recv().await {
                    Ok(ch) => seen.push(ch),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        })
        .await;
        assert!(got.is_ok(), "paced changes within 10s, saw {seen:?}");
        assert_eq!(seen.len(), 8);
        let known: HashSet<&str> = ["created", "modified", "cancelled"].into();
        assert!(seen.iter().all(|ch| known.contains(ch.kind)), "{seen:?}");
        for ch in seen.iter().filter(|ch| ch.kind == "created") {
            assert!(find(&sim, ch.id).is_some());
        }
        sim.shutdown();
    }

    #[tokio::test]
    async fn shutdown_and_drop_stop_the_server() {
        for explicit in [true, false] {
            let sim = sim(1, 20).await;
            let url = sim.bookings_url();
            let (status, _) = get_json(&client(), &url).await;
            assert_eq!(status, 200);
            if explicit {
                sim.shutdown();
            } else {
                drop(sim);
            }
            let refused = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    if client().get(&url).send().await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            assert!(refused.is_ok(), "server still answering after stop");
        }
    }
}

#[cfg(test)]
mod clock_tests {
    use super::test_support::vendors::{date, day, sim, stored};
    use super::vendor::ymd;
    use super::*;

    #[tokio::test]
    async fn clock_and_booking_dates() {
        let sim = sim(2).await;
        let real = Utc::now().date_naive();
        assert!((sim.today() - real).num_days().abs() <= 1);

        let future = NaiveDate::from_ymd_opt(2031, 3, 1).expect("date");
        sim.set_today(future);
        assert_eq!(sim.today(), future);
        let id = sim.create_booking();
        assert!(date(stored(&sim, id)["arrival"].as_str().expect("a")) >= day(future, 3));

        let mut changes = sim.on_change();
        let before = stored(&sim, 1001);
        let (a, d) = (day(real, 10), day(real, 12));
        assert!(sim.set_booking_dates(1001, a, d));
        let after = stored(&sim, 1001);
        assert_eq!(after["arrival"], ymd(a));
        assert_eq!(after["departure"], ymd(d));
        assert!(after["modifiedTime"].as_str() > before["modifiedTime"].as_str());
        assert_eq!(changes.try_recv().expect("change").kind, "modified");
        assert!(
            !sim.set_booking_dates(1001, d, a),
            "departure before arrival"
        );
        assert!(!sim.set_booking_dates(1001, a, a), "zero nights");
        assert!(!sim.set_booking_dates(9999, a, d));
    }
}
