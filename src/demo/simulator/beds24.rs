//! Beds24 as two vendor views of the booking store: API v2 (`GET /beds24/v2/authentication/token` mints the `token` header for `GET /beds24/v2/bookings`, which costs credits) and the JSON API v1 (`POST /beds24/json/getBookings`, auth in the body).

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Months, NaiveDate, Utc};
use serde_json::{Value, json};

use super::faults::soft_failure;
use super::vendor::{
    Vendor, VendorRequest, VendorState, json_response, money, page_of, parse_date,
    parse_datetime_with, with_credits, ymd, ymd_hms,
};
use super::{Booking, Shared, encode_component, error_response, rfc3339};

/// Beds24 API v2 refresh token: send it as header `refreshToken` to
/// `GET /beds24/v2/authentication/token`.
pub const BEDS24_REFRESH_TOKEN: &str = "sim-refresh-token";
/// Beds24 JSON API v1 account key (`authentication.apiKey` in the body).
pub const BEDS24_V1_APIKEY: &str = "sim-v1-apikey";
/// Beds24 JSON API v1 property key (`authentication.propKey` in the body).
pub const BEDS24_V1_PROPKEY: &str = "sim-v1-propkey";

pub(super) const BEDS24_V2_TOKEN_PATH: &str = "/beds24/v2/authentication/token";
pub(super) const BEDS24_V2_BOOKINGS_PATH: &str = "/beds24/v2/bookings";
pub(super) const BEDS24_V1_PATH: &str = "/beds24/json/getBookings";
/// Beds24 v1 `getBookings` returns at most this many bookings (ref §1.5).
const BEDS24_V1_MAX: usize = 1000;
const BEDS24_V2_STATUSES: [&str; 6] = [
    "confirmed",
    "request",
    "new",
    "cancelled",
    "black",
    "inquiry",
];

// ----- Beds24 API v2 (ref §1.1-1.4) ----------------------------------------------------------

impl VendorState {
    fn beds24_token_valid(&self, token: &str) -> bool {
        self.beds24_tokens
            .get(token)
            .is_some_and(|&expires| std::time::Instant::now() < expires)
    }
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

/// `GET /beds24/v2/authentication/token` (ref §1.1): header `refreshToken` ->
/// `{"token", "expiresIn"}`. Costs a credit, like every v2 call.
pub(super) fn beds24_v2_token(shared: &Shared, req: &VendorRequest) -> Response {
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
        // "Will default to confirmed, request, new, black and inquiry if not specified": the
        // spec makes no exception for `id`, so a cancelled booking needs `status` even by id.
        let status_ok = if self.statuses.is_empty() {
            b.status != "cancelled"
        } else {
            self.statuses.iter().any(|s| s == b.status)
        };
        // `id` is a by-id lookup: the booking whatever the date filters say (this simulator's
        // reading; the spec does not say how `id` combines with the other filters).
        if !self.ids.is_empty() {
            return status_ok && self.ids.contains(&b.id);
        }
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
pub(super) fn beds24_v2_bookings(shared: &Shared, req: &VendorRequest) -> Response {
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

/// `POST /beds24/json/getBookings` (ref §1.5): auth in the body; numeric-string status;
/// cancelled bookings included as "0"; default window arrival yesterday..+1 year; errors with
/// HTTP 200; `limit`/`offset`, at most 1000.
pub(super) fn beds24_v1_get_bookings(shared: &Shared, req: &VendorRequest) -> Response {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::client;
    use super::super::test_support::vendors::{
        b24_list, b24_token, b24_v1, date, day, header, ids_of, minute_ago, send_json, sim, stored,
    };
    use super::*;
    use chrono::NaiveDateTime;

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
            Vec::<u64>::new(),
            "the default status filter hides a cancelled booking even by id"
        );
        assert_eq!(
            list(vec![("id", "1001".into()), ("status", "cancelled".into())]).await,
            [1001],
            "unless the status is asked for"
        );
        assert_eq!(
            list(vec![("id[]", "1002".into()), ("id[]", "1003".into())]).await,
            [1002, 1003]
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
}
