//! `/metrics`: the exposition parses with an independent parser, every family is declared once
//! with the type the README gives, the new families (poll duration and delivery latency
//! histograms, build info, oldest pending delivery age) are there, and a source that never
//! succeeded reports a last success of 0.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_parse::{LineInfo, SampleType, Scrape, Value};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

async fn scrape(addr: std::net::SocketAddr) -> String {
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text().await.unwrap()
}

/// Checks the text format line by line (every line a HELP, a TYPE or a sample the parser
/// understands; each family declared once, HELP then TYPE, before its samples; histogram
/// buckets cumulative up to `+Inf` = `_count`) and returns each family's type.
fn structure(text: &str) -> BTreeMap<String, SampleType> {
    let mut types: BTreeMap<String, SampleType> = BTreeMap::new();
    let mut helped = std::collections::BTreeSet::new();
    let mut buckets: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    assert!(
        text.ends_with('\n'),
        "the exposition ends with a line break"
    );
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { metric_name, .. } => {
                assert!(helped.insert(metric_name.to_string()), "HELP twice: {line}");
            }
            LineInfo::Type {
                metric_name,
                metric_alias,
                sample_type,
            } => {
                let name = metric_alias.unwrap_or(metric_name);
                assert!(helped.contains(&name), "TYPE before HELP: {line}");
                assert!(
                    types.insert(name.clone(), sample_type).is_none(),
                    "TYPE twice: {line}"
                );
            }
            LineInfo::Sample {
                metric_name,
                labels,
                value,
                ..
            } => {
                let family = types
                    .keys()
                    .find(|f| {
                        let t = types[*f];
                        metric_name == f.as_str()
                            || (t == SampleType::Histogram
                                && ["_bucket", "_sum", "_count"]
                                    .iter()
                                    .any(|s| metric_name == format!("{f}{s}")))
                    })
                    .unwrap_or_else(|| panic!("a sample of no declared family: {line}"))
                    .clone();
                let v: f64 = value
                    .parse()
                    .unwrap_or_else(|_| panic!("not a number: {line}"));
                if types[&family] == SampleType::Counter {
                    assert!(metric_name.ends_with("_total"), "{line}");
                    assert!(v >= 0.0 && v.fract() == 0.0, "{line}");
                }
                let labels = labels.unwrap_or("");
                let series = labels
                    .split(',')
                    .filter(|l| !l.starts_with("le="))
                    .collect::<Vec<_>>()
                    .join(",");
                let key = format!("{family}{{{series}}}");
                if metric_name.ends_with("_bucket") {
                    let le = labels
                        .split(',')
                        .find_map(|l| l.strip_prefix("le=\""))
                        .map(|l| l.trim_end_matches('"'))
                        .unwrap_or_else(|| panic!("a bucket without le: {line}"));
                    let le: f64 = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap()
                    };
                    let (prev_le, prev_n) = buckets.get(&key).copied().unwrap_or((f64::MIN, 0));
                    assert!(le > prev_le, "buckets in order: {line}");
                    assert!(v as u64 >= prev_n, "buckets are cumulative: {line}");
                    buckets.insert(key, (le, v as u64));
                } else if metric_name.ends_with("_count") {
                    counts.insert(key, v as u64);
                }
            }
            LineInfo::Empty | LineInfo::Ignored => panic!("not Prometheus text format: {line:?}"),
        }
    }
    for (series, (le, n)) in &buckets {
        assert_eq!(*le, f64::INFINITY, "{series} ends with le=\"+Inf\"");
        assert_eq!(
            counts.get(series),
            Some(n),
            "{series}: +Inf bucket = _count"
        );
    }
    types
}

fn sample<'a>(scrape: &'a Scrape, name: &str, label: (&str, &str)) -> &'a Value {
    &scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
        .unwrap_or_else(|| panic!("no {name}{{{}={}}}", label.0, label.1))
        .value
}

fn histogram_count(v: &Value) -> f64 {
    match v {
        Value::Histogram(b) => b
            .iter()
            .find(|c| c.less_than == f64::INFINITY)
            .map(|c| c.count)
            .expect("+Inf bucket"),
        other => panic!("not a histogram: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_parse_and_expose_every_family_with_its_type() {
    let t = spawn_app(Options::default()).await;
    let cancel = CancellationToken::new();
    let addr = start_admin(&t.app, &cancel).await;
    t.poll().await;
    t.sim.create_booking();
    t.poll().await;
    t.deliver().await;
    t.sim.create_booking();
    t.poll().await; // one delivery left pending

    let text = scrape(addr).await;
    let types = structure(&text);
    use SampleType::*;
    for (family, ty) in [
        ("pollhook_events_stored", Gauge),
        ("pollhook_deliveries_pending", Gauge),
        ("pollhook_deliveries_due_heads", Gauge),
        ("pollhook_dead_letters", Gauge),
        ("pollhook_source_polls_total", Counter),
        ("pollhook_source_poll_failures_total", Counter),
        ("pollhook_events_detected_total", Counter),
        ("pollhook_source_last_success_timestamp_seconds", Gauge),
        ("pollhook_endpoint_failing", Gauge),
        ("pollhook_endpoint_disabled", Gauge),
        ("pollhook_deliveries_total", Counter),
        ("pollhook_oldest_pending_delivery_age_seconds", Gauge),
        ("pollhook_source_poll_duration_seconds", Histogram),
        ("pollhook_delivery_latency_seconds", Histogram),
        ("pollhook_build_info", Gauge),
    ] {
        assert_eq!(types.get(family), Some(&ty), "{family} in\n{text}");
    }
    assert_eq!(types.len(), 15, "every family is in the README: {types:?}");

    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert_eq!(
        histogram_count(sample(
            &parsed,
            "pollhook_source_poll_duration_seconds",
            ("source", "hotel")
        )),
        3.0
    );
    assert_eq!(
        histogram_count(sample(
            &parsed,
            "pollhook_delivery_latency_seconds",
            ("endpoint", "crm")
        )),
        1.0
    );
    assert_eq!(
        sample(
            &parsed,
            "pollhook_build_info",
            ("version", env!("CARGO_PKG_VERSION"))
        ),
        &Value::Gauge(1.0)
    );
    assert_eq!(
        sample(
            &parsed,
            "pollhook_deliveries_total",
            ("outcome", "delivered")
        ),
        &Value::Counter(1.0)
    );
    assert_eq!(
        sample(&parsed, "pollhook_source_polls_total", ("source", "hotel")),
        &Value::Counter(3.0)
    );
    let Value::Gauge(age) = sample(
        &parsed,
        "pollhook_oldest_pending_delivery_age_seconds",
        ("endpoint", "crm"),
    ) else {
        panic!("age is a gauge")
    };
    assert!((0.0..60.0).contains(age), "{age}");
    let Value::Gauge(last) = sample(
        &parsed,
        "pollhook_source_last_success_timestamp_seconds",
        ("source", "hotel"),
    ) else {
        panic!("last success is a gauge")
    };
    assert!((*last - (now_ms() / 1000) as f64).abs() < 60.0, "{last}");
}

#[tokio::test]
async fn the_oldest_pending_delivery_age_follows_the_queue() {
    let t = spawn_app(Options::default()).await;
    let cancel = CancellationToken::new();
    let addr = start_admin(&t.app, &cancel).await;
    let age = |text: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("pollhook_oldest_pending_delivery_age_seconds{endpoint=\"crm\"} ")
            })
            .unwrap_or_else(|| panic!("no age in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(
        age(&scrape(addr).await),
        0.0,
        "exported before anything is pending"
    );
    t.poll().await;
    t.sim.create_booking();
    t.poll().await;
    // The receiver is down: the delivery waits.
    t.receiver.fail_next(1, 503);
    t.app.deliver_due().await.unwrap();
    t.app.clock().advance(Duration::from_secs(2 * 3600));
    let waited = age(&scrape(addr).await);
    assert!((7200.0..7260.0).contains(&waited), "{waited}");
    t.deliver().await;
    assert_eq!(t.accepted().len(), 1);
    assert_eq!(age(&scrape(addr).await), 0.0, "nothing pending");
}

#[tokio::test]
async fn a_source_that_never_succeeded_reports_a_last_success_of_zero() {
    let t = spawn_app(Options::default()).await;
    let cancel = CancellationToken::new();
    let addr = start_admin(&t.app, &cancel).await;
    let text = scrape(addr).await;
    assert!(
        text.contains("pollhook_source_last_success_timestamp_seconds{source=\"hotel\"} 0\n"),
        "exported from start-up:\n{text}"
    );
    t.sim.fail_next(10, 500);
    assert!(t.app.poll_now("hotel").await.is_err());
    let text = scrape(addr).await;
    for line in [
        "pollhook_source_last_success_timestamp_seconds{source=\"hotel\"} 0\n",
        "pollhook_source_poll_failures_total{source=\"hotel\"} 1\n",
        "pollhook_source_polls_total{source=\"hotel\"} 0\n",
        "pollhook_source_poll_duration_seconds_count{source=\"hotel\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    // So the README's alert fires for it.
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let last = sample(
        &parsed,
        "pollhook_source_last_success_timestamp_seconds",
        ("source", "hotel"),
    );
    assert_eq!(last, &Value::Gauge(0.0));
}
