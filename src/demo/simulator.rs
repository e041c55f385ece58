//! Simulated legacy booking API (the shape of Beds24 API v2 `GET /bookings`) for `pollhook demo` and the tests: owns the bookings, their HTTP server on 127.0.0.1, the optional random change generator and the fault injection.
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use base64::Engine as _;
use chrono::{
    DateTime, Days, Months, NaiveDate, NaiveDateTime, SecondsFormat, SubsecRound, TimeDelta, Utc,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, DropGuard};

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
                today: None,
                vendor: VendorState::new(),
            }),
            base_url: format!("http://{addr}"),
            page_size: cfg.page_size.max(1),
            changes: broadcast::channel(CHANGE_CAPACITY).0,
            cancel: cancel.clone(),
        });

        let app = Router::new()
            .route(BOOKINGS_PATH, get(list_bookings))
            .route(&format!("{BOOKINGS_PATH}/{{id}}"), get(one_booking))
            .route(BEDS24_V2_TOKEN_PATH, vendor_route(Route::Beds24V2Token))
            .route(
                BEDS24_V2_BOOKINGS_PATH,
                vendor_route(Route::Beds24V2Bookings),
            )
            .route(BEDS24_V1_PATH, vendor_route(Route::Beds24V1GetBookings))
            .route(SMOOBU_PATH, vendor_route(Route::SmoobuReservations))
            .route(CHECKFRONT_PATH, vendor_route(Route::CheckfrontIndex))
            .route(HOSTAWAY_TOKEN_PATH, vendor_route(Route::HostawayToken))
            .route(
                HOSTAWAY_RESERVATIONS_PATH,
                vendor_route(Route::HostawayReservations),
            )
            .route(REZGO_PATH, vendor_route(Route::Rezgo))
            .fallback(not_found)
            .with_state(Arc::clone(&shared));
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

    /// The next `n` listing requests answer HTTP `status` (500 if it is not a valid status) with
    /// an error JSON body.
    pub fn fail_next(&self, n: u32, status: u16) {
        let mut st = self.shared.lock();
        st.fail_remaining = n;
        st.fail_status = status;
    }

    /// The next request for listing page `page` (1-based) answers 200 with truncated, malformed
    /// JSON. Calling it twice for a page corrupts two answers.
    pub fn corrupt_page(&self, page: u32) {
        self.shared.lock().corrupt_pages.push(page);
    }

    /// The next request for listing page `page` (1-based) that has records answers with one
    /// record (the first) lacking its `id` field.
    pub fn drop_id_on_page(&self, page: u32) {
        self.shared.lock().drop_id_pages.push(page);
    }

    /// Subscribes to the changes made from now on (by the mutators and the pace task). A
    /// subscriber more than 1024 changes behind gets `RecvError::Lagged`.
    pub fn on_change(&self) -> broadcast::Receiver<SimChange> {
        self.shared.changes.subscribe()
    }
}

/// The vendor views: clock, credentials, tokens, credits, faults and the request log.
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
        format!("{}{REZGO_PATH}", self.shared.base_url)
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

    /// The next `n` requests to any vendor route (token routes included) answer the vendor's
    /// throttling status with `Retry-After: retry_after_secs`: 429, except Checkfront, whose
    /// docs say 503 (see [`Simulator::throttle_next_with_status`]).
    pub fn throttle_next(&self, n: u32, retry_after_secs: u32) {
        let mut st = self.shared.lock();
        st.vendor.throttle_remaining = n;
        st.vendor.throttle_retry_after = retry_after_secs;
        st.vendor.throttle_status = None;
    }

    /// Like [`Simulator::throttle_next`] but every vendor answers HTTP `status` (429 if it is not
    /// a valid status).
    pub fn throttle_next_with_status(&self, n: u32, retry_after_secs: u32, status: u16) {
        let mut st = self.shared.lock();
        st.vendor.throttle_remaining = n;
        st.vendor.throttle_retry_after = retry_after_secs;
        st.vendor.throttle_status =
            Some(StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS));
    }

    /// The next `n` authenticated listing requests (not token mints) answer HTTP 200 with the
    /// vendor's own failure body: Beds24 v2 `{"success":false,..}`, Beds24 v1 `{"error":..}`,
    /// Hostaway `{"status":"fail",..}`, Checkfront `request.status` `"ERROR"`, Smoobu a problem
    /// body without `bookings`, Rezgo `<response><error>`.
    pub fn fail_softly_next(&self, n: u32) {
        self.shared.lock().vendor.soft_fail_remaining = n;
    }

    /// Every vendor response waits `d` before it is sent (default zero), so overlapping requests
    /// show in [`Simulator::max_concurrent_requests`].
    pub fn set_latency(&self, d: Duration) {
        self.shared.lock().vendor.latency = d;
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

// ---------------------------------------------------------------------------------------------
// Vendor views of the booking store. Each route cites the section of
// /work/shared/reference/booking-apis.md ("ref §n") whose published shape and traps it models.
// ---------------------------------------------------------------------------------------------

/// Beds24 API v2 refresh token: send it as header `refreshToken` to
/// `GET /beds24/v2/authentication/token`.
pub const BEDS24_REFRESH_TOKEN: &str = "sim-refresh-token";
/// Beds24 JSON API v1 account key (`authentication.apiKey` in the body).
pub const BEDS24_V1_APIKEY: &str = "sim-v1-apikey";
/// Beds24 JSON API v1 property key (`authentication.propKey` in the body).
pub const BEDS24_V1_PROPKEY: &str = "sim-v1-propkey";
/// Smoobu API key (header `Api-Key`).
pub const SMOOBU_API_KEY: &str = "sim-smoobu-api-key";
/// Checkfront API key (HTTP Basic user name).
pub const CHECKFRONT_KEY: &str = "sim-checkfront-key";
/// Checkfront API secret (HTTP Basic password).
pub const CHECKFRONT_SECRET: &str = "sim-checkfront-secret";
/// Hostaway account id (`client_id` of the client-credentials grant).
pub const HOSTAWAY_CLIENT_ID: &str = "81234";
/// Hostaway API key (`client_secret` of the client-credentials grant).
pub const HOSTAWAY_CLIENT_SECRET: &str = "sim-hostaway-secret";
/// Rezgo company id (query `transcode`).
pub const REZGO_CID: &str = "9999";
/// Rezgo API key (query `key`).
pub const REZGO_KEY: &str = "SIM-REZGO-KEY";

const BEDS24_V2_TOKEN_PATH: &str = "/beds24/v2/authentication/token";
const BEDS24_V2_BOOKINGS_PATH: &str = "/beds24/v2/bookings";
const BEDS24_V1_PATH: &str = "/beds24/json/getBookings";
const SMOOBU_PATH: &str = "/smoobu/api/reservations";
const CHECKFRONT_PATH: &str = "/checkfront/api/3.0/booking/index";
const HOSTAWAY_TOKEN_PATH: &str = "/hostaway/v1/accessTokens";
const HOSTAWAY_RESERVATIONS_PATH: &str = "/hostaway/v1/reservations";
const REZGO_PATH: &str = "/rezgo/xml";

const DEFAULT_VENDOR_PAGE_SIZE: usize = 100;
const DEFAULT_TOKEN_TTL_SECS: u64 = 3600;
const BEDS24_CREDIT_LIMIT: i64 = 100;
const BEDS24_CREDIT_WINDOW: Duration = Duration::from_secs(300);
/// The `expires_in` Hostaway's documentation example answers (about six months).
const HOSTAWAY_EXPIRES_IN: u64 = 15_897_600;
/// Beds24 v1 `getBookings` returns at most this many bookings (ref §1.5).
const BEDS24_V1_MAX: usize = 1000;
const SMOOBU_DEFAULT_PAGE_SIZE: usize = 25;
/// Largest Smoobu `pageSize` and Hostaway `limit` (ref §4.3 says Hostaway `limit` <= 100; the
/// Smoobu cap is a guess).
const VENDOR_MAX_LIMIT: usize = 100;
const BEDS24_V2_STATUSES: [&str; 6] = [
    "confirmed",
    "request",
    "new",
    "cancelled",
    "black",
    "inquiry",
];

/// One request to a vendor route, as [`Simulator::vendor_requests`] tells it.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// The request. Its fields and lookups (`path`, `query_param(..)`, ...) are also reachable
    /// directly on `SimRequest`.
    pub request: super::Captured,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl std::ops::Deref for SimRequest {
    type Target = super::Captured;
    fn deref(&self) -> &super::Captured {
        &self.request
    }
}

/// Vendor-route state: tokens, credits, faults, the request log and the concurrency gauge.
struct VendorState {
    page_size: usize,
    token_ttl: u64,
    /// Beds24 v2 token -> when it expires.
    beds24_tokens: HashMap<String, std::time::Instant>,
    beds24_minted: u32,
    hostaway_tokens: HashSet<String>,
    hostaway_minted: u32,
    credits: i64,
    credit_window_start: std::time::Instant,
    throttle_remaining: u32,
    throttle_retry_after: u32,
    /// `None`: each vendor's own throttling status.
    throttle_status: Option<StatusCode>,
    soft_fail_remaining: u32,
    latency: Duration,
    log: Vec<SimRequest>,
    in_flight: usize,
    max_in_flight: usize,
}

/// What one Beds24 v2 request did to the credit budget.
#[derive(Debug, Clone, Copy)]
struct Credit {
    remaining: i64,
    resets_in: u64,
    blocked: bool,
}

impl VendorState {
    fn new() -> VendorState {
        VendorState {
            page_size: DEFAULT_VENDOR_PAGE_SIZE,
            token_ttl: DEFAULT_TOKEN_TTL_SECS,
            beds24_tokens: HashMap::new(),
            beds24_minted: 0,
            hostaway_tokens: HashSet::new(),
            hostaway_minted: 0,
            credits: BEDS24_CREDIT_LIMIT,
            credit_window_start: std::time::Instant::now(),
            throttle_remaining: 0,
            throttle_retry_after: 1,
            throttle_status: None,
            soft_fail_remaining: 0,
            latency: Duration::ZERO,
            log: Vec::new(),
            in_flight: 0,
            max_in_flight: 0,
        }
    }

    /// Charges one credit, after refilling the budget if its five-minute window is over.
    fn take_credit(&mut self) -> Credit {
        let now = std::time::Instant::now();
        let mut elapsed = now.saturating_duration_since(self.credit_window_start);
        if elapsed >= BEDS24_CREDIT_WINDOW {
            self.credit_window_start = now;
            self.credits = BEDS24_CREDIT_LIMIT;
            elapsed = Duration::ZERO;
        }
        let left = BEDS24_CREDIT_WINDOW - elapsed;
        let resets_in = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let blocked = self.credits <= 0;
        if !blocked {
            self.credits -= 1;
        }
        Credit {
            remaining: self.credits,
            resets_in,
            blocked,
        }
    }

    fn take_soft_fail(&mut self) -> bool {
        if self.soft_fail_remaining > 0 {
            self.soft_fail_remaining -= 1;
            true
        } else {
            false
        }
    }

    fn beds24_token_valid(&self, token: &str) -> bool {
        self.beds24_tokens
            .get(token)
            .is_some_and(|&expires| std::time::Instant::now() < expires)
    }

    /// The page size a paginated vendor serves when the client asks for `requested`.
    fn capped(&self, requested: usize) -> usize {
        requested.min(self.page_size).clamp(1, VENDOR_MAX_LIMIT)
    }
}

/// Keeps [`VendorState::in_flight`] right even when the client goes away mid-response.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.vendor.in_flight = st.vendor.in_flight.saturating_sub(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Beds24V2Token,
    Beds24V2Bookings,
    Beds24V1GetBookings,
    SmoobuReservations,
    CheckfrontIndex,
    HostawayToken,
    HostawayReservations,
    Rezgo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vendor {
    Beds24V2,
    Beds24V1,
    Smoobu,
    Checkfront,
    Hostaway,
    Rezgo,
}

impl Route {
    fn vendor(self) -> Vendor {
        match self {
            Route::Beds24V2Token | Route::Beds24V2Bookings => Vendor::Beds24V2,
            Route::Beds24V1GetBookings => Vendor::Beds24V1,
            Route::SmoobuReservations => Vendor::Smoobu,
            Route::CheckfrontIndex => Vendor::Checkfront,
            Route::HostawayToken | Route::HostawayReservations => Vendor::Hostaway,
            Route::Rezgo => Vendor::Rezgo,
        }
    }
}

/// One vendor request, decoded once.
struct VendorRequest {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
}

impl VendorRequest {
    fn new(method: Method, uri: &Uri, headers: HeaderMap, body: Bytes) -> VendorRequest {
        VendorRequest {
            method,
            path: uri.path().to_string(),
            query: super::Captured::query_of(uri),
            headers,
            body,
        }
    }

    fn to_log(&self) -> SimRequest {
        SimRequest {
            request: super::Captured {
                method: self.method.to_string(),
                path: self.path.clone(),
                query: self.query.clone(),
                headers: super::Captured::headers_of(&self.headers),
                body: self.body.to_vec(),
            },
            at: std::time::Instant::now(),
        }
    }

    /// All values of parameter `name`, accepting both `name=a&name=b` and PHP's `name[]=a`.
    fn params(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k.split_once('[').map_or(k.as_str(), |(base, _)| base) == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first non-empty value of parameter `name`.
    fn param(&self, name: &str) -> Option<&str> {
        self.params(name).into_iter().find(|v| !v.trim().is_empty())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A positive integer parameter, `default` if absent.
    fn positive(&self, name: &str, default: usize) -> Result<usize, String> {
        match self.param(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("invalid {name}: {v:?}")),
            },
        }
    }

    /// A non-negative integer parameter, `default` if absent.
    fn unsigned(&self, name: &str, default: usize) -> Result<usize, String> {
        match self.param(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("invalid {name}: {v:?}")),
        }
    }

    fn date(&self, name: &str) -> Result<Option<NaiveDate>, String> {
        self.param(name)
            .map(|v| parse_date(v).ok_or_else(|| format!("invalid {name}: {v:?} (YYYY-MM-DD)")))
            .transpose()
    }

    fn ids(&self, name: &str) -> Result<Vec<u64>, String> {
        self.params(name)
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter(|v| !v.trim().is_empty())
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("invalid {name}: {v:?}"))
            })
            .collect()
    }
}

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
        let throttle = if v.throttle_remaining > 0 {
            v.throttle_remaining -= 1;
            Some((v.throttle_status, v.throttle_retry_after))
        } else {
            None
        };
        (throttle, v.latency)
    };
    let _in_flight = InFlight(Arc::clone(&shared));
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some((status, retry_after)) = throttle {
        return throttled(route.vendor(), status, retry_after);
    }
    match route {
        Route::Beds24V2Token => beds24_v2_token(&shared, &req),
        Route::Beds24V2Bookings => beds24_v2_bookings(&shared, &req),
        Route::Beds24V1GetBookings => beds24_v1_get_bookings(&shared, &req),
        Route::SmoobuReservations => smoobu_reservations(&shared, &req),
        Route::CheckfrontIndex => checkfront_index(&shared, &req),
        Route::HostawayToken => hostaway_token(&shared, &req),
        Route::HostawayReservations => hostaway_reservations(&shared, &req),
        Route::Rezgo => rezgo(&shared, &req),
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn xml_response(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn rezgo_error(message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<response><error>{}</error></response>\n",
        xml_escape(message)
    )
}

/// Smoobu's error body (an API-problem object; the exact shape is a guess, ref §4.2 has none).
fn smoobu_problem(status: StatusCode, detail: &str) -> Value {
    json!({
        "status": status.as_u16(),
        "title": status.canonical_reason().unwrap_or("Error"),
        "detail": detail,
    })
}

/// The answer to a throttled request: the vendor's throttling status (429; Checkfront 503 as its
/// docs say) with `Retry-After` and the vendor's error body.
fn throttled(vendor: Vendor, status: Option<StatusCode>, retry_after: u32) -> Response {
    let status = status.unwrap_or(match vendor {
        // Checkfront/API docs/overview/getting_started.rst: "When the rate limit is exceeded
        // Checkfront will send an HTTP 503 status code" with "Retry-After" (ref §4.1 says 429).
        Vendor::Checkfront => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::TOO_MANY_REQUESTS,
    });
    let message = format!("Too many requests, retry after {retry_after} seconds");
    let mut resp = match vendor {
        Vendor::Beds24V2 => error_response(status.as_u16(), &message),
        Vendor::Beds24V1 => json_response(status, json!({ "error": message })),
        Vendor::Smoobu => json_response(status, smoobu_problem(status, &message)),
        Vendor::Checkfront => json_response(
            status,
            json!({ "error": { "id": "throttled", "title": "Rate limit exceeded", "details": message } }),
        ),
        // ref §4.3: over the limit Hostaway answers 429 with {"status":"fail","message":..}.
        Vendor::Hostaway => json_response(status, json!({ "status": "fail", "message": message })),
        Vendor::Rezgo => {
            let mut r = xml_response(rezgo_error(&message));
            *r.status_mut() = status;
            r
        }
    };
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}

/// HTTP 200 with the vendor's own failure body (the success-check trap, ref §6.2 item 8).
fn soft_failure(vendor: Vendor) -> Response {
    let message = "Simulated failure";
    match vendor {
        Vendor::Beds24V2 => json_response(
            StatusCode::OK,
            json!({ "success": false, "type": "error", "code": 500, "error": message }),
        ),
        Vendor::Beds24V1 => json_response(StatusCode::OK, json!({ "error": message })),
        Vendor::Smoobu => json_response(
            StatusCode::OK,
            smoobu_problem(StatusCode::INTERNAL_SERVER_ERROR, message),
        ),
        Vendor::Checkfront => json_response(
            StatusCode::OK,
            json!({
                "version": "3.0",
                "request": { "status": "ERROR", "resource": "booking", "id": "index", "method": "get" },
                "error": { "id": "simulated", "title": message },
            }),
        ),
        Vendor::Hostaway => json_response(
            StatusCode::OK,
            json!({ "status": "fail", "result": message }),
        ),
        Vendor::Rezgo => xml_response(rezgo_error(message)),
    }
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

/// `YYYYMMDD` (Beds24 v1), or `YYYY-MM-DD`.
fn parse_compact_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        let year = s.get(0..4)?.parse().ok()?;
        let month = s.get(4..6)?.parse().ok()?;
        let day = s.get(6..8)?.parse().ok()?;
        NaiveDate::from_ymd_opt(year, month, day)
    } else {
        parse_date(s)
    }
}

/// `<date> HH:MM:SS` in UTC, the date parsed by `date`; `date_only` also takes a bare date as
/// its midnight.
fn parse_datetime_with(
    s: &str,
    sep: char,
    date: fn(&str) -> Option<NaiveDate>,
    date_only: bool,
) -> Option<DateTime<Utc>> {
    let s = s.trim().trim_end_matches('Z');
    match s.split_once(sep) {
        Some((d, t)) => {
            let time = chrono::NaiveTime::parse_from_str(t.trim(), "%H:%M:%S").ok()?;
            Some(NaiveDateTime::new(date(d)?, time).and_utc())
        }
        None if date_only => Some(date(s)?.and_hms_opt(0, 0, 0)?.and_utc()),
        None => None,
    }
}

fn unix_of_date(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp())
}

fn ymd(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn ymd_hms(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn money(x: f64) -> String {
    format!("{x:.2}")
}

fn pages_for(total: usize, size: usize) -> usize {
    total.div_ceil(size.max(1))
}

/// The `[start, start + size)` slice of `items` (empty past the end).
fn page_of<T: Clone>(items: &[T], start: usize, size: usize) -> Vec<T> {
    items.iter().skip(start).take(size).cloned().collect()
}

/// `base?<query with page replaced by next>` (percent-encoded; `page` appended if absent).
fn next_page_link(base: &str, query: &[(String, String)], next: usize) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut page_set = false;
    for (k, v) in query {
        if k == "page" {
            if !page_set {
                parts.push(format!("page={next}"));
                page_set = true;
            }
        } else {
            parts.push(format!("{}={}", encode_component(k), encode_component(v)));
        }
    }
    if !page_set {
        parts.push(format!("page={next}"));
    }
    format!("{base}?{}", parts.join("&"))
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Text as CDATA; a `]]>` inside is split across two sections so it survives.
fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

// ----- Beds24 API v2 (ref §1.1-1.4) ----------------------------------------------------------

impl Booking {
    /// ref §1.4: the v2 booking object (the fields this simulator keeps).
    fn to_beds24_v2(&self) -> Value {
        let mut v = self.to_json();
        if let Value::Object(m) = &mut v {
            m.insert(
                "cancelTime".to_string(),
                self.cancel_time
                    .map_or(Value::Null, |t| Value::String(rfc3339(t))),
            );
        }
        v
    }
}

fn with_credit_headers(mut resp: Response, credit: Credit) -> Response {
    let h = resp.headers_mut();
    h.insert(
        HeaderName::from_static("x-fivemincreditlimit"),
        HeaderValue::from(BEDS24_CREDIT_LIMIT),
    );
    h.insert(
        HeaderName::from_static("x-fivemincreditlimit-remaining"),
        HeaderValue::from(credit.remaining),
    );
    h.insert(
        HeaderName::from_static("x-fivemincreditlimit-resetsin"),
        HeaderValue::from(credit.resets_in),
    );
    h.insert(
        HeaderName::from_static("x-requestcost"),
        HeaderValue::from(u16::from(!credit.blocked)),
    );
    resp
}

/// Charges a credit and answers `f`, or 429 when the five-minute budget is spent (ref §1.3: "when
/// credits run out the account is hard-blocked until the window resets"; the 429 is a guess).
fn with_credits(shared: &Shared, f: impl FnOnce(&mut SimState) -> Response) -> Response {
    let mut st = shared.lock();
    let credit = st.vendor.take_credit();
    let resp = if credit.blocked {
        let mut r = error_response(429, "Credit limit exceeded");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(credit.resets_in));
        r
    } else {
        f(&mut st)
    };
    drop(st);
    with_credit_headers(resp, credit)
}

/// `GET /beds24/v2/authentication/token` (ref §1.1): header `refreshToken` ->
/// `{"token", "expiresIn"}`. Costs a credit, like every v2 call.
fn beds24_v2_token(shared: &Shared, req: &VendorRequest) -> Response {
    with_credits(shared, |st| {
        if req.header("refreshToken") != Some(BEDS24_REFRESH_TOKEN) {
            // The message is a guess; the envelope is the spec's UnsuccessfulApiResponse.
            return error_response(401, "Refresh token is missing or invalid");
        }
        let token = format!("sim-b24-{:032x}", rand::random::<u128>());
        let ttl = st.vendor.token_ttl;
        let expires = std::time::Instant::now() + Duration::from_secs(ttl);
        st.vendor.beds24_tokens.insert(token.clone(), expires);
        st.vendor.beds24_minted += 1;
        json_response(StatusCode::OK, json!({ "token": token, "expiresIn": ttl }))
    })
}

/// The `GET /bookings` filters this simulator honours (ref §1.2).
struct Beds24V2Query {
    ids: Vec<u64>,
    statuses: Vec<String>,
    property_ids: Vec<u64>,
    room_ids: Vec<u64>,
    arrival: Option<NaiveDate>,
    arrival_from: Option<NaiveDate>,
    arrival_to: Option<NaiveDate>,
    departure: Option<NaiveDate>,
    departure_from: Option<NaiveDate>,
    departure_to: Option<NaiveDate>,
    modified_from: Option<DateTime<Utc>>,
    modified_to: Option<DateTime<Utc>>,
    booking_time_from: Option<DateTime<Utc>>,
    booking_time_to: Option<DateTime<Utc>>,
}

impl Beds24V2Query {
    fn parse(req: &VendorRequest) -> Result<Beds24V2Query, String> {
        let datetime = |name: &str| -> Result<Option<DateTime<Utc>>, String> {
            req.param(name)
                .map(|v| {
                    parse_datetime_with(v, 'T', parse_date, false)
                        .ok_or_else(|| format!("invalid {name}: {v:?} (YYYY-MM-DDTHH:MM:SS)"))
                })
                .transpose()
        };
        let statuses: Vec<String> = req
            .params("status")
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if let Some(bad) = statuses
            .iter()
            .find(|s| !BEDS24_V2_STATUSES.contains(&s.as_str()))
        {
            return Err(format!("invalid status: {bad:?}"));
        }
        Ok(Beds24V2Query {
            ids: req.ids("id")?,
            statuses,
            property_ids: req.ids("propertyId")?,
            room_ids: req.ids("roomId")?,
            arrival: req.date("arrival")?,
            arrival_from: req.date("arrivalFrom")?,
            arrival_to: req.date("arrivalTo")?,
            departure: req.date("departure")?,
            departure_from: req.date("departureFrom")?,
            departure_to: req.date("departureTo")?,
            modified_from: datetime("modifiedFrom")?,
            modified_to: datetime("modifiedTo")?,
            booking_time_from: datetime("bookingTimeFrom")?,
            booking_time_to: datetime("bookingTimeTo")?,
        })
    }

    fn has_stay_dates(&self) -> bool {
        self.arrival.is_some()
            || self.arrival_from.is_some()
            || self.arrival_to.is_some()
            || self.departure.is_some()
            || self.departure_from.is_some()
            || self.departure_to.is_some()
    }

    fn matches(&self, b: &Booking, today: NaiveDate) -> bool {
        // `id` is a by-id lookup: the booking whatever the window and status filters say (this
        // simulator's reading; the spec does not say how `id` combines with other filters).
        if !self.ids.is_empty() {
            return self.ids.contains(&b.id);
        }
        // "Will default to confirmed, request, new, black and inquiry if not specified".
        let status_ok = if self.statuses.is_empty() {
            b.status != "cancelled"
        } else {
            self.statuses.iter().any(|s| s == b.status)
        };
        // "By default only upcoming bookings will be returned": without a stay-date filter only
        // bookings departing today or later (modifiedFrom alone keeps this default).
        let window_ok = self.has_stay_dates() || b.departure >= today;
        let ge = |v: Option<NaiveDate>, x: NaiveDate| v.is_none_or(|v| x >= v);
        let le = |v: Option<NaiveDate>, x: NaiveDate| v.is_none_or(|v| x <= v);
        let eq = |v: Option<NaiveDate>, x: NaiveDate| v.is_none_or(|v| x == v);
        let tge = |v: Option<DateTime<Utc>>, x: DateTime<Utc>| v.is_none_or(|v| x >= v);
        let tle = |v: Option<DateTime<Utc>>, x: DateTime<Utc>| v.is_none_or(|v| x <= v);
        status_ok
            && window_ok
            && (self.property_ids.is_empty() || self.property_ids.contains(&b.property_id))
            && (self.room_ids.is_empty() || self.room_ids.contains(&b.room_id))
            && eq(self.arrival, b.arrival)
            && ge(self.arrival_from, b.arrival)
            && le(self.arrival_to, b.arrival)
            && eq(self.departure, b.departure)
            && ge(self.departure_from, b.departure)
            && le(self.departure_to, b.departure)
            && tge(self.modified_from, b.modified_time)
            && tle(self.modified_to, b.modified_time)
            && tge(self.booking_time_from, b.booking_time)
            && tle(self.booking_time_to, b.booking_time)
    }
}

/// `GET /beds24/v2/bookings` (ref §1.2-1.4): header `token`; default status filter hides
/// cancelled, default window hides bookings that departed; `page` pagination with an absolute
/// `nextPageLink`; credit headers (ref §1.3).
fn beds24_v2_bookings(shared: &Shared, req: &VendorRequest) -> Response {
    with_credits(shared, |st| {
        let authorised = req
            .header("token")
            .is_some_and(|t| st.vendor.beds24_token_valid(t));
        if !authorised {
            return error_response(401, "Token is missing or invalid");
        }
        if st.vendor.take_soft_fail() {
            return soft_failure(Vendor::Beds24V2);
        }
        let (query, page) = match (Beds24V2Query::parse(req), req.positive("page", 1)) {
            (Ok(q), Ok(p)) => (q, p),
            (Err(e), _) | (_, Err(e)) => return error_response(400, &e),
        };
        let today = st.today();
        let selected: Vec<&Booking> = st
            .bookings
            .values()
            .filter(|b| query.matches(b, today))
            .collect();
        let size = st.vendor.page_size;
        let start = (page - 1).saturating_mul(size);
        let data: Vec<Value> = page_of(&selected, start, size)
            .into_iter()
            .map(Booking::to_beds24_v2)
            .collect();
        let next_exists = start.saturating_add(size) < selected.len();
        let next_link = if next_exists {
            Value::String(next_page_link(
                &format!("{}{BEDS24_V2_BOOKINGS_PATH}", shared.base_url),
                &req.query,
                page + 1,
            ))
        } else {
            Value::Null
        };
        json_response(
            StatusCode::OK,
            json!({
                "success": true,
                "type": "booking",
                "count": data.len(),
                "pages": { "nextPageExists": next_exists, "nextPageLink": next_link },
                "data": data,
            }),
        )
    })
}

// ----- Beds24 JSON API v1 (ref §1.5) ----------------------------------------------------------

impl Booking {
    /// ref §1.5 status codes: 0 cancelled, 1 confirmed, 2 new, 3 request, 4 black, 5 inquiry.
    fn v1_status(&self) -> &'static str {
        match self.status {
            "cancelled" => "0",
            "new" => "2",
            "request" => "3",
            "black" => "4",
            "inquiry" => "5",
            _ => "1",
        }
    }

    /// ref §1.5: field names from the v1 setBooking list (the getBookings response names are
    /// UNVERIFIED there); values are strings as PHP-era Beds24 JSON sends them (a guess).
    fn to_beds24_v1(&self) -> Value {
        let last_night = self.departure.pred_opt().unwrap_or(self.departure);
        json!({
            "bookId": self.id.to_string(),
            "propId": self.property_id.to_string(),
            "roomId": self.room_id.to_string(),
            "unitId": "1",
            "status": self.v1_status(),
            "firstNight": ymd(self.arrival),
            "lastNight": ymd(last_night),
            "numAdult": self.num_adult.to_string(),
            "numChild": self.num_child.to_string(),
            "guestFirstName": self.first_name,
            "guestName": self.last_name,
            "guestEmail": self.email,
            "price": money(self.price),
            "bookingTime": ymd_hms(self.booking_time),
            "modified": ymd_hms(self.modified_time),
        })
    }
}

fn beds24_v1_error(message: &str, code: &str) -> Response {
    // ref §1.5 / §6.2 item 8: errors come with HTTP 200.
    json_response(
        StatusCode::OK,
        json!({ "error": message, "errorCode": code }),
    )
}

/// A v1 body field given as a string or a number, as a trimmed string.
fn v1_field(body: &Value, name: &str) -> Option<String> {
    match body.get(name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `POST /beds24/json/getBookings` (ref §1.5): auth in the body; numeric-string status;
/// cancelled bookings included as "0"; default window arrival yesterday..+1 year; errors with
/// HTTP 200; `limit`/`offset`, at most 1000.
fn beds24_v1_get_bookings(shared: &Shared, req: &VendorRequest) -> Response {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let auth = &body["authentication"];
    if auth["apiKey"].as_str() != Some(BEDS24_V1_APIKEY)
        || auth["propKey"].as_str() != Some(BEDS24_V1_PROPKEY)
    {
        return beds24_v1_error("Unauthorized", "1000");
    }
    let mut st = shared.lock();
    if st.vendor.take_soft_fail() {
        return soft_failure(Vendor::Beds24V1);
    }
    let date = |name: &str| -> Result<Option<NaiveDate>, String> {
        v1_field(&body, name)
            .map(|v| parse_compact_date(&v).ok_or_else(|| format!("Invalid {name} {v:?}")))
            .transpose()
    };
    let number = |name: &str| -> Result<Option<usize>, String> {
        v1_field(&body, name)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| format!("Invalid {name} {v:?}"))
            })
            .transpose()
    };
    let parsed = (|| -> Result<_, String> {
        let modified_since = v1_field(&body, "modifiedSince")
            .map(|v| {
                parse_datetime_with(&v, ' ', parse_compact_date, true)
                    .ok_or_else(|| format!("Invalid modifiedSince {v:?}"))
            })
            .transpose()?;
        Ok((
            date("arrivalFrom")?,
            date("arrivalTo")?,
            date("departureFrom")?,
            date("departureTo")?,
            modified_since,
            number("limit")?,
            number("offset")?,
        ))
    })();
    let (arrival_from, arrival_to, departure_from, departure_to, modified_since, limit, offset) =
        match parsed {
            Ok(p) => p,
            Err(e) => return beds24_v1_error(&e, "1001"),
        };
    let book_id = v1_field(&body, "bookId");
    let room_id = v1_field(&body, "roomId");
    let today = st.today();
    // "If not specified, arrivalFrom defaults to yesterday and arrivalTo defaults to plus one
    // year from the current day." A `bookId` lookup skips that window (a guess).
    let arrival_from = arrival_from.unwrap_or_else(|| today.pred_opt().unwrap_or(today));
    let arrival_to =
        arrival_to.unwrap_or_else(|| today.checked_add_months(Months::new(12)).unwrap_or(today));
    let matches = |b: &Booking| -> bool {
        if let Some(id) = &book_id {
            return b.id.to_string() == *id;
        }
        b.arrival >= arrival_from
            && b.arrival <= arrival_to
            && departure_from.is_none_or(|d| b.departure >= d)
            && departure_to.is_none_or(|d| b.departure <= d)
            && modified_since.is_none_or(|t| b.modified_time >= t)
            && room_id.as_ref().is_none_or(|r| b.room_id.to_string() == *r)
    };
    let data: Vec<Value> = st
        .bookings
        .values()
        .filter(|b| matches(b))
        .skip(offset.unwrap_or(0))
        .take(limit.unwrap_or(BEDS24_V1_MAX).min(BEDS24_V1_MAX))
        .map(Booking::to_beds24_v1)
        .collect();
    drop(st);
    json_response(StatusCode::OK, Value::Array(data))
}

// ----- Smoobu (ref §4.2) ----------------------------------------------------------------------

impl Booking {
    /// ref §4.2: `type` is "reservation", "modification of booking" or "cancellation".
    fn smoobu_type(&self) -> &'static str {
        if self.status == "cancelled" {
            "cancellation"
        } else if self.modified_since_created {
            "modification of booking"
        } else {
            "reservation"
        }
    }

    /// ref §4.2 booking item. `created-at`/`modifiedAt` ("YYYY-MM-DD HH:MM") are recalled from
    /// Smoobu's docs, not found in the reference (UNVERIFIED).
    fn to_smoobu(&self) -> Value {
        json!({
            "id": self.id,
            "reference-id": null,
            "type": self.smoobu_type(),
            "arrival": ymd(self.arrival),
            "departure": ymd(self.departure),
            "created-at": self.booking_time.format("%Y-%m-%d %H:%M").to_string(),
            "modifiedAt": self.modified_time.format("%Y-%m-%d %H:%M").to_string(),
            "apartment": { "id": self.room_id, "name": format!("Apartment {}", self.room_id) },
            "guest-name": format!("{} {}", self.first_name, self.last_name),
            "email": self.email,
            "adults": self.num_adult,
            "children": self.num_child,
            "price": self.price,
            "is-blocked-booking": false,
        })
    }
}

/// `GET /smoobu/api/reservations` (ref §4.2): header `Api-Key`; cancelled bookings omitted unless
/// `showCancellation=true`; `page`/`pageSize` (default 25) with `page_count`/`total_items`;
/// date filters `modifiedFrom`/`modifiedTo`, `arrivalFrom`/`arrivalTo`,
/// `departureFrom`/`departureTo` (YYYY-MM-DD); `excludeBlocked` accepted (the store has no
/// blocked periods).
fn smoobu_reservations(shared: &Shared, req: &VendorRequest) -> Response {
    if req.header("Api-Key") != Some(SMOOBU_API_KEY) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            smoobu_problem(
                StatusCode::UNAUTHORIZED,
                "The API key is missing or invalid",
            ),
        );
    }
    let mut st = shared.lock();
    if st.vendor.take_soft_fail() {
        return soft_failure(Vendor::Smoobu);
    }
    let parsed = (|| -> Result<_, String> {
        Ok((
            req.positive("page", 1)?,
            req.positive("pageSize", SMOOBU_DEFAULT_PAGE_SIZE)?,
            [
                req.date("modifiedFrom")?,
                req.date("modifiedTo")?,
                req.date("arrivalFrom")?,
                req.date("arrivalTo")?,
                req.date("departureFrom")?,
                req.date("departureTo")?,
            ],
            req.ids("apartmentId")?,
        ))
    })();
    let (page, page_size, [mod_from, mod_to, arr_from, arr_to, dep_from, dep_to], apartments) =
        match parsed {
            Ok(p) => p,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    smoobu_problem(StatusCode::BAD_REQUEST, &e),
                );
            }
        };
    let show_cancelled = req
        .param("showCancellation")
        .is_some_and(|v| matches!(v.trim(), "true" | "1"));
    let size = st.vendor.capped(page_size);
    let selected: Vec<&Booking> = st
        .bookings
        .values()
        .filter(|b| {
            let modified = b.modified_time.date_naive();
            (show_cancelled || b.status != "cancelled")
                && (apartments.is_empty() || apartments.contains(&b.room_id))
                && mod_from.is_none_or(|d| modified >= d)
                && mod_to.is_none_or(|d| modified <= d)
                && arr_from.is_none_or(|d| b.arrival >= d)
                && arr_to.is_none_or(|d| b.arrival <= d)
                && dep_from.is_none_or(|d| b.departure >= d)
                && dep_to.is_none_or(|d| b.departure <= d)
        })
        .collect();
    let bookings: Vec<Value> = page_of(&selected, (page - 1).saturating_mul(size), size)
        .into_iter()
        .map(Booking::to_smoobu)
        .collect();
    let body = json!({
        "pageSize": size,
        "page": page,
        // 0 when nothing matches (ceil(0 / size)); a client looping "until page == page_count"
        // must also stop on an empty page.
        "page_count": pages_for(selected.len(), size),
        "total_items": selected.len(),
        "bookings": bookings,
    });
    drop(st);
    json_response(StatusCode::OK, body)
}

// ----- Checkfront (ref §4.1) ------------------------------------------------------------------

impl Booking {
    /// ref §4.1 default statuses; `request` -> HOLD is this simulator's choice.
    fn checkfront_status(&self) -> (&'static str, &'static str) {
        match self.status {
            "cancelled" => ("STOP", "Cancelled"),
            "new" => ("PEND", "Pending"),
            "request" => ("HOLD", "Hold"),
            _ => ("PAID", "Paid"),
        }
    }

    /// ref §4.1 `booking/index` item (Checkfront/API docs/examples/response/booking-index.json).
    /// The item has no last-modified field in the published example, so none is sent.
    fn to_checkfront(&self) -> Value {
        let (status_id, status_name) = self.checkfront_status();
        let total = money(self.price);
        let day = |d: NaiveDate| d.format("%a %b %e, %Y").to_string();
        json!({
            "booking_id": self.id,
            "code": format!("CFPP-{}", self.id),
            "status_id": status_id,
            "status_name": status_name,
            "created_date": self.booking_time.timestamp(),
            "total": total,
            "tax_total": "0.00",
            "paid_total": if status_id == "PAID" { total.clone() } else { money(0.0) },
            "customer_name": format!("{} {}", self.first_name, self.last_name),
            "customer_email": self.email,
            "summary": format!("Room {}", self.room_id),
            "date_desc": format!("{} - {}", day(self.arrival), day(self.departure)),
        })
    }
}

/// `last_modified=>UNIX` / `<UNIX` (ref §4.1: "Query timestamps may be Date strings or unix
/// timestamps, and can be prefixed with '<' or '>'"). Bare values mean ">=" (a guess).
fn checkfront_time_filter(v: &str) -> Option<(char, i64)> {
    let v = v.trim();
    let (op, rest) = match v.chars().next()? {
        c @ ('<' | '>') => (c, v.get(1..)?.trim()),
        _ => ('=', v),
    };
    let at = match rest.parse::<i64>() {
        Ok(n) => n,
        Err(_) => unix_of_date(parse_date(rest)?),
    };
    Some((op, at))
}

fn basic_auth_ok(req: &VendorRequest, user: &str, password: &str) -> bool {
    let Some(encoded) = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let decoded = String::from_utf8_lossy(&decoded);
    decoded.split_once(':') == Some((user, password))
}

/// `GET /checkfront/api/3.0/booking/index` (ref §4.1): HTTP Basic key:secret; items are an
/// OBJECT keyed by booking id; an empty page has `"booking/index": []` (PHP's empty array, a
/// plausible quirk, not documented); `page`/`limit` (default 100) with `request.pages`;
/// `last_modified` (`>UNIX`/`<UNIX`, on the store's modifiedTime) and `status_id` filters.
fn checkfront_index(shared: &Shared, req: &VendorRequest) -> Response {
    if !basic_auth_ok(req, CHECKFRONT_KEY, CHECKFRONT_SECRET) {
        // Checkfront docs (overview/response.rst): on critical errors such as failed
        // credentials only error information comes back. The shape is a guess.
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({ "error": { "id": "unauthorized", "title": "Unauthorized", "details": "Invalid API key or secret" } }),
        );
    }
    let mut st = shared.lock();
    if st.vendor.take_soft_fail() {
        return soft_failure(Vendor::Checkfront);
    }
    let bad = |message: String| {
        json_response(
            StatusCode::BAD_REQUEST,
            json!({ "error": { "id": "invalid", "title": "Bad Request", "details": message } }),
        )
    };
    let (page, limit) = match (req.positive("page", 1), req.positive("limit", 100)) {
        (Ok(p), Ok(l)) => (p, l),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let last_modified = match req.param("last_modified") {
        None => None,
        Some(v) => match checkfront_time_filter(v) {
            Some(f) => Some(f),
            None => return bad(format!("invalid last_modified: {v:?}")),
        },
    };
    let status_id = req.param("status_id").map(str::trim);
    let limit = limit.min(st.vendor.page_size).max(1);
    let selected: Vec<&Booking> = st
        .bookings
        .values()
        .filter(|b| {
            let modified = b.modified_time.timestamp();
            let time_ok = match last_modified {
                None => true,
                Some(('>', t)) => modified > t,
                Some(('<', t)) => modified < t,
                Some((_, t)) => modified >= t,
            };
            time_ok && status_id.is_none_or(|s| b.checkfront_status().0.eq_ignore_ascii_case(s))
        })
        .collect();
    let rows = page_of(&selected, (page - 1).saturating_mul(limit), limit);
    let items = if rows.is_empty() {
        Value::Array(Vec::new())
    } else {
        Value::Object(
            rows.iter()
                .map(|b| (b.id.to_string(), b.to_checkfront()))
                .collect::<Map<String, Value>>(),
        )
    };
    let body = json!({
        "version": "3.0",
        "account_id": 1,
        "host_id": "sim.checkfront.com",
        "name": "pollhook simulator",
        "locale": { "id": "en_US", "lang": "en", "currency": "EUR" },
        "request": {
            "status": "OK",
            "resource": "booking",
            "id": "index",
            "method": "get",
            "records": rows.len(),
            "total_records": selected.len(),
            "limit": limit,
            "page": page,
            "pages": pages_for(selected.len(), limit),
            "time": 0.0003,
        },
        "booking/index": items,
    });
    drop(st);
    json_response(StatusCode::OK, body)
}

// ----- Hostaway (ref §4.3) --------------------------------------------------------------------

impl Booking {
    /// ref §4.3 (status enum from a third-party OpenAPI): "new", "modified" or "cancelled".
    fn hostaway_status(&self) -> &'static str {
        if self.status == "cancelled" {
            "cancelled"
        } else if self.modified_since_created {
            "modified"
        } else {
            "new"
        }
    }

    /// ref §4.3 reservation item (field names from Hostaway's public docs, not all verified).
    fn to_hostaway(&self) -> Value {
        json!({
            "id": self.id,
            "listingMapId": self.room_id,
            "status": self.hostaway_status(),
            "arrivalDate": ymd(self.arrival),
            "departureDate": ymd(self.departure),
            "nights": self.nights(),
            "guestName": format!("{} {}", self.first_name, self.last_name),
            "guestFirstName": self.first_name,
            "guestLastName": self.last_name,
            "guestEmail": self.email,
            "numberOfGuests": self.num_adult + self.num_child,
            "adults": self.num_adult,
            "children": self.num_child,
            "totalPrice": self.price,
            "reservationDate": ymd_hms(self.booking_time),
            "insertedOn": ymd_hms(self.booking_time),
            "updatedOn": ymd_hms(self.modified_time),
        })
    }
}

/// `POST /hostaway/v1/accessTokens` (ref §4.3): form body `grant_type=client_credentials`,
/// `client_id`, `client_secret`, `scope=general` -> `{"token_type":"Bearer","expires_in",
/// "access_token"}`.
fn hostaway_token(shared: &Shared, req: &VendorRequest) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect();
    let field = |k: &str| form.get(k).map(String::as_str);
    let ok = field("grant_type") == Some("client_credentials")
        && field("client_id") == Some(HOSTAWAY_CLIENT_ID)
        && field("client_secret") == Some(HOSTAWAY_CLIENT_SECRET)
        && field("scope").is_none_or(|s| s == "general");
    if !ok {
        // An OAuth2 server's answer; Hostaway's exact body is not in the reference (a guess).
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({
                "error": "invalid_client",
                "error_description": "Client authentication failed",
                "message": "Client authentication failed",
            }),
        );
    }
    let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = format!(
        "{}.{}.{}",
        b64.encode(r#"{"typ":"JWT","alg":"RS256"}"#),
        b64.encode(format!(
            r#"{{"aud":"{HOSTAWAY_CLIENT_ID}","jti":"{:x}"}}"#,
            rand::random::<u64>()
        )),
        b64.encode(rand::random::<u128>().to_be_bytes()),
    );
    let mut st = shared.lock();
    st.vendor.hostaway_tokens.insert(token.clone());
    st.vendor.hostaway_minted += 1;
    drop(st);
    json_response(
        StatusCode::OK,
        json!({ "token_type": "Bearer", "expires_in": HOSTAWAY_EXPIRES_IN, "access_token": token }),
    )
}

/// `GET /hostaway/v1/reservations` (ref §4.3): `Authorization: Bearer`; `limit` (<= 100) and
/// `offset` with `count`/`page`/`totalPages`; `latestActivityStart`/`latestActivityEnd`
/// (`YYYY-MM-DD HH:MM:SS` or a date) on `updatedOn` — the parameter names are UNVERIFIED per
/// the reference. Failures have `"status":"fail"`.
fn hostaway_reservations(shared: &Shared, req: &VendorRequest) -> Response {
    let mut st = shared.lock();
    let authorised = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| st.vendor.hostaway_tokens.contains(t.trim()));
    if !authorised {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({ "status": "fail", "result": "Unauthorized: the access token is missing, invalid or revoked" }),
        );
    }
    if st.vendor.take_soft_fail() {
        return soft_failure(Vendor::Hostaway);
    }
    let datetime = |name: &str| -> Result<Option<DateTime<Utc>>, String> {
        req.param(name)
            .map(|v| {
                parse_datetime_with(v, ' ', parse_date, true)
                    .ok_or_else(|| format!("invalid {name}: {v:?} (YYYY-MM-DD HH:MM:SS)"))
            })
            .transpose()
    };
    let cap = st.vendor.capped(usize::MAX);
    let parsed = (|| -> Result<_, String> {
        Ok((
            req.positive("limit", cap)?,
            req.unsigned("offset", 0)?,
            datetime("latestActivityStart")?,
            datetime("latestActivityEnd")?,
        ))
    })();
    let (limit, offset, from, to) = match parsed {
        Ok(p) => p,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({ "status": "fail", "result": e }),
            );
        }
    };
    let limit = st.vendor.capped(limit);
    let selected: Vec<&Booking> = st
        .bookings
        .values()
        .filter(|b| {
            from.is_none_or(|t| b.modified_time >= t) && to.is_none_or(|t| b.modified_time <= t)
        })
        .collect();
    let result: Vec<Value> = page_of(&selected, offset, limit)
        .into_iter()
        .map(Booking::to_hostaway)
        .collect();
    let body = json!({
        "status": "success",
        "result": result,
        "count": selected.len(),
        "limit": limit,
        "offset": offset,
        "page": offset / limit + 1,
        "totalPages": pages_for(selected.len(), limit),
    });
    drop(st);
    json_response(StatusCode::OK, body)
}

// ----- Rezgo (ref §3.1) -----------------------------------------------------------------------

impl Booking {
    /// ref §3.1: 1 received/confirmed, 2 pending, 3 cancelled.
    fn rezgo_status(&self) -> u8 {
        match self.status {
            "cancelled" => 3,
            "request" => 2,
            _ => 1,
        }
    }

    /// One `<booking>` element (ref §3.1 field definitions); guest fields in CDATA.
    fn to_rezgo(&self) -> String {
        let mut x = String::from("  <booking>\n");
        let mut field = |name: &str, value: String| {
            x.push_str(&format!("    <{name}>{value}</{name}>\n"));
        };
        field("trans_num", format!("SIM{}", self.id));
        field("item_id", self.room_id.to_string());
        field("tour_name", xml_escape(&format!("Room {}", self.room_id)));
        field("status", self.rezgo_status().to_string());
        field("date", unix_of_date(self.arrival).to_string());
        field("date_purchased", self.booking_time.timestamp().to_string());
        field("updated", self.modified_time.timestamp().to_string());
        field("adult_num", self.num_adult.to_string());
        field("child_num", self.num_child.to_string());
        field("overall_total", money(self.price));
        field("first_name", cdata(&self.first_name));
        field("last_name", cdata(&self.last_name));
        field("email_address", cdata(&self.email));
        x.push_str("  </booking>\n");
        x
    }
}

/// `GET /rezgo/xml` (ref §3.1): query `transcode` + `key`; `i=search_bookings` with
/// `t=date_purchased&q=<YYYY-MM-DD YYYY-MM-DD>` (purchase-date window, both days included) or
/// `q=<trans_num>`. `<response><total>N</total><booking>..</booking>..</response>`: one booking
/// is one element, none is `<total>0</total>` alone; errors are `<response><error>` with 200.
fn rezgo(shared: &Shared, req: &VendorRequest) -> Response {
    if req.param("transcode") != Some(REZGO_CID) || req.param("key") != Some(REZGO_KEY) {
        return xml_response(rezgo_error("Invalid transcode or API key"));
    }
    let mut st = shared.lock();
    if st.vendor.take_soft_fail() {
        return soft_failure(Vendor::Rezgo);
    }
    if req.param("i") != Some("search_bookings") {
        return xml_response(rezgo_error("Unknown or missing instruction (i)"));
    }
    let Some(q) = req.param("q").map(str::trim) else {
        return xml_response(rezgo_error("Missing search query (q)"));
    };
    let selected: Vec<&Booking> = match req.param("t").map(str::trim) {
        Some("date_purchased") => {
            let mut days = q.split_whitespace().map(parse_date);
            let (Some(Some(start)), Some(Some(end)), None) =
                (days.next(), days.next(), days.next())
            else {
                return xml_response(rezgo_error("q must be two dates: YYYY-MM-DD YYYY-MM-DD"));
            };
            st.bookings
                .values()
                .filter(|b| {
                    let bought = b.booking_time.date_naive();
                    bought >= start && bought <= end
                })
                .collect()
        }
        None => st
            .bookings
            .values()
            .filter(|b| format!("SIM{}", b.id).eq_ignore_ascii_case(q))
            .collect(),
        Some(other) => {
            return xml_response(rezgo_error(&format!("Unsupported search type t={other}")));
        }
    };
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<response>\n  <total>{}</total>\n",
        selected.len()
    );
    for b in &selected {
        xml.push_str(&b.to_rezgo());
    }
    xml.push_str("</response>\n");
    drop(st);
    xml_response(xml)
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

    enum Fault {
        None,
        Corrupt,
        DropId,
    }
    let (data, next_exists, fault, page) = {
        let mut st = shared.lock();
        st.requests += 1;
        if st.fail_remaining > 0 {
            st.fail_remaining -= 1;
            let status = st.fail_status;
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
        let start = (page - 1).saturating_mul(per_page);
        let data: Vec<Value> = st
            .bookings
            .values()
            .skip(start)
            .take(per_page)
            .map(Booking::to_json)
            .collect();
        let next_exists = start.saturating_add(per_page) < st.bookings.len();
        let page32 = u32::try_from(page).unwrap_or(u32::MAX);
        let fault = if let Some(i) = st.corrupt_pages.iter().position(|&p| p == page32) {
            st.corrupt_pages.remove(i);
            Fault::Corrupt
        } else if !data.is_empty()
            && let Some(i) = st.drop_id_pages.iter().position(|&p| p == page32)
        {
            st.drop_id_pages.remove(i);
            Fault::DropId
        } else {
            Fault::None
        };
        (data, next_exists, fault, page)
    };

    let mut data = data;
    if let Fault::DropId = fault
        && let Some(Value::Object(first)) = data.first_mut()
    {
        first.remove("id");
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

    if let Fault::Corrupt = fault {
        let text = body.to_string();
        let mut cut = text.len() / 2;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let truncated = text[..cut].to_string();
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            truncated,
        )
            .into_response();
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
    use super::*;
    use std::collections::HashSet;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    async fn get_json(c: &reqwest::Client, url: &str) -> (u16, Value) {
        let resp = c.get(url).send().await.expect("send");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("json body");
        (status, body)
    }

    fn ids(page: &Value) -> Vec<u64> {
        page["data"]
            .as_array()
            .expect("data array")
            .iter()
            .map(|b| b["id"].as_u64().expect("id"))
            .collect()
    }

    async fn sim(initial: usize, page_size: usize) -> Simulator {
        Simulator::start(SimConfig {
            page_size,
            initial_bookings: initial,
            pace: None,
            seed: 7,
        })
        .await
        .expect("start simulator")
    }

    fn find(sim: &Simulator, id: u64) -> Option<Value> {
        sim.bookings().into_iter().find(|b| b["id"] == id)
    }

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
    async fn fail_next_then_recovers() {
        let sim = sim(3, 20).await;
        let c = client();
        sim.fail_next(2, 503);
        for _ in 0..2 {
            let (status, body) = get_json(&c, &sim.bookings_url()).await;
            assert_eq!(status, 503);
            assert_eq!(
                body,
                json!({"success": false, "type": "error", "code": 503, "error": "simulated failure"})
            );
        }
        let (status, body) = get_json(&c, &sim.bookings_url()).await;
        assert_eq!(status, 200);
        assert_eq!(body["count"], 3);
        assert_eq!(sim.requests(), 3);
    }

    #[tokio::test]
    async fn corrupt_page_is_malformed_once() {
        let sim = sim(25, 10).await;
        let c = client();
        sim.corrupt_page(2);
        let (_, p1) = get_json(&c, &sim.bookings_url()).await;
        assert_eq!(p1["count"], 10);
        let url2 = format!("{}?page=2", sim.bookings_url());
        let resp = c.get(&url2).send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 200);
        let text = resp.text().await.expect("text");
        assert!(!text.is_empty());
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
        let (_, p2) = get_json(&c, &url2).await;
        assert_eq!(ids(&p2), (1011..=1020).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn drop_id_on_page_once() {
        let sim = sim(25, 10).await;
        let c = client();
        sim.drop_id_on_page(3);
        let url3 = format!("{}?page=3", sim.bookings_url());
        let (_, broken) = get_json(&c, &url3).await;
        let data = broken["data"].as_array().expect("data");
        assert_eq!(data.len(), 5);
        assert_eq!(data.iter().filter(|b| b.get("id").is_none()).count(), 1);
        assert!(data.iter().all(|b| b.get("firstName").is_some()));
        let (_, fixed) = get_json(&c, &url3).await;
        assert_eq!(ids(&fixed), (1021..=1025).collect::<Vec<u64>>());
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
mod vendor_tests {
    use super::*;
    use reqwest::RequestBuilder;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    async fn sim(initial: usize) -> Simulator {
        Simulator::start(SimConfig {
            page_size: 20,
            initial_bookings: initial,
            pace: None,
            seed: 11,
        })
        .await
        .expect("start simulator")
    }

    /// Status, headers and body text.
    async fn send(rb: RequestBuilder) -> (u16, HeaderMap, String) {
        let resp = rb.send().await.expect("send");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.expect("body"))
    }

    async fn send_json(rb: RequestBuilder) -> (u16, HeaderMap, Value) {
        let (status, headers, text) = send(rb).await;
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, headers, body)
    }

    fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("header {name} missing in {h:?}"))
    }

    fn ids_of(items: &Value) -> Vec<u64> {
        items
            .as_array()
            .expect("array")
            .iter()
            .map(|b| b["id"].as_u64().expect("id"))
            .collect()
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    fn day(d: NaiveDate, n: i64) -> NaiveDate {
        d + TimeDelta::days(n)
    }

    fn stored(sim: &Simulator, id: u64) -> Value {
        sim.bookings()
            .into_iter()
            .find(|b| b["id"] == id)
            .expect("booking in store")
    }

    async fn b24_token(c: &reqwest::Client, sim: &Simulator) -> String {
        let (status, _, body) = send_json(
            c.get(format!("{}/authentication/token", sim.beds24_v2_base_url()))
                .header("refreshToken", BEDS24_REFRESH_TOKEN),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().expect("token").to_string()
    }

    fn b24_list(c: &reqwest::Client, sim: &Simulator, token: &str) -> RequestBuilder {
        c.get(format!("{}/bookings", sim.beds24_v2_base_url()))
            .header("token", token)
    }

    fn b24_v1(c: &reqwest::Client, sim: &Simulator, mut body: Value) -> RequestBuilder {
        body["authentication"] =
            json!({ "apiKey": BEDS24_V1_APIKEY, "propKey": BEDS24_V1_PROPKEY });
        c.post(format!("{}/getBookings", sim.beds24_v1_base_url()))
            .json(&body)
    }

    fn smoobu(c: &reqwest::Client, sim: &Simulator) -> RequestBuilder {
        c.get(format!("{}/api/reservations", sim.smoobu_base_url()))
            .header("Api-Key", SMOOBU_API_KEY)
    }

    fn checkfront(c: &reqwest::Client, sim: &Simulator) -> RequestBuilder {
        c.get(format!(
            "{}/api/3.0/booking/index",
            sim.checkfront_base_url()
        ))
        .basic_auth(CHECKFRONT_KEY, Some(CHECKFRONT_SECRET))
    }

    fn hostaway_mint(c: &reqwest::Client, sim: &Simulator, secret: &str) -> RequestBuilder {
        let form = format!(
            "grant_type=client_credentials&client_id={HOSTAWAY_CLIENT_ID}&client_secret={}&scope=general",
            encode_component(secret)
        );
        c.post(format!("{}/accessTokens", sim.hostaway_base_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
    }

    async fn hostaway_token(c: &reqwest::Client, sim: &Simulator) -> String {
        let (status, _, body) = send_json(hostaway_mint(c, sim, HOSTAWAY_CLIENT_SECRET)).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    fn hostaway(c: &reqwest::Client, sim: &Simulator, token: &str) -> RequestBuilder {
        c.get(format!("{}/reservations", sim.hostaway_base_url()))
            .bearer_auth(token)
    }

    fn rezgo(c: &reqwest::Client, sim: &Simulator, extra: &[(&str, &str)]) -> RequestBuilder {
        c.get(sim.rezgo_url())
            .query(&[
                ("transcode", REZGO_CID),
                ("key", REZGO_KEY),
                ("i", "search_bookings"),
            ])
            .query(extra)
    }

    /// The text content of every `<name>` element (CDATA sections unwrapped, entities decoded).
    fn xml_values(xml: &str, name: &str) -> Vec<String> {
        let (open, close) = (format!("<{name}>"), format!("</{name}>"));
        let mut out = Vec::new();
        let mut rest = xml;
        while let Some(i) = rest.find(&open) {
            let after = &rest[i + open.len()..];
            let j = after.find(&close).expect("closing tag");
            let mut raw = &after[..j];
            let mut text = String::new();
            while !raw.is_empty() {
                if let Some(body) = raw.strip_prefix("<![CDATA[") {
                    let end = body.find("]]>").expect("CDATA end");
                    text.push_str(&body[..end]);
                    raw = &body[end + 3..];
                } else {
                    let end = raw.find("<![CDATA[").unwrap_or(raw.len());
                    text.push_str(
                        &raw[..end]
                            .replace("&lt;", "<")
                            .replace("&gt;", ">")
                            .replace("&quot;", "\"")
                            .replace("&apos;", "'")
                            .replace("&amp;", "&"),
                    );
                    raw = &raw[end..];
                }
            }
            out.push(text);
            rest = &after[j + close.len()..];
        }
        out
    }

    fn minute_ago(fmt: &str) -> String {
        (Utc::now() - TimeDelta::seconds(60))
            .format(fmt)
            .to_string()
    }

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

    #[tokio::test]
    async fn beds24_v2_tokens_auth_and_revoke() {
        let sim = sim(2).await;
        let c = client();
        let denied = json!({"success": false, "type": "error", "code": 401, "error": "Token is missing or invalid"});
        let url = format!("{}/bookings", sim.beds24_v2_base_url());
        let (status, _, body) = send_json(c.get(&url)).await;
        assert_eq!((status, &body), (401, &denied));
        let (status, _, body) = send_json(b24_list(&c, &sim, "made-up")).await;
        assert_eq!((status, &body), (401, &denied));

        let mint = format!("{}/authentication/token", sim.beds24_v2_base_url());
        let (status, _, body) = send_json(c.get(&mint).header("refreshToken", "wrong")).await;
        assert_eq!(status, 401);
        assert_eq!(body["success"], false);
        let (status, _, _) = send_json(c.get(&mint)).await;
        assert_eq!(status, 401);
        assert_eq!(sim.tokens_minted(), 0);

        let (status, _, body) =
            send_json(c.get(&mint).header("refreshToken", BEDS24_REFRESH_TOKEN)).await;
        assert_eq!(status, 200);
        assert_eq!(body["expiresIn"], 3600);
        let token = body["token"].as_str().expect("token").to_string();
        assert_eq!(sim.tokens_minted(), 1);
        let (status, _, body) = send_json(b24_list(&c, &sim, &token)).await;
        assert_eq!(status, 200);
        assert_eq!(body["success"], true);
        assert_eq!(body["count"], 2);

        sim.set_token_ttl(0);
        let (_, _, body) =
            send_json(c.get(&mint).header("refreshToken", BEDS24_REFRESH_TOKEN)).await;
        assert_eq!(body["expiresIn"], 0);
        let expired = body["token"].as_str().expect("token").to_string();
        let (status, _, body) = send_json(b24_list(&c, &sim, &expired)).await;
        assert_eq!((status, &body), (401, &denied));
        sim.set_token_ttl(3600);

        sim.revoke_tokens();
        let (status, _, _) = send_json(b24_list(&c, &sim, &token)).await;
        assert_eq!(status, 401, "revoked");
        let fresh = b24_token(&c, &sim).await;
        let (status, _, _) = send_json(b24_list(&c, &sim, &fresh)).await;
        assert_eq!(status, 200);
        assert_eq!(sim.tokens_minted(), 3);
    }

    #[tokio::test]
    async fn beds24_v2_hides_cancelled_unless_asked() {
        let sim = sim(4).await;
        let c = client();
        let token = b24_token(&c, &sim).await;
        assert!(sim.cancel_booking(1002));

        let (_, _, page) = send_json(b24_list(&c, &sim, &token)).await;
        assert_eq!(ids_of(&page["data"]), [1001, 1003, 1004]);
        assert!(
            page["data"]
                .as_array()
                .expect("data")
                .iter()
                .all(|b| b["cancelTime"].is_null())
        );
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
            "cancelTime",
        ] {
            assert!(page["data"][0].get(key).is_some(), "missing {key}");
        }

        let (_, _, only) =
            send_json(b24_list(&c, &sim, &token).query(&[("status", "cancelled")])).await;
        assert_eq!(ids_of(&only["data"]), [1002]);
        let cancelled = &only["data"][0];
        assert_eq!(cancelled["status"], "cancelled");
        assert_eq!(cancelled["cancelTime"], cancelled["modifiedTime"]);

        let expected = |wanted: &[&str]| -> Vec<u64> {
            sim.bookings()
                .iter()
                .filter(|b| wanted.iter().any(|w| b["status"] == *w))
                .map(|b| b["id"].as_u64().expect("id"))
                .collect()
        };
        let (_, _, repeated) = send_json(
            b24_list(&c, &sim, &token).query(&[("status", "confirmed"), ("status", "cancelled")]),
        )
        .await;
        assert_eq!(
            ids_of(&repeated["data"]),
            expected(&["confirmed", "cancelled"])
        );
        let (_, _, php) = send_json(
            b24_list(&c, &sim, &token).query(&[("status[]", "new"), ("status[]", "cancelled")]),
        )
        .await;
        assert_eq!(ids_of(&php["data"]), expected(&["new", "cancelled"]));

        let (status, _, bad) =
            send_json(b24_list(&c, &sim, &token).query(&[("status", "gone")])).await;
        assert_eq!(status, 400);
        assert_eq!(bad["success"], false);

        assert!(sim.reactivate_booking(1002));
        let (_, _, page) = send_json(b24_list(&c, &sim, &token)).await;
        assert_eq!(ids_of(&page["data"]), [1001, 1002, 1003, 1004]);
        assert!(page["data"][1]["cancelTime"].is_null());
    }

    #[tokio::test]
    async fn beds24_v2_default_window_and_id_lookup() {
        let sim = sim(3).await;
        let c = client();
        let token = b24_token(&c, &sim).await;
        let today = sim.today();
        assert!(sim.set_booking_dates(1001, day(today, 1), day(today, 3)));
        let list = |q: Vec<(&'static str, String)>| {
            let rb = b24_list(&c, &sim, &token).query(&q);
            async move { ids_of(&send_json(rb).await.2["data"]) }
        };
        assert_eq!(list(vec![]).await, [1001, 1002, 1003]);

        // Departure day is still "upcoming"; the day after it is not.
        sim.set_today(day(today, 3));
        assert_eq!(list(vec![]).await, [1001, 1002, 1003]);
        sim.set_today(day(today, 4));
        assert_eq!(list(vec![]).await, [1002, 1003], "left the default window");
        assert_eq!(
            list(vec![("departureFrom", ymd(today))]).await,
            [1001, 1002, 1003],
            "an explicit stay-date filter replaces the default window"
        );
        assert_eq!(list(vec![("arrivalTo", ymd(day(today, 2)))]).await, [1001]);
        assert_eq!(
            list(vec![("id", "1001".into())]).await,
            [1001],
            "by-id lookup"
        );

        assert!(sim.cancel_booking(1001));
        assert_eq!(
            list(vec![("id", "1001".into())]).await,
            [1001],
            "even cancelled"
        );
        assert_eq!(
            list(vec![("id[]", "1001".into()), ("id[]", "1003".into())]).await,
            [1001, 1003]
        );
        assert_eq!(list(vec![("id", "4242".into())]).await, Vec::<u64>::new());

        // modifiedFrom alone keeps the default window: 1001 changed but has departed.
        assert!(sim.touch_booking(1002));
        let since = minute_ago("%Y-%m-%dT%H:%M:%S");
        assert_eq!(list(vec![("modifiedFrom", since.clone())]).await, [1002]);
        assert_eq!(
            list(vec![
                ("modifiedFrom", since),
                ("status", "cancelled".into()),
                ("departureFrom", ymd(today))
            ])
            .await,
            [1001]
        );
    }

    #[tokio::test]
    async fn beds24_v2_pagination_and_modified_from() {
        let sim = sim(7).await;
        let c = client();
        let token = b24_token(&c, &sim).await;
        sim.set_vendor_page_size(3);
        let all: Vec<(&str, &str)> = BEDS24_V2_STATUSES.iter().map(|s| ("status", *s)).collect();
        let (status, _, p1) = send_json(b24_list(&c, &sim, &token).query(&all)).await;
        assert_eq!(status, 200);
        assert_eq!(
            (
                p1["success"].clone(),
                p1["type"].clone(),
                p1["count"].clone()
            ),
            (json!(true), json!("booking"), json!(3))
        );
        assert_eq!(p1["pages"]["nextPageExists"], true);
        let mut seen = ids_of(&p1["data"]);
        let mut link = p1["pages"]["nextPageLink"].as_str().map(str::to_string);
        let first_link = link.clone().expect("link");
        assert!(first_link.starts_with(&format!("{}/bookings?", sim.beds24_v2_base_url())));
        assert!(first_link.contains("status=cancelled") && first_link.ends_with("page=2"));
        let mut pages = 1;
        while let Some(next) = link {
            let (_, _, p) = send_json(c.get(&next).header("token", &token)).await;
            seen.extend(ids_of(&p["data"]));
            link = p["pages"]["nextPageLink"].as_str().map(str::to_string);
            if link.is_none() {
                assert_eq!(p["pages"]["nextPageExists"], false);
                assert!(p["pages"]["nextPageLink"].is_null());
            }
            pages += 1;
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, (1001..=1007).collect::<Vec<u64>>());

        let (_, _, beyond) = send_json(
            b24_list(&c, &sim, &token)
                .query(&all)
                .query(&[("page", "4")]),
        )
        .await;
        assert_eq!(beyond["count"], 0);
        assert_eq!(beyond["data"], json!([]));
        assert_eq!(beyond["pages"]["nextPageExists"], false);
        let (status, _, _) = send_json(b24_list(&c, &sim, &token).query(&[("page", "0")])).await;
        assert_eq!(status, 400);

        // Initial bookings were modified at least an hour ago.
        assert!(sim.touch_booking(1005));
        let since = minute_ago("%Y-%m-%dT%H:%M:%S");
        let (_, _, recent) = send_json(
            b24_list(&c, &sim, &token)
                .query(&all)
                .query(&[("modifiedFrom", since.as_str())]),
        )
        .await;
        assert_eq!(ids_of(&recent["data"]), [1005]);
        let (_, _, older) = send_json(
            b24_list(&c, &sim, &token)
                .query(&all)
                .query(&[("modifiedTo", since.as_str())]),
        )
        .await;
        assert_eq!(older["count"], 3, "first page of the six untouched");
        let (status, _, _) =
            send_json(b24_list(&c, &sim, &token).query(&[("modifiedFrom", "yesterday")])).await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn beds24_v2_credit_headers() {
        let sim = sim(1).await;
        let c = client();
        let token = b24_token(&c, &sim).await; // costs one credit too
        let (status, h, _) = send_json(b24_list(&c, &sim, &token)).await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "X-FiveMinCreditLimit-Remaining"), "98");
        assert_eq!(header(&h, "X-FiveMinCreditLimit"), "100");
        assert_eq!(header(&h, "X-RequestCost"), "1");
        let resets: u64 = header(&h, "X-FiveMinCreditLimit-ResetsIn")
            .parse()
            .expect("secs");
        assert!((1..=300).contains(&resets), "{resets}");
        let (_, h, _) = send_json(b24_list(&c, &sim, &token)).await;
        assert_eq!(header(&h, "X-FiveMinCreditLimit-Remaining"), "97");
        assert_eq!(sim.credits(), 97);

        sim.set_credits(1);
        let (status, h, _) = send_json(b24_list(&c, &sim, &token)).await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "X-FiveMinCreditLimit-Remaining"), "0");
        let (status, h, body) = send_json(b24_list(&c, &sim, &token)).await;
        assert_eq!(status, 429);
        assert_eq!(body["success"], false);
        assert_eq!(header(&h, "X-FiveMinCreditLimit-Remaining"), "0");
        assert_eq!(header(&h, "X-RequestCost"), "0");
        let retry: u64 = header(&h, "Retry-After").parse().expect("secs");
        assert!((1..=300).contains(&retry));
        sim.set_credits(50);
        let (status, h, _) = send_json(b24_list(&c, &sim, &token)).await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "X-FiveMinCreditLimit-Remaining"), "49");
    }

    #[tokio::test]
    async fn beds24_v1_shape_numeric_status_and_errors_with_200() {
        let sim = sim(3).await;
        let c = client();
        assert!(sim.cancel_booking(1002));
        let url = format!("{}/getBookings", sim.beds24_v1_base_url());
        let unauthorized = json!({"error": "Unauthorized", "errorCode": "1000"});
        for rb in [
            c.post(&url),
            c.post(&url).body("{not json"),
            c.post(&url)
                .json(&json!({"authentication": {"apiKey": BEDS24_V1_APIKEY, "propKey": "wrong"}})),
            c.post(&url).json(&json!({"arrivalFrom": "20200101"})),
        ] {
            let (status, _, body) = send_json(rb).await;
            assert_eq!(
                (status, &body),
                (200, &unauthorized),
                "HTTP 200 with an error body"
            );
        }

        let (status, _, body) = send_json(b24_v1(&c, &sim, json!({}))).await;
        assert_eq!(status, 200);
        let items = body.as_array().expect("a JSON array");
        assert_eq!(items.len(), 3, "cancelled bookings are included");
        for item in items {
            let id: u64 = item["bookId"]
                .as_str()
                .expect("bookId is a string")
                .parse()
                .expect("id");
            let b = stored(&sim, id);
            let want = match b["status"].as_str() {
                Some("cancelled") => "0",
                Some("confirmed") => "1",
                Some("new") => "2",
                Some("request") => "3",
                other => panic!("{other:?}"),
            };
            assert_eq!(item["status"], want);
            assert_eq!(item["firstNight"], b["arrival"]);
            let departure = date(b["departure"].as_str().expect("d"));
            assert_eq!(item["lastNight"], ymd(day(departure, -1)));
            assert_eq!(item["guestFirstName"], b["firstName"]);
            assert_eq!(item["guestName"], b["lastName"]);
            assert_eq!(item["guestEmail"], b["email"]);
            assert_eq!(item["numAdult"], b["numAdult"].to_string());
            assert_eq!(item["roomId"], b["roomId"].to_string());
            assert_eq!(item["propId"], b["propertyId"].to_string());
            assert_eq!(
                item["price"],
                format!("{:.2}", b["price"].as_f64().expect("p"))
            );
            let modified = item["modified"].as_str().expect("modified");
            assert!(NaiveDateTime::parse_from_str(modified, "%Y-%m-%d %H:%M:%S").is_ok());
        }
        assert_eq!(items[1]["status"], "0");

        let (status, _, body) =
            send_json(b24_v1(&c, &sim, json!({"arrivalFrom": "2024-13-45"}))).await;
        assert_eq!(status, 200);
        assert!(body["error"].is_string(), "{body}");
    }

    #[tokio::test]
    async fn beds24_v1_window_modified_since_and_paging() {
        let sim = sim(4).await;
        let c = client();
        let today = sim.today();
        let compact = |d: NaiveDate| d.format("%Y%m%d").to_string();
        let ids = |body: Value| -> Vec<u64> {
            body.as_array()
                .expect("array")
                .iter()
                .map(|b| b["bookId"].as_str().expect("bookId").parse().expect("id"))
                .collect()
        };
        assert!(sim.set_booking_dates(1001, day(today, -3), day(today, -1)));
        let (_, _, body) = send_json(b24_v1(&c, &sim, json!({}))).await;
        assert_eq!(
            ids(body),
            [1002, 1003, 1004],
            "default window: arrival from yesterday"
        );
        assert!(sim.set_booking_dates(1004, day(today, 400), day(today, 402)));
        let (_, _, body) = send_json(b24_v1(&c, &sim, json!({}))).await;
        assert_eq!(
            ids(body),
            [1002, 1003],
            "default window: arrival up to a year ahead"
        );
        let (_, _, body) = send_json(b24_v1(
            &c,
            &sim,
            json!({"arrivalFrom": compact(day(today, -10))}),
        ))
        .await;
        assert_eq!(ids(body), [1001, 1002, 1003]);
        let (_, _, body) = send_json(b24_v1(
            &c,
            &sim,
            json!({"arrivalFrom": compact(day(today, -10)), "arrivalTo": compact(day(today, 500))}),
        ))
        .await;
        assert_eq!(ids(body), [1001, 1002, 1003, 1004]);
        let (_, _, body) = send_json(b24_v1(&c, &sim, json!({"bookId": "1001"}))).await;
        assert_eq!(ids(body), [1001], "bookId finds it outside the window");
        let (_, _, body) = send_json(b24_v1(&c, &sim, json!({"bookId": 1004}))).await;
        assert_eq!(ids(body), [1004]);

        // modifiedSince keeps the default window: 1001 and 1004 changed but are outside it.
        assert!(sim.touch_booking(1003));
        let since = minute_ago("%Y%m%d %H:%M:%S");
        let (_, _, body) = send_json(b24_v1(&c, &sim, json!({"modifiedSince": since}))).await;
        assert_eq!(ids(body), [1003]);
        let (_, _, body) = send_json(b24_v1(
            &c,
            &sim,
            json!({"modifiedSince": since, "arrivalFrom": "20000101", "arrivalTo": "21000101"}),
        ))
        .await;
        assert_eq!(ids(body), [1001, 1003, 1004]);

        let wide =
            json!({"arrivalFrom": "20000101", "arrivalTo": "21000101", "limit": 2, "offset": 1});
        let (_, _, body) = send_json(b24_v1(&c, &sim, wide)).await;
        assert_eq!(ids(body), [1002, 1003]);
        let (_, _, body) = send_json(b24_v1(
            &c,
            &sim,
            json!({"arrivalFrom": "20000101", "arrivalTo": "21000101", "offset": "10"}),
        ))
        .await;
        assert_eq!(body, json!([]));
    }

    #[tokio::test]
    async fn smoobu_hides_cancellations_and_paginates() {
        let sim = sim(5).await;
        let c = client();
        assert!(sim.cancel_booking(1002));
        assert!(sim.modify_booking(1003));
        let url = format!("{}/api/reservations", sim.smoobu_base_url());
        for rb in [c.get(&url), c.get(&url).header("Api-Key", "wrong")] {
            let (status, _, body) = send_json(rb).await;
            assert_eq!(status, 401);
            assert_eq!(body["status"], 401);
            assert!(body.get("bookings").is_none());
        }

        let (status, _, body) = send_json(smoobu(&c, &sim)).await;
        assert_eq!(status, 200);
        assert_eq!(
            ids_of(&body["bookings"]),
            [1001, 1003, 1004, 1005],
            "cancellation hidden"
        );
        assert_eq!(
            (
                body["page"].clone(),
                body["page_count"].clone(),
                body["total_items"].clone()
            ),
            (json!(1), json!(1), json!(4))
        );
        assert_eq!(body["pageSize"], 25);
        let first = &body["bookings"][0];
        let b = stored(&sim, 1001);
        assert_eq!(first["type"], "reservation");
        assert_eq!(body["bookings"][1]["type"], "modification of booking");
        assert_eq!(first["arrival"], b["arrival"]);
        assert_eq!(first["departure"], b["departure"]);
        assert_eq!(first["apartment"]["id"], b["roomId"]);
        assert!(first["apartment"]["name"].is_string());
        assert_eq!(
            first["guest-name"],
            format!(
                "{} {}",
                b["firstName"].as_str().expect("f"),
                b["lastName"].as_str().expect("l")
            )
        );
        assert_eq!(first["email"], b["email"]);
        assert_eq!(first["adults"], b["numAdult"]);
        assert_eq!(first["children"], b["numChild"]);
        assert_eq!(first["price"], b["price"]);
        assert!(first["modifiedAt"].is_string());

        let (_, _, all) = send_json(smoobu(&c, &sim).query(&[("showCancellation", "true")])).await;
        assert_eq!(all["total_items"], 5);
        assert_eq!(all["bookings"][1]["type"], "cancellation");

        let paged = |page: &'static str| {
            smoobu(&c, &sim).query(&[
                ("showCancellation", "true"),
                ("pageSize", "2"),
                ("page", page),
            ])
        };
        let (_, _, p1) = send_json(paged("1")).await;
        assert_eq!(ids_of(&p1["bookings"]), [1001, 1002]);
        assert_eq!(
            (
                p1["page_count"].clone(),
                p1["total_items"].clone(),
                p1["pageSize"].clone()
            ),
            (json!(3), json!(5), json!(2))
        );
        let (_, _, p3) = send_json(paged("3")).await;
        assert_eq!(ids_of(&p3["bookings"]), [1005]);
        assert_eq!(p3["page"], 3);
        let (_, _, p4) = send_json(paged("4")).await;
        assert_eq!(p4["bookings"], json!([]));
        assert_eq!(p4["page"], 4);

        sim.set_vendor_page_size(2);
        let (_, _, capped) = send_json(smoobu(&c, &sim)).await;
        assert_eq!(capped["pageSize"], 2);
        assert_eq!(capped["page_count"], 2);
        sim.set_vendor_page_size(100);

        let today = Utc::now().date_naive();
        let (_, _, none) =
            send_json(smoobu(&c, &sim).query(&[("modifiedFrom", ymd(day(today, 1)))])).await;
        assert_eq!(
            (
                none["total_items"].clone(),
                none["page_count"].clone(),
                none["bookings"].clone()
            ),
            (json!(0), json!(0), json!([]))
        );
        let (_, _, recent) =
            send_json(smoobu(&c, &sim).query(&[("modifiedFrom", ymd(day(today, -4)))])).await;
        assert_eq!(recent["total_items"], 4);
        let (_, _, old) =
            send_json(smoobu(&c, &sim).query(&[("modifiedTo", ymd(day(today, -4)))])).await;
        assert_eq!(old["total_items"], 0);
        let (status, _, bad) = send_json(smoobu(&c, &sim).query(&[("pageSize", "0")])).await;
        assert_eq!(status, 400);
        assert_eq!(bad["status"], 400);
    }

    #[tokio::test]
    async fn checkfront_keyed_object_pages_and_empty_array() {
        let sim = sim(5).await;
        let c = client();
        assert!(sim.cancel_booking(1002));
        let url = format!("{}/api/3.0/booking/index", sim.checkfront_base_url());
        for rb in [
            c.get(&url),
            c.get(&url).basic_auth(CHECKFRONT_KEY, Some("wrong")),
        ] {
            let (status, _, body) = send_json(rb).await;
            assert_eq!(status, 401);
            assert!(body.get("booking/index").is_none());
        }

        let (status, _, body) = send_json(checkfront(&c, &sim)).await;
        assert_eq!(status, 200);
        assert_eq!(body["version"], "3.0");
        let req = &body["request"];
        assert_eq!(req["status"], "OK");
        assert_eq!(
            (
                req["records"].clone(),
                req["total_records"].clone(),
                req["limit"].clone(),
                req["page"].clone(),
                req["pages"].clone()
            ),
            (json!(5), json!(5), json!(100), json!(1), json!(1))
        );
        let index = body["booking/index"]
            .as_object()
            .expect("items keyed by id");
        assert_eq!(
            index.keys().cloned().collect::<Vec<_>>(),
            ["1001", "1002", "1003", "1004", "1005"]
        );
        assert_eq!(
            body.pointer("/booking~1index/1002/status_id"),
            Some(&json!("STOP"))
        );
        let item = &index["1001"];
        let b = stored(&sim, 1001);
        assert_eq!(item["booking_id"], 1001);
        assert_eq!(item["code"], "CFPP-1001");
        assert!(["PAID", "PEND", "HOLD"].contains(&item["status_id"].as_str().expect("s")));
        assert!(item["status_name"].is_string());
        assert_eq!(
            item["total"],
            format!("{:.2}", b["price"].as_f64().expect("p"))
        );
        assert_eq!(item["customer_email"], b["email"]);
        assert_eq!(
            item["created_date"].as_i64(),
            DateTime::parse_from_rfc3339(b["bookingTime"].as_str().expect("t"))
                .ok()
                .map(|t| t.timestamp())
        );
        assert!(item["date_desc"].is_string());

        let page = |p: &'static str| checkfront(&c, &sim).query(&[("limit", "2"), ("page", p)]);
        let (_, _, p1) = send_json(page("1")).await;
        assert_eq!(
            (
                p1["request"]["records"].clone(),
                p1["request"]["pages"].clone()
            ),
            (json!(2), json!(3))
        );
        let (_, _, p3) = send_json(page("3")).await;
        assert_eq!(p3["booking/index"].as_object().expect("object").len(), 1);
        let (_, _, p4) = send_json(page("4")).await;
        assert_eq!(
            p4["booking/index"],
            json!([]),
            "an empty page is an empty ARRAY"
        );
        assert_eq!(
            (
                p4["request"]["records"].clone(),
                p4["request"]["total_records"].clone()
            ),
            (json!(0), json!(5))
        );

        let (_, _, stop) = send_json(checkfront(&c, &sim).query(&[("status_id", "STOP")])).await;
        let keys: Vec<&String> = stop["booking/index"]
            .as_object()
            .expect("o")
            .keys()
            .collect();
        assert_eq!(keys, ["1002"]);
        let (_, _, void) = send_json(checkfront(&c, &sim).query(&[("status_id", "VOID")])).await;
        assert_eq!(void["booking/index"], json!([]));
        assert_eq!(void["request"]["pages"], 0);

        assert!(sim.touch_booking(1004));
        let mark = (Utc::now() - TimeDelta::seconds(60)).timestamp();
        let (_, _, newer) =
            send_json(checkfront(&c, &sim).query(&[("last_modified", format!(">{mark}"))])).await;
        let keys: Vec<&String> = newer["booking/index"]
            .as_object()
            .expect("o")
            .keys()
            .collect();
        assert_eq!(keys, ["1002", "1004"]);
        let (_, _, older) =
            send_json(checkfront(&c, &sim).query(&[("last_modified", format!("<{mark}"))])).await;
        let keys: Vec<&String> = older["booking/index"]
            .as_object()
            .expect("o")
            .keys()
            .collect();
        assert_eq!(keys, ["1001", "1003", "1005"]);
        let (status, _, _) =
            send_json(checkfront(&c, &sim).query(&[("last_modified", ">soon")])).await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn hostaway_tokens_offsets_and_statuses() {
        let sim = sim(5).await;
        let c = client();
        assert!(sim.modify_booking(1002));
        assert!(sim.cancel_booking(1003));
        let (status, _, body) = send_json(hostaway_mint(&c, &sim, "wrong")).await;
        assert_eq!(status, 401);
        assert!(body.get("access_token").is_none());
        let (status, _, _) = send_json(
            c.post(format!("{}/accessTokens", sim.hostaway_base_url()))
                .body(format!(
                    "client_id={HOSTAWAY_CLIENT_ID}&client_secret={HOSTAWAY_CLIENT_SECRET}"
                )),
        )
        .await;
        assert_eq!(status, 401, "grant_type is required");
        assert_eq!(sim.hostaway_tokens_minted(), 0);

        let (status, _, minted) = send_json(hostaway_mint(&c, &sim, HOSTAWAY_CLIENT_SECRET)).await;
        assert_eq!(status, 200);
        assert_eq!(minted["token_type"], "Bearer");
        assert_eq!(minted["expires_in"], 15_897_600);
        let token = minted["access_token"].as_str().expect("token").to_string();
        assert_eq!(token.split('.').count(), 3, "JWT-shaped");
        assert_eq!(sim.hostaway_tokens_minted(), 1);

        let url = format!("{}/reservations", sim.hostaway_base_url());
        for rb in [c.get(&url), c.get(&url).bearer_auth("forged")] {
            let (status, _, body) = send_json(rb).await;
            assert_eq!(status, 401);
            assert_eq!(body["status"], "fail");
        }

        let page = |offset: &'static str| {
            hostaway(&c, &sim, &token).query(&[("limit", "2"), ("offset", offset)])
        };
        let (status, _, p1) = send_json(page("0")).await;
        assert_eq!(status, 200);
        assert_eq!(p1["status"], "success");
        assert_eq!(ids_of(&p1["result"]), [1001, 1002]);
        assert_eq!(
            (
                p1["count"].clone(),
                p1["limit"].clone(),
                p1["offset"].clone(),
                p1["page"].clone(),
                p1["totalPages"].clone()
            ),
            (json!(5), json!(2), json!(0), json!(1), json!(3))
        );
        let statuses: Vec<&Value> = p1["result"]
            .as_array()
            .expect("a")
            .iter()
            .map(|r| &r["status"])
            .collect();
        assert_eq!(statuses, [&json!("new"), &json!("modified")]);
        let (_, _, p3) = send_json(page("4")).await;
        assert_eq!(ids_of(&p3["result"]), [1005]);
        assert_eq!(p3["page"], 3);
        let (_, _, past) = send_json(page("10")).await;
        assert_eq!(past["result"], json!([]));
        assert_eq!(past["count"], 5);

        let (_, _, all) = send_json(hostaway(&c, &sim, &token)).await;
        assert_eq!(all["limit"], 100);
        let item = &all["result"][2];
        let b = stored(&sim, 1003);
        assert_eq!(item["status"], "cancelled");
        assert_eq!(item["listingMapId"], b["roomId"]);
        assert_eq!(item["arrivalDate"], b["arrival"]);
        assert_eq!(item["departureDate"], b["departure"]);
        assert_eq!(item["totalPrice"], b["price"]);
        assert_eq!(
            item["numberOfGuests"].as_u64(),
            Some(b["numAdult"].as_u64().expect("a") + b["numChild"].as_u64().expect("c"))
        );
        let updated = item["updatedOn"].as_str().expect("updatedOn");
        assert!(NaiveDateTime::parse_from_str(updated, "%Y-%m-%d %H:%M:%S").is_ok());
        let (_, _, capped) = send_json(hostaway(&c, &sim, &token).query(&[("limit", "500")])).await;
        assert_eq!(capped["limit"], 100);

        let since = minute_ago("%Y-%m-%d %H:%M:%S");
        let (_, _, recent) =
            send_json(hostaway(&c, &sim, &token).query(&[("latestActivityStart", since.as_str())]))
                .await;
        assert_eq!(ids_of(&recent["result"]), [1002, 1003]);
        assert_eq!(recent["count"], 2);

        sim.revoke_tokens();
        let (status, _, _) = send_json(hostaway(&c, &sim, &token)).await;
        assert_eq!(status, 401);
        let fresh = hostaway_token(&c, &sim).await;
        let (status, _, _) = send_json(hostaway(&c, &sim, &fresh)).await;
        assert_eq!(status, 200);
        assert_eq!(sim.hostaway_tokens_minted(), 2);
    }

    #[tokio::test]
    async fn rezgo_single_many_none_and_cdata() {
        let sim = sim(3).await;
        let c = client();
        let (tricky_first, tricky_last) = ("Zoë ]]> <b>&amp;", "O'Brien & <Sons> ]]]]>");
        assert!(sim.set_guest_name(1001, tricky_first, tricky_last));
        assert!(sim.cancel_booking(1003));

        let (status, _, body) = send(c.get(sim.rezgo_url()).query(&[
            ("transcode", REZGO_CID),
            ("key", "wrong"),
            ("i", "search_bookings"),
            ("q", "SIM1001"),
        ]))
        .await;
        assert_eq!(status, 200);
        assert!(
            body.contains("<response><error>") && !body.contains("<total>"),
            "{body}"
        );

        let today = Utc::now().date_naive();
        let window = format!("{} {}", ymd(day(today, -4)), ymd(today));
        let (status, h, many) = send(rezgo(
            &c,
            &sim,
            &[("t", "date_purchased"), ("q", window.as_str())],
        ))
        .await;
        assert_eq!(status, 200);
        assert!(header(&h, "content-type").contains("xml"));
        assert_eq!(xml_values(&many, "total"), ["3"]);
        assert_eq!(many.matches("<booking>").count(), 3);
        assert_eq!(
            xml_values(&many, "trans_num"),
            ["SIM1001", "SIM1002", "SIM1003"]
        );
        assert_eq!(xml_values(&many, "status")[2], "3");
        assert_eq!(xml_values(&many, "first_name")[0], tricky_first);
        assert_eq!(xml_values(&many, "last_name")[0], tricky_last);
        assert!(many.contains("<![CDATA["));

        let (_, _, one) = send(rezgo(&c, &sim, &[("q", "SIM1002")])).await;
        assert_eq!(xml_values(&one, "total"), ["1"]);
        assert_eq!(one.matches("<booking>").count(), 1);
        let b = stored(&sim, 1002);
        assert_eq!(
            xml_values(&one, "email_address"),
            [b["email"].as_str().expect("e")]
        );
        assert_eq!(xml_values(&one, "adult_num"), [b["numAdult"].to_string()]);
        assert_eq!(
            xml_values(&one, "overall_total"),
            [format!("{:.2}", b["price"].as_f64().expect("p"))]
        );
        let arrival = date(b["arrival"].as_str().expect("a"));
        assert_eq!(
            xml_values(&one, "date"),
            [unix_of_date(arrival).to_string()]
        );
        let updated = DateTime::parse_from_rfc3339(b["modifiedTime"].as_str().expect("m"))
            .expect("rfc3339")
            .timestamp();
        assert_eq!(xml_values(&one, "updated"), [updated.to_string()]);

        let (_, _, none) = send(rezgo(&c, &sim, &[("q", "SIM9999")])).await;
        assert_eq!(
            none,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<response>\n  <total>0</total>\n</response>\n"
        );
        let later = format!("{} {}", ymd(day(today, 1)), ymd(day(today, 2)));
        let (_, _, none) = send(rezgo(
            &c,
            &sim,
            &[("t", "date_purchased"), ("q", later.as_str())],
        ))
        .await;
        assert_eq!(xml_values(&none, "total"), ["0"]);
        assert!(!none.contains("<booking>"));
        let (_, _, bad) = send(rezgo(
            &c,
            &sim,
            &[("t", "date_purchased"), ("q", "last week")],
        ))
        .await;
        assert!(bad.contains("<error>"), "{bad}");
    }

    #[tokio::test]
    async fn throttle_next_answers_429_with_retry_after_then_recovers() {
        let sim = sim(2).await;
        let c = client();
        sim.throttle_next(6, 7);
        let mint = c
            .get(format!("{}/authentication/token", sim.beds24_v2_base_url()))
            .header("refreshToken", BEDS24_REFRESH_TOKEN);
        let checks: Vec<(RequestBuilder, u16)> = vec![
            (mint, 429),
            (b24_v1(&c, &sim, json!({})), 429),
            (smoobu(&c, &sim), 429),
            (checkfront(&c, &sim), 503),
            (hostaway_mint(&c, &sim, HOSTAWAY_CLIENT_SECRET), 429),
            (rezgo(&c, &sim, &[("q", "SIM1001")]), 429),
        ];
        for (rb, want) in checks {
            let (status, h, body) = send(rb).await;
            assert_eq!(status, want, "{body}");
            assert_eq!(header(&h, "Retry-After"), "7");
        }
        assert_eq!(sim.tokens_minted() + sim.hostaway_tokens_minted(), 0);

        let token = b24_token(&c, &sim).await;
        let (status, _, _) = send_json(b24_list(&c, &sim, &token)).await;
        assert_eq!(status, 200);
        let (status, _, _) = send_json(checkfront(&c, &sim)).await;
        assert_eq!(status, 200);
        let (status, _, body) = send(rezgo(&c, &sim, &[("q", "SIM1001")])).await;
        assert_eq!(status, 200);
        assert!(body.contains("<total>1</total>"));

        sim.throttle_next_with_status(1, 2, 429);
        let (status, h, _) = send(checkfront(&c, &sim)).await;
        assert_eq!((status, header(&h, "Retry-After")), (429, "2"));
        let (status, _, _) = send(checkfront(&c, &sim)).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn fail_softly_next_answers_200_with_the_vendor_failure_body() {
        let sim = sim(2).await;
        let c = client();
        let b24 = b24_token(&c, &sim).await;
        sim.fail_softly_next(1);
        let ha = hostaway_token(&c, &sim).await; // token mints are never soft-failed
        let (_, _, body) = send_json(b24_list(&c, &sim, &b24)).await;
        assert_eq!(body["success"], false);
        sim.fail_softly_next(6);
        let (status, _, body) = send_json(hostaway(&c, &sim, &ha)).await;
        assert_eq!((status, body["status"].clone()), (200, json!("fail")));
        assert!(body["result"].is_string());
        let (status, _, body) = send_json(b24_list(&c, &sim, &b24)).await;
        assert_eq!(
            (status, body["success"].clone(), body["type"].clone()),
            (200, json!(false), json!("error"))
        );
        let (status, _, body) = send_json(b24_v1(&c, &sim, json!({}))).await;
        assert_eq!(status, 200);
        assert!(body["error"].is_string());
        let (status, _, body) = send_json(checkfront(&c, &sim)).await;
        assert_eq!(
            (status, body["request"]["status"].clone()),
            (200, json!("ERROR"))
        );
        assert!(body.get("booking/index").is_none());
        let (status, _, body) = send_json(smoobu(&c, &sim)).await;
        assert_eq!(status, 200);
        assert!(body.get("bookings").is_none());
        let (status, _, body) = send(rezgo(&c, &sim, &[("q", "SIM1001")])).await;
        assert_eq!(status, 200);
        assert!(body.contains("<error>"));

        let (_, _, body) = send_json(hostaway(&c, &sim, &ha)).await;
        assert_eq!(body["status"], "success");
        let (_, _, body) = send_json(b24_v1(&c, &sim, json!({}))).await;
        assert!(body.is_array());
    }

    #[tokio::test]
    async fn request_log_latency_and_concurrency() {
        let sim = sim(1).await;
        let c = client();
        sim.set_latency(Duration::from_millis(150));
        let started = std::time::Instant::now();
        let _ = hostaway_token(&c, &sim).await;
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(sim.max_concurrent_requests(), 1);

        let get = |page: &'static str| send(smoobu(&c, &sim).query(&[("page", page)]));
        let (a, b, d) = tokio::join!(get("1"), get("2"), get("3"));
        assert_eq!((a.0, b.0, d.0), (200, 200, 200));
        assert_eq!(sim.max_concurrent_requests(), 3);

        let log = sim.vendor_requests();
        assert_eq!(log.len(), 4);
        let mint = &log[0];
        assert_eq!(
            (mint.method.as_str(), mint.path.as_str()),
            ("POST", "/hostaway/v1/accessTokens")
        );
        let body = String::from_utf8_lossy(&mint.body);
        assert!(body.contains("grant_type=client_credentials"), "{body}");
        assert_eq!(
            mint.header("Content-Type"),
            Some("application/x-www-form-urlencoded")
        );
        let mut pages: Vec<&str> = Vec::new();
        for r in &log[1..] {
            assert_eq!(
                (r.method.as_str(), r.path.as_str()),
                ("GET", "/smoobu/api/reservations")
            );
            assert_eq!(r.header("api-key"), Some(SMOOBU_API_KEY));
            assert!(r.body.is_empty());
            assert!(r.at >= mint.at);
            pages.push(r.query_param("page").expect("page"));
        }
        pages.sort_unstable();
        assert_eq!(pages, ["1", "2", "3"]);

        // One at a time stays at one.
        let serial = sim_with_latency().await;
        for _ in 0..3 {
            let (status, _, _) = send(smoobu(&c, &serial)).await;
            assert_eq!(status, 200);
        }
        assert_eq!(serial.max_concurrent_requests(), 1);
        assert_eq!(serial.vendor_requests().len(), 3);
    }

    async fn sim_with_latency() -> Simulator {
        let s = sim(1).await;
        s.set_latency(Duration::from_millis(30));
        s
    }

    #[tokio::test]
    async fn every_vendor_is_a_view_of_the_same_store() {
        let sim = sim(0).await;
        let c = client();
        let id = sim.create_booking();
        assert!(sim.set_guest_name(id, "Ada", "Lovelace"));
        let b = stored(&sim, id);
        let b24 = b24_token(&c, &sim).await;
        let ha = hostaway_token(&c, &sim).await;

        let (_, _, v2) = send_json(b24_list(&c, &sim, &b24)).await;
        assert_eq!(v2["data"][0]["lastName"], "Lovelace");
        assert_eq!(v2["data"][0]["arrival"], b["arrival"]);
        let (_, _, v1) = send_json(b24_v1(&c, &sim, json!({}))).await;
        assert_eq!(
            (v1[0]["bookId"].clone(), v1[0]["guestName"].clone()),
            (json!(id.to_string()), json!("Lovelace"))
        );
        let (_, _, sm) = send_json(smoobu(&c, &sim)).await;
        assert_eq!(sm["bookings"][0]["guest-name"], "Ada Lovelace");
        let (_, _, cf) = send_json(checkfront(&c, &sim)).await;
        assert_eq!(
            cf["booking/index"][id.to_string()]["customer_name"],
            "Ada Lovelace"
        );
        let (_, _, hw) = send_json(hostaway(&c, &sim, &ha)).await;
        assert_eq!(hw["result"][0]["guestLastName"], "Lovelace");
        let (_, _, rz) = send(rezgo(&c, &sim, &[("q", &format!("SIM{id}"))])).await;
        assert_eq!(xml_values(&rz, "last_name"), ["Lovelace"]);

        assert!(sim.remove_booking(id));
        let (_, _, v2) = send_json(b24_list(&c, &sim, &b24)).await;
        assert_eq!(v2["count"], 0);
        let (_, _, cf) = send_json(checkfront(&c, &sim)).await;
        assert_eq!(cf["booking/index"], json!([]));
        let (_, _, hw) = send_json(hostaway(&c, &sim, &ha)).await;
        assert_eq!(hw["count"], 0);
        let (_, _, rz) = send(rezgo(&c, &sim, &[("q", &format!("SIM{id}"))])).await;
        assert!(rz.contains("<total>0</total>"));
        // The existing route is untouched by the vendor routes.
        assert_eq!(sim.requests(), 0);
    }
}
