//! Fault injection: the [`Simulator`] knobs that queue failures, and what they do to the generic listing (HTTP errors, malformed pages, records without `id`) and to the vendor routes (throttling with `Retry-After`, HTTP 200 failure bodies, latency).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::vendor::{
    Vendor, VendorState, json_response, rezgo_error, smoobu_problem, xml_response,
};
use super::{SimState, Simulator, error_response};

/// The fault knobs.
impl Simulator {
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

    /// The next request for listing page `page` (1-based) answers HTTP `status` (400 if it is not
    /// a valid status) as an API whose page links or cursors expire does.
    pub fn refuse_page(&self, page: u32, status: u16) {
        self.shared.lock().refused_pages.push((page, status));
    }

    /// The next request for listing page `page` (1-based) that has records answers with one
    /// record (the first) lacking its `id` field.
    pub fn drop_id_on_page(&self, page: u32) {
        self.shared.lock().drop_id_pages.push(page);
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
}

impl SimState {
    /// Takes one of the failures [`Simulator::fail_next`] queued: the status to answer.
    pub(super) fn take_listing_failure(&mut self) -> Option<u16> {
        if self.fail_remaining > 0 {
            self.fail_remaining -= 1;
            Some(self.fail_status)
        } else {
            None
        }
    }

    /// Takes a refusal [`Simulator::refuse_page`] queued for listing page `page`.
    pub(super) fn take_refusal(&mut self, page: usize) -> Option<u16> {
        let page = u32::try_from(page).ok()?;
        let i = self.refused_pages.iter().position(|(p, _)| *p == page)?;
        Some(self.refused_pages.remove(i).1)
    }

    /// Takes the fault queued for listing page `page`: a [`Simulator::corrupt_page`] first, else
    /// a [`Simulator::drop_id_on_page`] if the page has records.
    pub(super) fn take_page_fault(&mut self, page: usize, has_records: bool) -> PageFault {
        let page32 = u32::try_from(page).unwrap_or(u32::MAX);
        if let Some(i) = self.corrupt_pages.iter().position(|&p| p == page32) {
            self.corrupt_pages.remove(i);
            PageFault::Corrupt
        } else if has_records && let Some(i) = self.drop_id_pages.iter().position(|&p| p == page32)
        {
            self.drop_id_pages.remove(i);
            PageFault::DropId
        } else {
            PageFault::None
        }
    }
}

/// What a listing page answers besides its bookings.
pub(super) enum PageFault {
    None,
    Corrupt,
    DropId,
}

/// [`PageFault::DropId`]: the first record loses its `id` field.
pub(super) fn drop_first_id(data: &mut [Value]) {
    if let Some(Value::Object(first)) = data.first_mut() {
        first.remove("id");
    }
}

/// [`PageFault::Corrupt`]: HTTP 200 with the first half of `body`, malformed JSON.
pub(super) fn corrupted(body: &Value) -> Response {
    let text = body.to_string();
    let mut cut = text.len() / 2;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let truncated = text[..cut].to_string();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        truncated,
    )
        .into_response()
}

impl VendorState {
    /// Takes one of the answers [`Simulator::throttle_next`] queued: the status (`None`: the
    /// vendor's own) and the `Retry-After` seconds.
    pub(super) fn take_throttle(&mut self) -> Option<(Option<StatusCode>, u32)> {
        if self.throttle_remaining > 0 {
            self.throttle_remaining -= 1;
            Some((self.throttle_status, self.throttle_retry_after))
        } else {
            None
        }
    }

    /// Takes one of the failures [`Simulator::fail_softly_next`] queued.
    pub(super) fn take_soft_fail(&mut self) -> bool {
        if self.soft_fail_remaining > 0 {
            self.soft_fail_remaining -= 1;
            true
        } else {
            false
        }
    }
}

/// The answer to a throttled request: the vendor's throttling status (429; Checkfront 503 as its
/// docs say) with `Retry-After` and the vendor's error body.
pub(super) fn throttled(vendor: Vendor, status: Option<StatusCode>, retry_after: u32) -> Response {
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
pub(super) fn soft_failure(vendor: Vendor) -> Response {
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

#[cfg(test)]
mod listing_tests {
    use super::super::test_support::client;
    use super::super::test_support::listing::{get_json, ids, sim};
    use super::*;

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
}

#[cfg(test)]
mod vendor_tests {
    use super::super::test_support::client;
    use super::super::test_support::vendors::{
        b24_list, b24_token, b24_v1, checkfront, header, hostaway, hostaway_mint, hostaway_token,
        rezgo, send, send_json, sim, smoobu,
    };
    use super::super::{BEDS24_REFRESH_TOKEN, HOSTAWAY_CLIENT_SECRET};
    use super::*;
    use reqwest::RequestBuilder;

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
}
