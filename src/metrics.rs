//! The metrics recorded as things happen, shared by whoever records them and the exposition:
//! poll-duration, delivery-latency and ping-to-commit histograms, ping counts and the build info. [`Metrics`] is the one
//! handle; `app` records poll durations, `delivery` records each attempt's latency through a
//! [`Recorder`] it is handed, and `admin` registers everything into the `/metrics` registry.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// A metric's labels: name and value pairs.
type Labels = Vec<(&'static str, String)>;

type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Poll-duration buckets: 50 ms to about 100 s (a paged full sync of a slow API).
fn poll_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

/// Delivery-latency buckets: 5 ms to about 20 s (beyond the default 15 s timeout).
fn delivery_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// Ping-to-commit buckets: 1 ms to about 16 s.
fn ping_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The shared metrics of one pollhook instance. Cheap to clone (the histograms are shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    poll_duration: Histograms,
    delivery_latency: Histograms,
    ping_to_commit: Histograms,
    pings: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty histograms.
    pub fn new() -> Metrics {
        Metrics {
            poll_duration: Family::new_with_constructor(poll_buckets),
            delivery_latency: Family::new_with_constructor(delivery_buckets),
            ping_to_commit: Family::new_with_constructor(ping_buckets),
            pings: Family::default(),
        }
    }

    /// Where the polls of `source` record their duration (the series exists from now on, so
    /// it is exported with a zero count before the first poll).
    pub fn poll_duration(&self, source: &str) -> Recorder {
        Recorder(
            self.poll_duration
                .get_or_create(&vec![("source", source.to_string())])
                .clone(),
        )
    }

    /// Where the attempts to `endpoint` record their latency (exported from now on).
    pub fn delivery_latency(&self, endpoint: &str) -> Recorder {
        Recorder(
            self.delivery_latency
                .get_or_create(&vec![("endpoint", endpoint.to_string())])
                .clone(),
        )
    }

    /// Where the refreshes of `source` record how long after its ping a booking was committed.
    pub fn ping_to_commit(&self, source: &str) -> Recorder {
        Recorder(
            self.ping_to_commit
                .get_or_create(&vec![("source", source.to_string())])
                .clone(),
        )
    }

    /// Counts `n` pings of `source` by what became of them: `recorded`, `coalesced`, `dropped`,
    /// `rejected_auth`, `rejected_bad_request`, `rejected_backlog`, `rate_limited`.
    pub fn pings(&self, source: &str, outcome: &'static str, n: u64) {
        self.pings
            .get_or_create(&vec![
                ("source", source.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc_by(n);
    }

    /// Adds the histograms and `pollhook_build_info` to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "pollhook_source_poll_duration",
            "How long each poll took (App::poll_now), committed or failed",
            Unit::Seconds,
            self.poll_duration.clone(),
        );
        registry.register_with_unit(
            "pollhook_delivery_latency",
            "How long each delivery attempt's request took, from sending to the end of the answer (or the error)",
            Unit::Seconds,
            self.delivery_latency.clone(),
        );
        registry.register_with_unit(
            "pollhook_ping_to_commit",
            "How long after its earliest ping a looked-up booking was committed",
            Unit::Seconds,
            self.ping_to_commit.clone(),
        );
        registry.register(
            "pollhook_pings",
            "Pings received on the ingress listener, by source and outcome (recorded, coalesced into a waiting lookup, dropped after failed lookups, rejected)",
            self.pings.clone(),
        );
        registry.register(
            "pollhook_build",
            "The running release (always 1)",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
    }
}

/// One series of a histogram, for the code that times something. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Recorder(Histogram);

impl Recorder {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}
