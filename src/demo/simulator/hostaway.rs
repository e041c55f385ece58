//! Hostaway as a vendor view of the booking store: `POST /hostaway/v1/accessTokens` mints the Bearer token for `GET /hostaway/v1/reservations` (ref §4.3).

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::faults::soft_failure;
use super::vendor::{
    Vendor, VendorRequest, json_response, page_of, pages_for, parse_date, parse_datetime_with, ymd,
    ymd_hms,
};
use super::{Booking, Shared};

/// Hostaway account id (`client_id` of the client-credentials grant).
pub const HOSTAWAY_CLIENT_ID: &str = "81234";
/// Hostaway API key (`client_secret` of the client-credentials grant).
pub const HOSTAWAY_CLIENT_SECRET: &str = "sim-hostaway-secret";

pub(super) const HOSTAWAY_TOKEN_PATH: &str = "/hostaway/v1/accessTokens";
pub(super) const HOSTAWAY_RESERVATIONS_PATH: &str = "/hostaway/v1/reservations";
/// The `expires_in` Hostaway's documentation example answers (about six months).
const HOSTAWAY_EXPIRES_IN: u64 = 15_897_600;

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
pub(super) fn hostaway_token(shared: &Shared, req: &VendorRequest) -> Response {
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
pub(super) fn hostaway_reservations(shared: &Shared, req: &VendorRequest) -> Response {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::client;
    use super::super::test_support::vendors::{
        hostaway, hostaway_mint, hostaway_token, ids_of, minute_ago, send_json, sim, stored,
    };
    use super::*;
    use chrono::NaiveDateTime;

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
}
