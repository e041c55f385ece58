//! What the simulator's unit tests share: an HTTP client, simulators to test, and one request builder per vendor route.

use std::time::Duration;

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// For the tests of the generic `/api/v2/bookings` listing.
pub(crate) mod listing {
    use serde_json::Value;

    use super::super::{SimConfig, Simulator};

    pub(crate) async fn get_json(c: &reqwest::Client, url: &str) -> (u16, Value) {
        let resp = c.get(url).send().await.expect("send");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("json body");
        (status, body)
    }

    pub(crate) fn ids(page: &Value) -> Vec<u64> {
        page["data"]
            .as_array()
            .expect("data array")
            .iter()
            .map(|b| b["id"].as_u64().expect("id"))
            .collect()
    }

    pub(crate) async fn sim(initial: usize, page_size: usize) -> Simulator {
        Simulator::start(SimConfig {
            page_size,
            initial_bookings: initial,
            pace: None,
            seed: 7,
        })
        .await
        .expect("start simulator")
    }

    pub(crate) fn find(sim: &Simulator, id: u64) -> Option<Value> {
        sim.bookings().into_iter().find(|b| b["id"] == id)
    }
}

/// For the tests of the vendor routes.
pub(crate) mod vendors {
    use axum::http::HeaderMap;
    use chrono::{NaiveDate, TimeDelta, Utc};
    use reqwest::RequestBuilder;
    use serde_json::{Value, json};

    use super::super::{
        BEDS24_REFRESH_TOKEN, BEDS24_V1_APIKEY, BEDS24_V1_PROPKEY, CHECKFRONT_KEY,
        CHECKFRONT_SECRET, HOSTAWAY_CLIENT_ID, HOSTAWAY_CLIENT_SECRET, REZGO_CID, REZGO_KEY,
        SMOOBU_API_KEY, SimConfig, Simulator, encode_component,
    };

    pub(crate) async fn sim(initial: usize) -> Simulator {
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
    pub(crate) async fn send(rb: RequestBuilder) -> (u16, HeaderMap, String) {
        let resp = rb.send().await.expect("send");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.expect("body"))
    }

    pub(crate) async fn send_json(rb: RequestBuilder) -> (u16, HeaderMap, Value) {
        let (status, headers, text) = send(rb).await;
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, headers, body)
    }

    pub(crate) fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("header {name} missing in {h:?}"))
    }

    pub(crate) fn ids_of(items: &Value) -> Vec<u64> {
        items
            .as_array()
            .expect("array")
            .iter()
            .map(|b| b["id"].as_u64().expect("id"))
            .collect()
    }

    pub(crate) fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    pub(crate) fn day(d: NaiveDate, n: i64) -> NaiveDate {
        d + TimeDelta::days(n)
    }

    pub(crate) fn stored(sim: &Simulator, id: u64) -> Value {
        sim.bookings()
            .into_iter()
            .find(|b| b["id"] == id)
            .expect("booking in store")
    }

    pub(crate) async fn b24_token(c: &reqwest::Client, sim: &Simulator) -> String {
        let (status, _, body) = send_json(
            c.get(format!("{}/authentication/token", sim.beds24_v2_base_url()))
                .header("refreshToken", BEDS24_REFRESH_TOKEN),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().expect("token").to_string()
    }

    pub(crate) fn b24_list(c: &reqwest::Client, sim: &Simulator, token: &str) -> RequestBuilder {
        c.get(format!("{}/bookings", sim.beds24_v2_base_url()))
            .header("token", token)
    }

    pub(crate) fn b24_v1(c: &reqwest::Client, sim: &Simulator, mut body: Value) -> RequestBuilder {
        body["authentication"] =
            json!({ "apiKey": BEDS24_V1_APIKEY, "propKey": BEDS24_V1_PROPKEY });
        c.post(format!("{}/getBookings", sim.beds24_v1_base_url()))
            .json(&body)
    }

    pub(crate) fn smoobu(c: &reqwest::Client, sim: &Simulator) -> RequestBuilder {
        c.get(format!("{}/api/reservations", sim.smoobu_base_url()))
            .header("Api-Key", SMOOBU_API_KEY)
    }

    pub(crate) fn checkfront(c: &reqwest::Client, sim: &Simulator) -> RequestBuilder {
        c.get(format!(
            "{}/api/3.0/booking/index",
            sim.checkfront_base_url()
        ))
        .basic_auth(CHECKFRONT_KEY, Some(CHECKFRONT_SECRET))
    }

    pub(crate) fn hostaway_mint(
        c: &reqwest::Client,
        sim: &Simulator,
        secret: &str,
    ) -> RequestBuilder {
        let form = format!(
            "grant_type=client_credentials&client_id={HOSTAWAY_CLIENT_ID}&client_secret={}&scope=general",
            encode_component(secret)
        );
        c.post(format!("{}/accessTokens", sim.hostaway_base_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
    }

    pub(crate) async fn hostaway_token(c: &reqwest::Client, sim: &Simulator) -> String {
        let (status, _, body) = send_json(hostaway_mint(c, sim, HOSTAWAY_CLIENT_SECRET)).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    pub(crate) fn hostaway(c: &reqwest::Client, sim: &Simulator, token: &str) -> RequestBuilder {
        c.get(format!("{}/reservations", sim.hostaway_base_url()))
            .bearer_auth(token)
    }

    pub(crate) fn rezgo(
        c: &reqwest::Client,
        sim: &Simulator,
        extra: &[(&str, &str)],
    ) -> RequestBuilder {
        c.get(sim.rezgo_url())
            .query(&[
                ("transcode", REZGO_CID),
                ("key", REZGO_KEY),
                ("i", "search_bookings"),
            ])
            .query(extra)
    }

    /// The text content of every `<name>` element (CDATA sections unwrapped, entities decoded).
    pub(crate) fn xml_values(xml: &str, name: &str) -> Vec<String> {
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

    pub(crate) fn minute_ago(fmt: &str) -> String {
        (Utc::now() - TimeDelta::seconds(60))
            .format(fmt)
            .to_string()
    }
}
