//! The validated form of an `[endpoints.NAME]` table: where and how events are delivered.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use url::Url;

use super::Auth;
use crate::outbox::EventKind;
use crate::retry::RetryPolicy;
use crate::signing::SigningKey;
use crate::template::{TemplateTree, UrlTemplate};
use crate::text::Redactor;

/// The wire format of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Beds24 v1: `bookid` and `status` in the query string.
    V1,
    /// JSON envelope in the body.
    V2,
}

/// One receiver of notifications.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Unique name.
    pub name: String,
    /// Target URL.
    pub url: Url,
    /// Wire format.
    pub format: Format,
    /// HTTP method.
    pub method: reqwest::Method,
    /// Sources it receives events from.
    pub sources: BTreeSet<String>,
    /// Event kinds it receives.
    pub events: BTreeSet<EventKind>,
    /// Signing keys (all are used; several allow rotation).
    pub keys: Vec<SigningKey>,
    /// Extra static headers.
    pub headers: Vec<(String, String)>,
    /// Retry schedule and jitter.
    pub retry: RetryPolicy,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Largest number of concurrent requests to this endpoint.
    pub max_in_flight: u32,
    /// Whether deliveries are attempted (events queue either way).
    pub enabled: bool,
    /// Authentication towards the receiver.
    pub auth: Auth,
    /// Method overrides per event kind.
    pub methods: BTreeMap<EventKind, reqwest::Method>,
    /// After failing continuously this long the endpoint is reported as failing.
    pub failing_after: Duration,
    /// v1: name of the booking id parameter.
    pub bookid_param: String,
    /// v1: name of the status parameter.
    pub status_param: String,
    /// v2 body shape.
    pub preset: BodyPreset,
    /// v2 custom body template (overrides the preset).
    pub body: Option<TemplateTree>,
    /// The URL as a template, when it contains placeholders (values are percent-encoded, and a
    /// rendered URL must keep the template's shape).
    pub url_template: Option<UrlTemplate>,
    /// Beds24-style `[NAME]` variables: name -> JSON Pointer into the booking.
    pub variables: BTreeMap<String, String>,
    /// For a NATS JetStream endpoint (`type = "nats"`): where and how it publishes. `url` is
    /// then its first server, and `format`, `method` and `auth` keep their HTTP defaults
    /// unused.
    pub nats: Option<super::NatsEndpoint>,
    /// Its credentials in every form a receiver may echo them, to take out of what it answers.
    pub redactor: Redactor,
}

impl EndpointConfig {
    /// The method used for events of `kind`.
    pub fn method_for(&self, kind: EventKind) -> reqwest::Method {
        self.methods
            .get(&kind)
            .cloned()
            .unwrap_or_else(|| self.method.clone())
    }
}

/// Which JSON body format an endpoint receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPreset {
    /// pollhook's own envelope (the default), described by `docs/envelope.schema.json`.
    Pollhook,
    /// The Beds24 API V2 booking webhook: `{timeStamp, booking, infoItems, invoiceItems,
    /// messages, retries}`.
    Beds24,
    /// The StayNTouch Connect webhook event: `{created_at, event, id, data, object: "event"}`.
    StayNTouch,
    /// The Zenoti webhook event response object: `{id, event_id, event_schema, event_resource,
    /// event_type, event_timestamp, data}`.
    Zenoti,
    /// Rezgo's booking XML, `<response><total>1</total><booking>...</booking></response>`, as
    /// its webhook and `search_bookings` send it (`application/xml`).
    Rezgo,
}

impl BodyPreset {
    /// Every preset, in documentation order.
    pub const ALL: [BodyPreset; 5] = [
        BodyPreset::Pollhook,
        BodyPreset::Beds24,
        BodyPreset::StayNTouch,
        BodyPreset::Zenoti,
        BodyPreset::Rezgo,
    ];

    /// The presets whose body is JSON (all but `rezgo`).
    pub const JSON: [BodyPreset; 4] = [
        BodyPreset::Pollhook,
        BodyPreset::Beds24,
        BodyPreset::StayNTouch,
        BodyPreset::Zenoti,
    ];

    /// Parses a preset name as written in the configuration (`pollhook`, `beds24`, `stayntouch`,
    /// `zenoti`, `rezgo`; exact, lowercase). `None` for anything else.
    pub fn parse(s: &str) -> Option<BodyPreset> {
        BodyPreset::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The configuration name; [`BodyPreset::parse`] accepts it back.
    pub fn name(self) -> &'static str {
        match self {
            BodyPreset::Pollhook => "pollhook",
            BodyPreset::Beds24 => "beds24",
            BodyPreset::StayNTouch => "stayntouch",
            BodyPreset::Zenoti => "zenoti",
            BodyPreset::Rezgo => "rezgo",
        }
    }
}
