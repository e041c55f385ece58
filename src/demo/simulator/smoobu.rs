//! Smoobu as a vendor view of the booking store: `GET /smoobu/api/reservations` with header `Api-Key` (ref §4.2).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::faults::soft_failure;
use super::vendor::{
    Vendor, VendorRequest, json_response, page_of, pages_for, smoobu_problem, ymd,
};
use super::{Booking, Shared};

/// Smoobu API key (header `Api-Key`).
pub const SMOOBU_API_KEY: &str = "sim-smoobu-api-key";

pub(super) const SMOOBU_PATH: &str = "/smoobu/api/reservations";
const SMOOBU_DEFAULT_PAGE_SIZE: usize = 25;

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
pub(super) fn smoobu_reservations(shared: &Shared, req: &VendorRequest) -> Response {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::client;
    use super::super::test_support::vendors::{day, ids_of, send_json, sim, smoobu, stored};
    use super::*;
    use chrono::Utc;

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
}
