//! NATS JetStream endpoints: the connection (made on first use, then kept and re-established by
//! the client), one publish attempt (subject, headers, `Nats-Msg-Id`, the wait for the PubAck),
//! what each failure means for the operator, and the start-up check of `stream`.
//!
//! A delivery is delivered only when JetStream acknowledges it; an acknowledgement flagged
//! `duplicate` is delivered too (the stream already holds that event id: de-duplication by
//! `Nats-Msg-Id` at work). Everything else is a failed attempt, retried on the endpoint's
//! schedule and dead-lettered after its last attempt, exactly like an HTTP failure.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::{ConnectErrorKind, ConnectOptions, HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{OnceCell, broadcast};

use super::presets;
use super::render::{DeliveryContext, v2_body};
use crate::config::{EndpointConfig, NatsAuth, NatsEndpoint};
use crate::outbox::Event;
use crate::retry::AttemptResult;
use crate::signing;
use crate::template::{Escape, check_subject};

/// A connected client and its JetStream context.
struct Connected {
    js: jetstream::Context,
    client: async_nats::Client,
}

/// One NATS endpoint's connection, made on the first attempt (an attempt while the server is
/// unreachable fails and the next one tries again); once made, the client reconnects by itself
/// after a restart or a partition, and publishes wait for it up to the endpoint's timeout.
pub(super) struct NatsTransport {
    name: String,
    cfg: NatsEndpoint,
    connect_timeout: Duration,
    timeout: Duration,
    conn: OnceCell<Connected>,
    /// Errors the server reported on the connection (`-ERR`), e.g. permission violations,
    /// which come back asynchronously rather than as an answer to the publish.
    server_errors: broadcast::Sender<String>,
}

/// What one publish produced, for the attempt record.
pub(super) struct Published {
    /// How the retry policy sees it.
    pub result: AttemptResult,
    /// What went wrong, when it did: subject, reason and what to change.
    pub error: Option<String>,
    /// On success, the acknowledgement (stream, sequence, duplicate).
    pub body: String,
}

impl Published {
    fn failed(error: String) -> Published {
        Published {
            result: AttemptResult::Transport,
            error: Some(error),
            body: String::new(),
        }
    }
}

impl NatsTransport {
    /// Prepares (does not connect) the transport of endpoint `ep`, which must be a NATS one.
    pub(super) fn new(ep: &EndpointConfig, cfg: &NatsEndpoint) -> NatsTransport {
        NatsTransport {
            name: ep.name.clone(),
            cfg: cfg.clone(),
            connect_timeout: ep.connect_timeout,
            timeout: ep.timeout,
            conn: OnceCell::new(),
            server_errors: broadcast::channel(64).0,
        }
    }

    fn options(&self) -> Result<ConnectOptions, String> {
        let opts = match &self.cfg.auth {
            NatsAuth::None => ConnectOptions::new(),
            NatsAuth::Token(t) => ConnectOptions::with_token(t.expose().to_string()),
            NatsAuth::UserPassword { username, password } => {
                ConnectOptions::with_user_and_password(
                    username.clone(),
                    password.expose().to_string(),
                )
            }
            NatsAuth::NKey(seed) => ConnectOptions::with_nkey(seed.expose().to_string()),
            NatsAuth::Creds(c) => ConnectOptions::with_credentials(c.expose()).map_err(|_| {
                format!(
                    "endpoints.{}.auth.secret: not a NATS .creds file",
                    self.name
                )
            })?,
        };
        let mut opts = opts
            .name(format!(
                "pollhook/{} endpoint {}",
                env!("CARGO_PKG_VERSION"),
                self.name
            ))
            .connection_timeout(self.connect_timeout)
            .request_timeout(Some(self.timeout))
            .require_tls(self.cfg.tls_required)
            .max_reconnects(None);
        if let Some(ca) = &self.cfg.tls_ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        let (errors, name) = (self.server_errors.clone(), self.name.clone());
        Ok(opts.event_callback(move |event| {
            let (errors, name) = (errors.clone(), name.clone());
            async move {
                match event {
                    async_nats::Event::ServerError(e) => {
                        let text = match e {
                            async_nats::ServerError::AuthorizationViolation => {
                                "authorization violation".to_string()
                            }
                            other => other.to_string(),
                        };
                        tracing::warn!(endpoint = %name, error = %text, "NATS server reported an error");
                        let _ = errors.send(text);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(endpoint = %name, "NATS connection lost; reconnecting (publishes wait up to the endpoint's timeout, then retry)")
                    }
                    async_nats::Event::Connected => {
                        tracing::info!(endpoint = %name, "NATS connection (re)established")
                    }
                    other => tracing::debug!(endpoint = %name, event = %other, "NATS client event"),
                }
            }
        }))
    }

    /// Connects, once; a failure is returned and the next call tries again.
    async fn connected(&self) -> Result<&Connected, String> {
        self.conn
            .get_or_try_init(|| async {
                let servers: Vec<async_nats::ServerAddr> = self
                    .cfg
                    .servers
                    .iter()
                    .filter_map(|s| s.parse().ok())
                    .collect();
                let opts = self.options()?;
                // The client's own connection timeout applies per server; this bounds the lot.
                let deadline = self.connect_timeout.saturating_mul(servers.len().max(1) as u32);
                let client = match tokio::time::timeout(deadline, opts.connect(servers)).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => return Err(self.connect_error(&e)),
                    Err(_) => {
                        return Err(format!(
                            "cannot connect to {}: no answer within endpoints.{}.connect_timeout ({}): is the server running and reachable?",
                            self.cfg.servers.join(", "),
                            self.name,
                            humantime::format_duration(self.connect_timeout)
                        ));
                    }
                };
                let js = jetstream::ContextBuilder::new()
                    .timeout(self.timeout)
                    .build(client.clone());
                Ok(Connected { js, client })
            })
            .await
    }

    fn connect_error(&self, e: &async_nats::ConnectError) -> String {
        let servers = self.cfg.servers.join(", ");
        match e.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                format!(
                    "cannot connect to {servers}: the server refused the credentials ({e}); check endpoints.{}.auth (type \"{}\") and its secret against the server's authorization settings",
                    self.name,
                    self.cfg.auth.kind()
                )
            }
            ConnectErrorKind::Tls => format!(
                "cannot connect to {servers}: TLS failed ({e}); check endpoints.{}.tls_required and tls_ca_file against the server's TLS settings",
                self.name
            ),
            _ => format!(
                "cannot connect to {servers}: {e}; is the server running and reachable? (the delivery is retried)"
            ),
        }
    }

    /// The subject for `event`: the template with every value escaped to stay in its token.
    pub(super) fn subject(&self, ctx: &DeliveryContext<'_>) -> Result<String, String> {
        let subject = self
            .cfg
            .subject
            .render(ctx, Escape::SubjectToken)
            .map_err(|e| format!("endpoints.{}.subject: {e}", self.name))?;
        check_subject(&subject).map_err(|why| {
            format!(
                "endpoints.{}.subject: rendered `{subject}`, which is not a subject to publish to: {why}",
                self.name
            )
        })?;
        Ok(subject)
    }

    /// Publishes `event` once and waits for JetStream's acknowledgement, within the endpoint's
    /// timeout.
    pub(super) async fn publish(
        &self,
        ep: &EndpointConfig,
        event: &Event,
        attempt: u32,
        now: DateTime<Utc>,
        ts: i64,
    ) -> Published {
        let ctx = DeliveryContext {
            event,
            attempt,
            variables: &ep.variables,
            now,
        };
        let rendered = self.subject(&ctx).and_then(|subject| {
            let body = body(ep, event, attempt, now)?;
            Ok((subject, body))
        });
        let (subject, body) = match rendered {
            Ok(r) => r,
            Err(e) => return Published::failed(e),
        };
        let headers = headers(ep, self.cfg.stream.as_deref(), event, ts, &body);
        let started = Instant::now();
        let conn = match self.connected().await {
            Ok(c) => c,
            Err(e) => return Published::failed(e),
        };
        let left = self.timeout.saturating_sub(started.elapsed());
        let mut server_errors = self.server_errors.subscribe();
        let size = body.len();
        let send = async {
            conn.js
                .publish_with_headers(subject.clone(), headers, Bytes::from(body))
                .await?
                .await
        };
        tokio::select! {
            sent = tokio::time::timeout(left, send) => match sent {
                Ok(Ok(ack)) => Published {
                    result: AttemptResult::Acknowledged,
                    error: None,
                    body: if ack.duplicate {
                        format!("stream {} seq {} duplicate: the stream already held this event id (de-duplicated by Nats-Msg-Id)", ack.stream, ack.sequence)
                    } else {
                        format!("stream {} seq {}", ack.stream, ack.sequence)
                    },
                },
                Ok(Err(e)) => Published::failed(self.publish_error(&subject, &e, size, conn)),
                Err(_) => Published::failed(self.no_ack(&subject)),
            },
            refused = refusal(&mut server_errors, &subject) => Published::failed(if refused == "authorization violation" {
                format!(
                    "subject {subject}: the server refused the credentials (authorization violation); check endpoints.{}.auth against the server's authorization settings",
                    self.name
                )
            } else {
                format!(
                    "subject {subject}: the server refused it: {refused}; allow publishing to it (and subscribing to _INBOX.> for the acknowledgement) in the NATS user's permissions, or change endpoints.{}.subject",
                    self.name
                )
            }),
        }
    }

    fn no_ack(&self, subject: &str) -> String {
        format!(
            "subject {subject}: no acknowledgement from JetStream within endpoints.{}.timeout ({}): the server may be down, restarting or partitioned, or JetStream unavailable; retried with the same Nats-Msg-Id",
            self.name,
            humantime::format_duration(self.timeout)
        )
    }

    fn publish_error(
        &self,
        subject: &str,
        e: &jetstream::context::PublishError,
        size: usize,
        conn: &Connected,
    ) -> String {
        let name = &self.name;
        match e.kind() {
            PublishErrorKind::StreamNotFound => format!(
                "subject {subject}: no JetStream stream captures this subject; add a stream whose subjects match it (e.g. `nats stream add BOOKINGS --subjects 'bookings.>'`) or change endpoints.{name}.subject"
            ),
            PublishErrorKind::MaxPayloadExceeded => format!(
                "subject {subject}: the message ({size} bytes of body, plus headers) is larger than the server's max_payload ({} bytes); raise max_payload in the nats-server configuration, or send a smaller body with endpoints.{name}.body",
                conn.client.server_info().max_payload
            ),
            PublishErrorKind::TimedOut => self.no_ack(subject),
            PublishErrorKind::BrokenPipe => format!(
                "subject {subject}: the connection closed before the acknowledgement; retried with the same Nats-Msg-Id"
            ),
            _ => {
                let why = std::error::Error::source(e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.to_string());
                let hint = if why.contains("10060") || why.contains("expected stream") {
                    format!(
                        "; the subject belongs to another stream than endpoints.{name}.stream: change the subject or the stream"
                    )
                } else if why.contains("10054") || why.contains("message size") {
                    format!(
                        "; raise the stream's max_msg_size or send a smaller body with endpoints.{name}.body"
                    )
                } else {
                    String::new()
                };
                format!("subject {subject}: JetStream refused the message: {why}{hint}")
            }
        }
    }

    /// The start-up check: the server answers and, if `stream` is set, the stream exists.
    /// `Err` only for what is certain to fail every delivery (a missing stream); a server that
    /// cannot be reached now is a warning (deliveries queue and are retried).
    async fn check(&self, ep: &EndpointConfig) -> Result<Vec<String>, String> {
        let conn = match self.connected().await {
            Ok(c) => c,
            Err(e) => return Ok(vec![format!("endpoints.{}: {e}", self.name)]),
        };
        let Some(stream) = &self.cfg.stream else {
            return Ok(Vec::new());
        };
        match conn.js.get_stream(stream).await {
            Ok(s) => {
                let window = s.cached_info().config.duplicate_window;
                let mut warnings = Vec::new();
                {
                    let longest = ep.retry.schedule.iter().skip(1).max().copied();
                    if let Some(gap) = longest.filter(|g| *g > window) {
                        warnings.push(format!(
                            "endpoints.{}: stream {stream} de-duplicates by Nats-Msg-Id only within its duplicate_window ({}), but retry_schedule waits up to {} between attempts; a retry after a lost acknowledgement could store an event twice. Raise the stream's duplicate_window or shorten retry_schedule",
                            self.name,
                            humantime::format_duration(window),
                            humantime::format_duration(gap)
                        ));
                    }
                }
                Ok(warnings)
            }
            Err(e) => {
                let missing = matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                );
                if missing {
                    Err(format!(
                        "endpoints.{}.stream: stream `{stream}` does not exist on {}; create it with subjects that cover endpoints.{}.subject (`{}`), e.g. `nats stream add {stream} --subjects '{}'`, or remove `stream` to publish to whichever stream captures the subject",
                        self.name,
                        self.cfg.servers.join(", "),
                        self.name,
                        self.cfg.subject_text,
                        wildcard_of(&self.cfg.subject_text),
                    ))
                } else {
                    Ok(vec![format!(
                        "endpoints.{}.stream: cannot look up stream `{stream}` ({e}); is JetStream enabled on the server (nats-server -js)?",
                        self.name
                    )])
                }
            }
        }
    }
}

/// The first server error that refuses `subject` (or the acknowledgement inbox): the NATS server
/// reports permission violations as `-ERR` on the connection, not as an answer to the publish.
async fn refusal(errors: &mut broadcast::Receiver<String>, subject: &str) -> String {
    loop {
        match errors.recv().await {
            // Quoted as the server quotes it; checked only when an error arrives, so a publish
            // that meets none formats nothing.
            Ok(e)
                if quotes(&e, subject)
                    || (e.contains("Permissions") && e.contains("_INBOX"))
                    || e == "authorization violation" =>
            {
                return e;
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Whether a server error names `subject` in quotes, as `"bookings.a.new"`.
fn quotes(error: &str, subject: &str) -> bool {
    error
        .match_indices(subject)
        .any(|(i, _)| error[..i].ends_with('"') && error[i + subject.len()..].starts_with('"'))
}

/// The template's literal prefix turned into a subscription wildcard, for hints:
/// `bookings.{{ event.source }}.{{ event.kind }}` -> `bookings.>`.
fn wildcard_of(subject: &str) -> String {
    if !subject.contains("{{") {
        return subject.to_string();
    }
    let literal = subject.split("{{").next().unwrap_or("");
    let tokens: Vec<&str> = literal.split('.').collect();
    let fixed = &tokens[..tokens.len().saturating_sub(1)];
    if fixed.is_empty() || fixed.iter().any(|t| t.is_empty()) {
        ">".into()
    } else {
        format!("{}.>", fixed.join("."))
    }
}

/// The v2 body: the endpoint's template, else its preset (the same bodies HTTP endpoints send).
fn body(
    ep: &EndpointConfig,
    event: &Event,
    attempt: u32,
    now: DateTime<Utc>,
) -> Result<Vec<u8>, String> {
    match &ep.body {
        Some(_) => serde_json::to_vec(&v2_body(ep, event, attempt, now)?)
            .map_err(|e| format!("endpoints.{}.body: cannot serialise: {e}", ep.name)),
        None => presets::to_vec(ep.preset, event, attempt)
            .map_err(|e| format!("endpoints.{}: {e}", ep.name)),
    }
}

/// The endpoint's static headers, `Nats-Msg-Id` (the event id: JetStream drops a second copy
/// within the stream's duplicate window), `Nats-Expected-Stream`, the Standard Webhooks set
/// and the content type.
fn headers(
    ep: &EndpointConfig,
    stream: Option<&str>,
    event: &Event,
    ts: i64,
    body: &[u8],
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (k, v) in &ep.headers {
        if let (Ok(n), Ok(v)) = (k.parse::<HeaderName>(), v.parse::<HeaderValue>()) {
            headers.insert(n, v);
        }
    }
    // The names are constants (no parse per publish); the values are checked.
    let mut put = |name: HeaderName, value: &str| {
        if let Ok(v) = value.parse::<HeaderValue>() {
            headers.insert(name, v);
        }
    };
    put(HeaderName::from_static("Nats-Msg-Id"), &event.id);
    if let Some(s) = stream {
        put(HeaderName::from_static("Nats-Expected-Stream"), s);
    }
    put(HeaderName::from_static("webhook-id"), &event.id);
    put(
        HeaderName::from_static("webhook-timestamp"),
        &ts.to_string(),
    );
    if !ep.keys.is_empty() {
        put(
            HeaderName::from_static("webhook-signature"),
            &signing::sign(&ep.keys, &event.id, ts, body),
        );
    }
    put(HeaderName::from_static("content-type"), "application/json");
    headers
}

/// Why start-up (or a reload) cannot go on: NATS endpoints whose `stream` does not exist.
/// Each problem names the key, the stream, the server and how to create it.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct PreflightError {
    /// One line per endpoint that failed the check.
    pub problems: Vec<String>,
}

/// Checks every enabled NATS endpoint of `endpoints` at start-up (see [`NatsTransport::check`])
/// with a connection of its own. Returns the warnings to log (a server that cannot be reached
/// now, a duplicate window shorter than the retry schedule).
pub async fn preflight(endpoints: &[EndpointConfig]) -> Result<Vec<String>, PreflightError> {
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    for ep in endpoints {
        let Some(cfg) = &ep.nats else { continue };
        if !ep.enabled {
            continue;
        }
        let t = NatsTransport::new(ep, cfg);
        match t.check(ep).await {
            Ok(w) => warnings.extend(w),
            Err(e) => problems.push(e),
        }
        if let Some(c) = t.conn.get() {
            let _ = c.client.drain().await;
        }
    }
    if problems.is_empty() {
        Ok(warnings)
    } else {
        Err(PreflightError { problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::outbox::{Booking, EventKind};
    use serde_json::json;

    #[test]
    fn a_refusal_names_the_subject_in_quotes() {
        let e = "Permissions Violation for Publish to \"bookings.a.new\"";
        assert!(quotes(e, "bookings.a.new"));
        assert!(!quotes(e, "bookings.a"));
        assert!(!quotes(e, "a.new"));
        assert!(!quotes(
            "Permissions Violation for Publish to bookings.a.new",
            "bookings.a.new"
        ));
        assert!(quotes("\"x\" and \"x.y\"", "x.y"));
    }

    fn endpoint(extra: &str) -> Result<EndpointConfig, String> {
        let text = format!(
            "[sources.hotel]\nurl = \"http://127.0.0.1:1/\"\nevery = \"1m\"\n[endpoints.bus]\n{extra}\n"
        );
        Config::from_toml_str(&text, "t.toml")
            .map(|mut c| c.endpoints.remove(0))
            .map_err(|e| e.to_string())
    }

    fn event(source: &str, booking: &str) -> Event {
        Event {
            id: "evt_1".into(),
            seq: 3,
            kind: EventKind::Cancel,
            source: source.into(),
            booking_id: booking.into(),
            detected_ms: 1_700_000_000_000,
            booking: Booking::from_value(json!({"id": booking, "room": "4.b *"})).unwrap(),
            changes: vec![],
            backfill: false,
        }
    }

    fn subject_of(ep: &EndpointConfig, e: &Event) -> Result<String, String> {
        let t = NatsTransport::new(ep, ep.nats.as_ref().unwrap());
        t.subject(&DeliveryContext {
            event: e,
            attempt: 1,
            variables: &ep.variables,
            now: Utc::now(),
        })
    }

    #[test]
    fn subjects_escape_values_so_they_cannot_add_tokens_or_wildcards() {
        let ep = endpoint(
            "type = \"nats\"\nservers = [\"nats://127.0.0.1:4222\"]\nsubject = \"bookings.{{ event.source }}.{{ event.kind }}.{{ booking/room }}.{{ event.booking_id }}\"",
        )
        .unwrap();
        assert_eq!(
            subject_of(&ep, &event("hotel", "12.3 > all")).unwrap(),
            "bookings.hotel.cancel.4%2Eb%20%2A.12%2E3%20%3E%20all"
        );
        // A missing value is an empty one: the token is `_`, never an empty token.
        let ep =
            endpoint("url = \"nats://127.0.0.1\"\nsubject = \"b.{{ booking/nope }}.x\"").unwrap();
        assert_eq!(subject_of(&ep, &event("hotel", "1")).unwrap(), "b._.x");
        assert_eq!(ep.nats.as_ref().unwrap().servers, ["nats://127.0.0.1:4222"]);
    }

    #[test]
    fn nats_endpoints_are_validated_with_the_key_and_what_is_valid() {
        let bad = |extra: &str, key: &str, says: &str| {
            let e = endpoint(extra).unwrap_err();
            assert!(e.contains(key) && e.contains(says), "{extra}\n{e}");
        };
        bad(
            "type = \"nats\"\nsubject = \"a\"",
            "endpoints.bus.servers",
            "nats://127.0.0.1:4222",
        );
        bad(
            "type = \"nats\"\nservers = [\"http://x\"]\nsubject = \"a\"",
            "endpoints.bus.servers[0]",
            "nats://",
        );
        bad(
            "type = \"nats\"\nservers = [\"nats://u:p@x\"]\nsubject = \"a\"",
            "endpoints.bus.servers[0]",
            "auth",
        );
        bad(
            "type = \"nats\"\nservers = [\"nats://x\"]",
            "endpoints.bus.subject",
            "is required",
        );
        bad(
            "type = \"nats\"\nservers = [\"nats://x\"]\nsubject = \"bookings.>\"",
            "endpoints.bus.subject",
            "wildcard",
        );
        bad(
            "type = \"nats\"\nservers = [\"nats://x\"]\nsubject = \"a..{{ event.id }}\"",
            "endpoints.bus.subject",
            "empty token",
        );
        bad(
            "type = \"nats\"\nservers = [\"nats://x\"]\nsubject = \"a.{{ event.nope }}\"",
            "endpoints.bus.subject",
            "event.kind",
        );
        bad(
            "type = \"nats\"\nservers = [\"nats://x\"]\nsubject = \"a\"\nmethod = \"PUT\"",
            "endpoints.bus.method",
            "HTTP endpoints",
        );
        bad(
            "type = \"nats\"\nservers = [\"nats://x\"]\nsubject = \"a\"\nformat = \"v1\"",
            "endpoints.bus.format",
            "v2",
        );
        bad(
            "type = \"nats\"\nservers = [\"nats://x\"]\nsubject = \"a\"\nstream = \"a.b\"",
            "endpoints.bus.stream",
            "BOOKINGS",
        );
        bad(
            "type = \"nats\"\nservers = [\"nats://x\"]\nsubject = \"a\"\nauth = { type = \"bearer\", secret = { env = \"PATH\" } }",
            "endpoints.bus.auth.type",
            "user_password",
        );
        bad(
            "type = \"nats\"\nservers = [\"nats://x\"]\nsubject = \"a\"\nauth = { type = \"token\" }",
            "endpoints.bus.auth.secret",
            "is required",
        );
        bad(
            "type = \"nats\"\nservers = [\"nats://x\"]\nsubject = \"a\"\nauth = { type = \"nkey\", secret = { env = \"PATH\" } }",
            "endpoints.bus.auth.secret",
            "NKey",
        );
        bad(
            "type = \"smtp\"\nurl = \"http://x/\"",
            "endpoints.bus.type",
            "\"nats\"",
        );
        bad(
            "url = \"http://x/\"\nsubject = \"a\"",
            "endpoints.bus.subject",
            "NATS endpoints only",
        );
        bad(
            "type = \"http\"\nurl = \"nats://x\"",
            "endpoints.bus.url",
            "type = \"nats\"",
        );
        let ok = endpoint("type = \"nats\"\nservers = [\"tls://a:1\", \"nats://b\"]\nsubject = \"a.{{ event.kind }}\"\nstream = \"BOOKINGS\"\npreset = \"zenoti\"").unwrap();
        let n = ok.nats.unwrap();
        assert_eq!(n.servers, ["tls://a:1", "nats://b:4222"]);
        assert!(n.tls_required, "a tls:// server means TLS");
        assert_eq!(n.stream.as_deref(), Some("BOOKINGS"));
        assert_eq!(ok.preset, crate::config::BodyPreset::Zenoti);
    }

    #[test]
    fn creds_files_load_with_or_without_the_closing_asterisks() {
        let dir = tempfile::tempdir().unwrap();
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let blocks = format!(
            "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.c2ln\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        let nsc =
            format!("{blocks}\n*************************************************************\n");
        for (name, text) in [
            ("nsc", nsc),
            ("blocks", blocks.clone()),
            ("no-eol", blocks.trim_end().to_string()),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let ep = endpoint(&format!(
                "url = \"nats://x\"\nsubject = \"a\"\nauth = {{ type = \"creds\", secret = {{ file = {:?} }} }}",
                path.display().to_string()
            ))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let t = NatsTransport::new(&ep, ep.nats.as_ref().unwrap());
            assert!(t.options().is_ok(), "{name}");
        }
    }

    #[test]
    fn headers_carry_the_msg_id_and_the_standard_webhooks_set() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let ep = endpoint(&format!(
            "url = \"nats://x\"\nsubject = \"a\"\nstream = \"S\"\nheaders = {{ x-tenant = \"t1\" }}\nsecrets = [{{ file = {:?} }}]",
            secret.display().to_string()
        ))
        .unwrap();
        let e = event("hotel", "1");
        let body = body(&ep, &e, 1, Utc::now()).unwrap();
        let h = headers(&ep, Some("S"), &e, 1_700_000_000, &body);
        let get = |n: &str| h.get(n).map(|v| v.as_str().to_string());
        assert_eq!(get("Nats-Msg-Id").as_deref(), Some("evt_1"));
        assert_eq!(get("Nats-Expected-Stream").as_deref(), Some("S"));
        assert_eq!(get("webhook-id").as_deref(), Some("evt_1"));
        assert_eq!(get("webhook-timestamp").as_deref(), Some("1700000000"));
        assert_eq!(get("x-tenant").as_deref(), Some("t1"));
        assert_eq!(
            get("webhook-signature"),
            Some(signing::sign(&ep.keys, "evt_1", 1_700_000_000, &body))
        );
    }

    #[test]
    fn hints_turn_the_literal_prefix_into_a_wildcard() {
        assert_eq!(
            wildcard_of("bookings.{{ event.source }}.{{ event.kind }}"),
            "bookings.>"
        );
        assert_eq!(wildcard_of("a.b.c{{ event.kind }}"), "a.b.>");
        assert_eq!(wildcard_of("{{ event.kind }}"), ">");
        assert_eq!(wildcard_of("fixed.subject"), "fixed.subject");
    }
}
