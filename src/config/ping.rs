//! Ping-triggered refresh as configured: the `[ingress]` listener and each source's `[ping]`
//! table (its path, how the sender is authenticated, where the booking ids are).

use std::net::SocketAddr;
use std::time::Duration;

use super::Secret;
use crate::signing::SigningKey;

/// The ingress listener (`[ingress]`), which faces the booking systems that send pings.
#[derive(Debug, Clone, PartialEq)]
pub struct IngressConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Time allowed to read a request's head and body (and for an idle connection).
    pub timeout: Duration,
    /// Pings of one source recorded but not yet looked up, beyond which new ones get 429.
    pub backlog: usize,
    /// Connections served at once; more wait for a free slot.
    pub max_connections: usize,
}

/// The default `ingress.listen` (when `[ingress]` is present without one).
pub const DEFAULT_INGRESS_LISTEN: &str = "127.0.0.1:9478";

/// HTTP methods a ping path accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingMethod {
    /// GET (the booking id in the query).
    Get,
    /// POST (in the query, a form field or the JSON body).
    Post,
}

/// Where the secret token of [`PingAuth::Token`] travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenPlace {
    /// The last path segment: `PATH/<token>`.
    Path,
    /// A query parameter of this name.
    Query(String),
    /// A header of this name.
    Header(String),
}

/// How the sender of a ping is authenticated.
#[derive(Debug, Clone, PartialEq)]
pub enum PingAuth {
    /// Nobody is (only sensible behind a proxy that authenticates, or on loopback).
    None,
    /// A shared secret token in the path, a query parameter or a header.
    Token {
        /// Where it travels.
        place: TokenPlace,
        /// The token.
        token: Secret,
    },
    /// HTTP Basic.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// An HMAC-SHA256 of the raw body in a header, hex or base64, with an optional prefix
    /// (`sha256=`).
    Hmac {
        /// The header carrying the signature.
        header: String,
        /// Its encoding.
        encoding: SignatureEncoding,
        /// Text before the signature in the header.
        prefix: String,
        /// The shared key.
        secret: Secret,
    },
    /// A Standard Webhooks signature (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    StandardWebhooks {
        /// The key of the `whsec_…` secret.
        key: SigningKey,
        /// Largest accepted difference between the timestamp and pollhook's clock.
        tolerance: Duration,
    },
}

/// How an HMAC signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureEncoding {
    /// Lowercase or uppercase hexadecimal.
    Hex,
    /// Standard base64.
    Base64,
}

/// Where the booking ids of a ping are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdFrom {
    /// A query parameter (repeated for several ids).
    Query(String),
    /// A field of an `application/x-www-form-urlencoded` body (repeated for several ids).
    Form(String),
    /// A JSON Pointer into a JSON body: a string or number, or an array of them.
    Pointer(String),
}

/// One source's `[ping]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct PingConfig {
    /// The path pings arrive at (with `auth.in = "path"`, the token follows it).
    pub path: String,
    /// The methods accepted.
    pub methods: Vec<PingMethod>,
    /// How the sender is authenticated.
    pub auth: PingAuth,
    /// Where the ids are.
    pub id: IdFrom,
    /// Pings for one booking arriving within this long are answered by one lookup.
    pub coalesce: Duration,
}

/// What a `preset` gives a `[ping]` table (keys set in the table win).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingPreset {
    /// Beds24's v1 notify URL: GET or POST with `?bookid=123&status=new` (the status is ignored).
    Beds24V1,
    /// pretix's webhook: POST `{"organizer", "event", "code", "action", "notification_id"}`.
    Pretix,
}

impl PingPreset {
    /// Every preset name.
    pub const NAMES: [&'static str; 2] = ["beds24_v1", "pretix"];

    /// The preset of this name.
    pub fn named(name: &str) -> Option<PingPreset> {
        match name {
            "beds24_v1" => Some(PingPreset::Beds24V1),
            "pretix" => Some(PingPreset::Pretix),
            _ => None,
        }
    }

    /// The methods it accepts.
    pub fn methods(self) -> Vec<PingMethod> {
        match self {
            PingPreset::Beds24V1 => vec![PingMethod::Get, PingMethod::Post],
            PingPreset::Pretix => vec![PingMethod::Post],
        }
    }

    /// Where its booking id is.
    pub fn id(self) -> IdFrom {
        match self {
            PingPreset::Beds24V1 => IdFrom::Query("bookid".into()),
            PingPreset::Pretix => IdFrom::Pointer("/code".into()),
        }
    }
}
