//! Checkfront as a vendor view of the booking store: `GET /checkfront/api/3.0/booking/index` with HTTP Basic key:secret (ref §4.1).

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use chrono::NaiveDate;
use serde_json::{Map, Value, json};

use super::faults::soft_failure;
use super::vendor::{
    Vendor, VendorRequest, json_response, money, page_of, pages_for, parse_date, unix_of_date,
};
use super::{Booking, Shared};

/// Checkfront API key (HTTP Basic user name).
pub const CHECKFRONT_KEY: &str = "sim-checkfront-key";
/// Checkfront API secret (HTTP Basic password).
pub const CHECKFRONT_SECRET: &str = "sim-checkfront-secret";

pub(super) const CHECKFRONT_PATH: &str = "/checkfront/api/3.0/booking/index";

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
pub(super) fn checkfront_index(shared: &Shared, req: &VendorRequest) -> Response {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::client;
    use super::super::test_support::vendors::{checkfront, send_json, sim, stored};
    use super::*;
    use chrono::{DateTime, TimeDelta, Utc};

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
}
