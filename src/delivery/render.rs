//! Rendering an event for one endpoint (pure: `now` is an argument): the v1 query-string ping
//! with Beds24 URL variables, or the v2 body from the endpoint's template or preset. Every value
//! placed in a URL is percent-encoded, so it can never add a parameter or change the host.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use url::Url;

use super::presets;
use crate::config::{EndpointConfig, Format};
use crate::outbox::Event;
use crate::template::{Context, Val};

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

/// What an endpoint template sees: the event, the attempt number and the booking.
pub struct DeliveryContext<'a> {
    /// The event.
    pub event: &'a Event,
    /// Attempt number (1 for the first try).
    pub attempt: u32,
    /// Beds24-style variables: name -> pointer.
    pub variables: &'a BTreeMap<String, String>,
    /// The clock.
    pub now: DateTime<Utc>,
}

impl Context for DeliveryContext<'_> {
    fn now(&self) -> DateTime<Utc> {
        self.now
    }
    fn name(&self, name: &str) -> Option<Val> {
        let e = self.event;
        let json = |v: Value| Some(Val::Json(v));
        match name {
            "event.id" => json(Value::String(e.id.clone())),
            "event.type" => json(Value::String(e.kind.event_type().into())),
            "event.status" | "event.kind" => json(Value::String(e.kind.status_word().into())),
            "event.source" => json(Value::String(e.source.clone())),
            "event.booking_id" => json(Value::String(e.booking_id.clone())),
            "event.sequence" => json(Value::from(e.seq)),
            "event.backfill" => json(Value::Bool(e.backfill)),
            "event.attempt" => json(Value::from(self.attempt)),
            "event.detected_at" => {
                DateTime::<Utc>::from_timestamp_millis(e.detected_ms).map(Val::Time)
            }
            "event.changes" => serde_json::to_value(&e.changes).ok().map(Val::Json),
            "booking" => json(e.booking.value().clone()),
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
            "booking" => self.event.booking.value().pointer(pointer).cloned(),
            _ => None,
        }
    }
}

/// The v2 body of an event for an endpoint: its custom template, else its preset.
pub fn v2_body(
    ep: &EndpointConfig,
    event: &Event,
    attempt: u32,
    now: DateTime<Utc>,
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
        None => Ok(presets::render(ep.preset, event, attempt)),
    }
}

/// Renders an event for an endpoint. v1 appends `bookid` and `status` (names configurable) to
/// the URL's existing query string; v2 builds the body. Every value placed in the URL is
/// percent-encoded, so it can never add a parameter or change the path or host; a value that
/// would still change the path's shape (a whole segment `.` or `..`) is an error.
pub fn render(
    ep: &EndpointConfig,
    event: &Event,
    attempt: u32,
    now: DateTime<Utc>,
) -> Result<Rendered, String> {
    let mut url = match &ep.url_template {
        None => ep.url.clone(),
        Some(t) => {
            let ctx = DeliveryContext {
                event,
                attempt,
                variables: &ep.variables,
                now,
            };
            // The template checks the rendered URL's shape (host, segments, query names).
            let u = t
                .render(&ctx)
                .map_err(|e| format!("endpoints.{}.url: {e}", ep.name))?;
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
                Some(_) => serde_json::to_vec(&v2_body(ep, event, attempt, now)?)
                    .map_err(|e| format!("endpoints.{}.body: cannot serialise: {e}", ep.name))?,
                None => presets::to_vec(ep.preset, event, attempt)
                    .map_err(|e| format!("endpoints.{}: {e}", ep.name))?,
            },
            content_type: Some(match &ep.body {
                Some(_) => "application/json",
                None => presets::content_type(ep.preset),
            }),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::outbox::{EventKind, FieldChange};
    use chrono::Utc;
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
            booking: crate::outbox::Booking::from_value(
                json!({"id": id, "guest": "Zoë & \"Bob\""}),
            )
            .unwrap(),
            changes: vec![FieldChange {
                path: "/guest".into(),
                old: json!("Zoë"),
                new: json!("Zoë & \"Bob\""),
            }],
            backfill: false,
        }
    }

    #[test]
    fn v1_appends_to_the_existing_query_and_encodes_values() {
        let ep = endpoint("url = \"https://crm.test/hook?key=abc\"\nformat = \"v1\"");
        let r = render(&ep, &event("12&status=cancel#x"), 1, Utc::now()).unwrap();
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
            render(&plain, &event("7"), 1, Utc::now())
                .unwrap()
                .url
                .as_str(),
            "https://crm.test/hook?bookid=7&status=modify"
        );
    }

    #[test]
    fn v2_envelope_carries_everything() {
        let ep = endpoint("url = \"https://crm.test/hook\"");
        let r = render(&ep, &event("7"), 1, Utc::now()).unwrap();
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
        ev.booking = crate::outbox::Booking::from_value(
            json!({"propertyId": "12/../admin", "lastName": "O'Brien & Co=x?#", "roomId": 3}),
        )
        .unwrap();
        let r = render(&ep, &ev, 1, Utc::now()).unwrap();
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
    fn dot_values_never_move_a_request_along_the_path() {
        let segments = |r: &Rendered| -> Vec<String> {
            r.url.path_segments().unwrap().map(str::to_string).collect()
        };
        let ep = endpoint("url = \"http://h.test/hook/p/{{ booking/x }}/tail\"");
        for x in ["..", ".", "%2e%2E", ".%2e"] {
            let mut ev = event("7");
            ev.booking = crate::outbox::Booking::from_value(json!({ "x": x })).unwrap();
            match render(&ep, &ev, 1, Utc::now()) {
                Ok(r) => {
                    assert_eq!(segments(&r).len(), 4, "{x:?} moved it to {}", r.url);
                    assert_eq!(r.url.path_segments().unwrap().next_back(), Some("tail"));
                    assert!(x.contains('%'), "{x:?} was sent as {}", r.url);
                }
                Err(e) => {
                    assert!(!x.contains('%'), "{x:?}: {e}");
                    assert!(
                        e.contains("endpoints.e.url") && e.contains("segment"),
                        "{e}"
                    );
                }
            }
        }
        let ep = endpoint("url = \"http://h.test/hook/body/{{ event.booking_id }}/end\"");
        for id in [".", ".."] {
            let e = render(&ep, &event(id), 1, Utc::now()).unwrap_err();
            assert!(e.contains("endpoints.e.url"), "{e}");
        }
        let ok = render(&ep, &event("a..b"), 1, Utc::now()).unwrap();
        assert_eq!(ok.url.path(), "/hook/body/a..b/end");
        // A value that is the whole last segment, or makes a segment dot-only with its literal.
        let ep = endpoint("url = \"http://h.test/hook/{{ event.booking_id }}\"");
        assert!(render(&ep, &event("."), 1, Utc::now()).is_err());
        let ep = endpoint("url = \"http://h.test/hook/{{ event.booking_id }}./x\"");
        assert!(render(&ep, &event("."), 1, Utc::now()).is_err());
        assert!(render(&ep, &event(""), 1, Utc::now()).is_err());
        assert_eq!(
            render(&ep, &event("v1"), 1, Utc::now()).unwrap().url.path(),
            "/hook/v1./x"
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
        let r = render(&ep, &event("7"), 3, Utc::now()).unwrap();
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
        let v: Value =
            serde_json::from_slice(&render(&ep, &event("7"), 3, Utc::now()).unwrap().body).unwrap();
        assert_eq!(v["retries"], 2);
        assert_eq!(v["booking"]["id"], "7");
        let ep = endpoint("url = \"https://crm.test/h\"\npreset = \"stayntouch\"");
        let v: Value =
            serde_json::from_slice(&render(&ep, &event("7"), 1, Utc::now()).unwrap().body).unwrap();
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
}
