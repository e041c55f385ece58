//! The crash campaign: the real binary, killed with `kill -9` at random instants while bookings
//! keep changing at the simulated API, restarted each time over the same state file. At the end
//! every change must have reached the receiver (each booking's last event shows its last state),
//! no event may show a state the booking never had, each booking's events must arrive in the
//! order its states happened, and an event id must always carry the same event. Polls must still
//! commit although the daemon rarely lives through a whole poll. Both in full mode (every poll
//! reads everything) and in incremental mode (changes since the watermark).
//!
//! `POLLHOOK_CRASH_CYCLES` sets the number of kills per mode (default 25; `scripts/crash-campaign`
//! runs more) and `POLLHOOK_CRASH_SEED` the random seed (default 1).

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pollhook::demo::receiver::Receiver;
use pollhook::demo::simulator::{self as sim, SimConfig, Simulator};
use rand::{RngExt, SeedableRng};
use serde_json::Value;

use crate::helpers::*;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A booking as compared: its document without the timestamps the source moves on its own.
fn state(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(m) = d.as_object_mut() {
        m.remove("modifiedTime");
        m.remove("cancelTime");
    }
    d
}

/// The daemon process under test.
struct Daemon(std::process::Child);

impl Daemon {
    fn start(config: &std::path::Path, log: &std::path::Path) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pollhook"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            // The campaign's own knobs are not configuration: the daemon reads every `POLLHOOK_*`
            // variable as a config override and would refuse to start on these.
            .env_remove("POLLHOOK_CRASH_CYCLES")
            .env_remove("POLLHOOK_CRASH_SEED")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon(child)
    }

    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Full,
    Incremental,
}

fn config(mode: Mode, sim: &Simulator, receiver: &Receiver, dir: &std::path::Path) -> String {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let token = dir.join("refresh-token");
    std::fs::write(&token, sim::BEDS24_REFRESH_TOKEN).unwrap();
    let endpoint = format!(
        r#"
[endpoints.crm]
url = "{url}"
secrets = [{{ file = "{secret}" }}]
retry_schedule = ["0s", "1s", "2s", "4s", "8s", "16s", "30s", "30s", "30s", "30s"]
"#,
        url = receiver.url("/crm"),
        secret = secret.display()
    );
    let store = dir.join("state.redb");
    match mode {
        Mode::Full => format!(
            r#"
[store]
path = "{store}"
[admin]
listen = "off"
[sources.hotel]
url = "{url}"
every = "1s"
items = "/data"
status = "/status"
ignore_fields = ["/modifiedTime"]
retry_backoff = "50ms"
[sources.hotel.pagination]
style = "next_link"
next = "/pages/nextPageLink"
{endpoint}"#,
            store = store.display(),
            url = sim.bookings_url(),
        ),
        Mode::Incremental => format!(
            r#"
[store]
path = "{store}"
[admin]
listen = "off"
[sources.beds24]
url = "{base}/bookings"
every = "1s"
auth = {{ type = "token_refresh", token_url = "{base}/authentication/token", secret = {{ file = "{token}" }} }}
query = {{ status = ["confirmed", "request", "new", "cancelled", "black", "inquiry"] }}
items = "/data"
status = "/status"
ignore_fields = ["/modifiedTime"]
success = {{ pointer = "/success", equals = true }}
sync = "incremental"
retry_backoff = "50ms"
[sources.beds24.pagination]
style = "page"
has_more = "/pages/nextPageExists"
[sources.beds24.incremental]
query = {{ modifiedFrom = "{{{{ watermark | %Y-%m-%dT%H:%M:%S }}}}" }}
watermark = "date_header"
overlap = "5s"
full_every = "1h"
{endpoint}"#,
            store = store.display(),
            base = sim.beds24_v2_base_url(),
            token = token.display(),
        ),
    }
}

/// Per booking changed after the baseline: its state before the first change (none for a booking
/// created after it), then every state it had, in order.
type History = Arc<Mutex<BTreeMap<u64, (Option<Value>, Vec<Value>)>>>;

/// Makes a random change about every 150 ms and records the booking's new state.
async fn keep_changing(
    sim: Simulator,
    history: History,
    seed: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let ids: Vec<u64> = sim
            .bookings()
            .iter()
            .filter_map(|b| b["id"].as_u64())
            .collect();
        let pick = ids[rng.random_range(0..ids.len())];
        let before = sim
            .bookings()
            .into_iter()
            .find(|b| b["id"] == pick)
            .map(|b| state(&b));
        let id = match rng.random_range(0..10) {
            0..=2 => Some(sim.create_booking()),
            3..=7 => sim.modify_booking(pick).then_some(pick),
            8 => sim.cancel_booking(pick).then_some(pick),
            _ => sim.reactivate_booking(pick).then_some(pick),
        };
        if let Some(id) = id
            && let Some(doc) = sim.bookings().into_iter().find(|b| b["id"] == id)
        {
            let mut h = history.lock().unwrap();
            let entry = h
                .entry(id)
                .or_insert_with(|| (if id == pick { before } else { None }, Vec::new()));
            entry.1.push(state(&doc));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
    }
}

/// What the campaign found.
#[derive(Debug, Default)]
struct Findings {
    changes: usize,
    bookings_changed: usize,
    events: usize,
    merged: usize,
    lost: Vec<String>,
    invented: Vec<String>,
    reordered: Vec<String>,
    unstable_ids: Vec<String>,
}

/// Checks the receiver's record against the history of every booking.
fn check(
    history: &BTreeMap<u64, (Option<Value>, Vec<Value>)>,
    receiver: &Receiver,
    finals: &HashMap<u64, Value>,
) -> Findings {
    let mut f = Findings::default();
    let mut by_id: HashMap<String, Value> = HashMap::new();
    let mut per_booking: BTreeMap<u64, Vec<(u64, Value)>> = BTreeMap::new();
    for r in receiver.accepted() {
        assert_eq!(r.signature_valid, Some(true));
        let body = r.json().unwrap();
        let id = r.header("webhook-id").unwrap().to_string();
        match by_id.get(&id) {
            Some(first) if first != &body => f.unstable_ids.push(id),
            Some(_) => {}
            None => {
                let booking: u64 = body["booking_id"].as_str().unwrap().parse().unwrap();
                let seq = body["sequence"].as_u64().unwrap();
                per_booking
                    .entry(booking)
                    .or_default()
                    .push((seq, state(&body["booking"])));
                by_id.insert(id, body);
            }
        }
    }
    f.events = by_id.len();
    f.changes = history.values().map(|(_, s)| s.len()).sum();
    f.bookings_changed = history.len();
    for (booking, (baseline, states)) in history {
        let events = per_booking.get(booking).cloned().unwrap_or_default();
        // Arrival order must be detection order.
        if events.windows(2).any(|w| w[0].0 >= w[1].0) {
            f.reordered
                .push(format!("{booking}: sequences out of order"));
        }
        // Every event is a state the booking had, and they come in the order they happened.
        let mut at = 0;
        for (seq, s) in &events {
            match states[at..].iter().position(|h| h == s) {
                Some(i) => at += i,
                None if states.contains(s) => f
                    .reordered
                    .push(format!("{booking}: event {seq} shows an older state")),
                None => f.invented.push(format!("{booking}: event {seq} shows {s}")),
            }
        }
        f.merged += states.len().saturating_sub(events.len());
        // The last event shows the booking as it is now (without any event it is as the baseline
        // recorded it: its changes came back to where they started).
        let last = events.last().map(|(_, s)| s).or(baseline.as_ref());
        if last != finals.get(booking) {
            f.lost.push(format!(
                "{booking}: last event {last:?}, now {:?}",
                finals.get(booking)
            ));
        }
    }
    for booking in per_booking.keys() {
        if !history.contains_key(booking) {
            f.invented.push(format!(
                "{booking}: events for a booking that never changed"
            ));
        }
    }
    f
}

async fn campaign(mode: Mode) {
    let cycles = env_or("POLLHOOK_CRASH_CYCLES", 25);
    let seed = env_or("POLLHOOK_CRASH_SEED", 1);
    let sim = Simulator::start(SimConfig {
        page_size: 4,
        initial_bookings: 12,
        pace: None,
        seed,
    })
    .await
    .unwrap();
    sim.set_vendor_page_size(4);
    // Beds24's credit budget refills to 100 every five minutes, which a campaign longer than
    // that would exhaust (and then wait out the 429's `Retry-After` of up to five minutes): keep
    // it topped up, the campaign is about crashes, not about throttling.
    let credits = {
        let sim = sim.clone();
        tokio::spawn(async move {
            loop {
                sim.set_credits(1_000_000_000);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let receiver = Receiver::start(vec![secret_key()]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pollhook.toml");
    std::fs::write(&path, config(mode, &sim, &receiver, dir.path())).unwrap();
    let log = dir.path().join("daemon.log");
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let mut daemon = Daemon::start(&path, &log);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !show_log().contains("baseline recorded") {
        assert!(
            std::time::Instant::now() < deadline,
            "no baseline within 30 s; the daemon's log:\n{}",
            show_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let history: History = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let changer = tokio::spawn(keep_changing(
        sim.clone(),
        history.clone(),
        seed,
        stop.clone(),
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let committed_before = show_log().matches("poll committed").count();
    for _ in 0..cycles {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..2000))).await;
        daemon.kill9();
        daemon = Daemon::start(&path, &log);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    changer.await.unwrap();
    let committed = show_log().matches("poll committed").count() - committed_before;

    // Let the last changes through, then compare.
    let finals = || -> HashMap<u64, Value> {
        sim.bookings()
            .iter()
            .map(|b| (b["id"].as_u64().unwrap(), state(b)))
            .collect()
    };
    let history = history.lock().unwrap().clone();
    let settled = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            if check(&history, &receiver, &finals()).lost.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .is_ok();
    drop(daemon);
    credits.abort();
    let f = check(&history, &receiver, &finals());
    println!(
        "crash campaign ({mode:?}): {cycles} kills, {} changes to {} bookings, {} events, {} intermediate states merged into later ones, {committed} polls committed while killing; lost {}, invented {}, reordered {}, unstable ids {}",
        f.changes,
        f.bookings_changed,
        f.events,
        f.merged,
        f.lost.len(),
        f.invented.len(),
        f.reordered.len(),
        f.unstable_ids.len()
    );
    let tail: String = show_log()
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(settled, "not every change arrived: {:?}\n{tail}", f.lost);
    assert!(f.lost.is_empty(), "lost: {:?}", f.lost);
    assert!(f.invented.is_empty(), "invented: {:?}", f.invented);
    assert!(f.reordered.is_empty(), "reordered: {:?}", f.reordered);
    assert!(
        f.unstable_ids.is_empty(),
        "unstable ids: {:?}",
        f.unstable_ids
    );
    assert!(
        committed > 0,
        "no poll committed while being killed\n{tail}"
    );
    assert!(f.events > 0 && f.changes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_campaign_full_polls() {
    campaign(Mode::Full).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_campaign_incremental_polls() {
    campaign(Mode::Incremental).await;
}
