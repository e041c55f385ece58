//! The real binary: `check` on good and broken configs, and a kill -9 of `run` mid-delivery.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::*;

fn pollhook() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pollhook"))
}

/// `pollhook check --config PATH`: exit code and stderr.
fn check(path: &std::path::Path) -> (Option<i32>, String) {
    let out = pollhook()
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_accepts_the_shipped_example() {
    let out = pollhook()
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"),
        ])
        .env("HOTEL_API_TOKEN", "t0ken")
        .env("CRM_WEBHOOK_SECRET", SECRET)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn check_names_every_broken_key_and_what_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "bad.toml",
        r#"
[sources.hotel]
url = "http://127.0.0.1:1/b"
cron = "0 9 * * 8"
[endpoints.crm]
url = "http://127.0.0.1:1/h"
format = "v9"
timeout = "soon"
"#,
    );
    let (code, err) = check(&path);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("sources.hotel.cron"), "{err}");
    assert!(err.contains("endpoints.crm.format"), "{err}");
    assert!(err.contains("\"v1\""), "{err}");
    assert!(err.contains("endpoints.crm.timeout"), "{err}");
    assert!(err.contains("\"30s\""), "{err}");
}

#[test]
fn check_reports_unknown_keys_syntax_errors_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = write(
        &dir,
        "u.toml",
        "[sources.hotel]\nurl = \"http://x/\"\nevery = \"1m\"\nintervall = 3\n",
    );
    let (code, err) = check(&unknown);
    assert_eq!(code, Some(2));
    assert!(err.contains("sources.hotel.intervall"), "{err}");
    assert!(err.contains("unknown field"), "{err}");

    let syntax = write(&dir, "s.toml", "[sources.hotel\nurl = 1\n");
    let (code, err) = check(&syntax);
    assert_eq!(code, Some(2));
    assert!(err.contains("line 1"), "{err}");

    let (code, err) = check(std::path::Path::new("/nonexistent/p.toml"));
    assert_ne!(code, Some(0));
    assert!(err.contains("/nonexistent/p.toml"), "{err}");
}

#[test]
fn environment_overrides_are_validated_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "c.toml",
        "[sources.hotel]\nurl = \"http://127.0.0.1:1/b\"\nevery = \"1m\"\n",
    );
    assert_eq!(check(&path).0, Some(0));
    let out = pollhook()
        .args(["check", "--config"])
        .arg(&path)
        .env("POLLHOOK_SOURCES__HOTEL__EVERY", "0s")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("sources.hotel.every"), "{err}");
}

/// What a daemon test starts from: the simulator, the receiver, the temp dir, the config text
/// (polling every second, `tweak` applied), the config file and the daemon's log file. No app runs
/// in this process: the daemon under test owns the state file.
pub(crate) async fn daemon_setup(
    opts: Options,
    tweak: impl Fn(String) -> String,
) -> (
    pollhook::demo::simulator::Simulator,
    pollhook::demo::receiver::Receiver,
    tempfile::TempDir,
    String,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let TestApp {
        app,
        sim,
        receiver,
        dir,
        toml,
    } = spawn_app(opts).await;
    drop(app);
    let toml = tweak(toml.replace("every = \"1h\"", "every = \"1s\""));
    let config = write(&dir, "pollhook.toml", &toml);
    let log = dir.path().join("daemon.log");
    (sim, receiver, dir, toml, config, log)
}

pub(crate) struct Daemon(std::process::Child);

impl Daemon {
    pub(crate) fn start(config: &std::path::Path, log: &std::path::Path) -> Daemon {
        Daemon::start_with_env(config, log, &[])
    }

    /// [`Daemon::start`] with extra environment variables (`NOTIFY_SOCKET`, `WATCHDOG_USEC`).
    fn start_with_env(
        config: &std::path::Path,
        log: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = pollhook()
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon(child)
    }

    pub(crate) fn kill9(&mut self) {
        // Child::kill sends SIGKILL on Unix: no chance to clean up.
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_loses_nothing_and_detects_nothing_twice() {
    let opts = Options {
        initial_bookings: 4,
        page_size: 2,
        ..Options::default()
    };
    let (sim, receiver, _dir, _toml, config, log) = daemon_setup(opts, |t| t).await;
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let mut daemon = Daemon::start(&config, &log);
    // Two full polls (2 pages each) means the baseline is committed.
    wait_until("baseline", Duration::from_secs(20), || sim.requests() >= 6).await;

    let existing: Vec<u64> = sim
        .bookings()
        .iter()
        .map(|b| b["id"].as_u64().unwrap())
        .collect();
    // Slow receiver: the deliveries are still in flight when the process dies.
    receiver.delay_next(3, Duration::from_secs(2));
    let fresh = sim.create_booking();
    sim.modify_booking(existing[0]);
    sim.cancel_booking(existing[1]);
    wait_until("detection", Duration::from_secs(20), || {
        show_log().matches("change detected").count() >= 3
    })
    .await;
    daemon.kill9();
    assert!(
        receiver.accepted().is_empty(),
        "killed before any delivery was acknowledged"
    );

    // A change while the daemon is down.
    sim.modify_booking(fresh);

    let _daemon = Daemon::start(&config, &log);
    let distinct = |rx: &pollhook::demo::receiver::Receiver| {
        let mut ids: Vec<String> = rx
            .accepted()
            .iter()
            .map(|r| r.header("webhook-id").unwrap().to_string())
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    let wait_for = |n: usize| {
        let receiver = receiver.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(30), async {
                while distinct(&receiver) < n {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
            .is_ok()
        }
    };
    // new of `fresh`, modify of existing[0], cancel of existing[1], then the modify made while down.
    assert!(
        wait_for(4).await,
        "only {} of 4 events arrived\n{}",
        distinct(&receiver),
        show_log()
    );
    sim.cancel_booking(fresh);
    assert!(
        wait_for(5).await,
        "only {} of 5 events arrived\n{}",
        distinct(&receiver),
        show_log()
    );
    // A few more poll cycles: nothing further is invented.
    let polls = sim.requests();
    wait_until("three more polls", Duration::from_secs(20), || {
        sim.requests() >= polls + 9
    })
    .await;
    assert_eq!(distinct(&receiver), 5, "{}", show_log());

    // First arrival of each event id, in order.
    let mut seen = std::collections::HashSet::new();
    let mut firsts = Vec::new();
    for r in receiver.accepted() {
        assert_eq!(r.signature_valid, Some(true));
        if seen.insert(r.header("webhook-id").unwrap().to_string()) {
            firsts.push(r.json().unwrap());
        }
    }
    let statuses_of = |id: u64| -> Vec<String> {
        firsts
            .iter()
            .filter(|j| j["booking_id"].as_str() == Some(id.to_string().as_str()))
            .map(|j| j["status"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        statuses_of(fresh),
        ["new", "modify", "cancel"],
        "{}",
        show_log()
    );
    assert_eq!(statuses_of(existing[0]), ["modify"]);
    assert_eq!(statuses_of(existing[1]), ["cancel"]);
}

fn hup(d: &Daemon) {
    let ok = Command::new("kill")
        .args(["-HUP", &d.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rejects_a_broken_config_and_applies_a_good_one() {
    let (sim, receiver, dir, toml, config, log) = daemon_setup(Options::default(), |t| t).await;
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut daemon = Daemon::start(&config, &log);
    wait_until("baseline", Duration::from_secs(20), || sim.requests() >= 4).await;

    // A broken config is refused; the daemon keeps running the old one.
    write(
        &dir,
        "pollhook.toml",
        &toml.replace("format = \"v2\"", "format = \"v7\""),
    );
    hup(&daemon);
    wait_until("rejection", Duration::from_secs(10), || {
        show_log().contains("reload rejected")
    })
    .await;
    assert!(
        show_log().contains("endpoints.crm.format"),
        "{}",
        show_log()
    );
    sim.create_booking();
    let got = receiver.wait_for_accepted(1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1, "{}", show_log());
    assert_eq!(got[0].path, "/crm");
    assert!(daemon.0.try_wait().unwrap().is_none(), "still running");

    // A good one takes effect: deliveries now go to the new path.
    write(&dir, "pollhook.toml", &toml.replace("/crm\"", "/crm-v2\""));
    hup(&daemon);
    wait_until("reload", Duration::from_secs(10), || {
        show_log().contains("configuration reloaded")
    })
    .await;
    sim.create_booking();
    let got = receiver.wait_for_accepted(2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2, "{}", show_log());
    assert_eq!(got[1].path, "/crm-v2");
    daemon.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_daemon_cleanly() {
    let (sim, _receiver, _dir, _toml, config, log) = daemon_setup(Options::default(), |t| t).await;
    let mut daemon = Daemon::start(&config, &log);
    wait_until("first poll", Duration::from_secs(20), || {
        sim.requests() >= 2
    })
    .await;
    let ok = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("SIGTERM received") && log.contains("stopped"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probe_shows_what_pollhook_understood_without_committing() {
    let t = spawn_app(Options {
        initial_bookings: 5,
        page_size: 2,
        ..Options::default()
    })
    .await;
    let TestApp {
        app,
        sim,
        dir,
        toml,
        ..
    } = t;
    drop(app);
    let ids: Vec<u64> = sim
        .bookings()
        .iter()
        .map(|b| b["id"].as_u64().unwrap())
        .collect();
    sim.cancel_booking(ids[1]);
    let state = dir.path().join("probe-state.redb");
    let toml = toml.replace(
        &dir.path().join("state.redb").display().to_string(),
        &state.display().to_string(),
    );
    let config = write(&dir, "pollhook.toml", &toml);
    let out = tokio::task::spawn_blocking(move || {
        pollhook()
            .args(["check", "--probe", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 page(s), 5 booking(s)"), "{stdout}");
    assert!(
        stdout.contains(&format!("sample: id \"{}\"", ids[0])),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "cancelled (status in [\"cancelled\", \"canceled\"]): 1, e.g. {}",
            ids[1]
        )),
        "{stdout}"
    );
    assert!(
        !state.exists(),
        "a probe commits nothing, not even a state file"
    );

    // A broken source: the probe says what failed and exits non-zero.
    sim.fail_next(10, 500);
    let config = dir.path().join("pollhook.toml");
    let out = tokio::task::spawn_blocking(move || {
        pollhook()
            .args(["check", "--probe", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAILED: page 1"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The admin address a daemon started with `listen = "127.0.0.1:0"` really bound, from its
/// "admin listener up" log line (the OS picks the port: no port is chosen, freed and raced for).
async fn admin_address(log: &std::path::Path) -> String {
    let mut addr = None;
    wait_until("the admin listener", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        addr = text
            .lines()
            .filter(|l| l.contains("admin listener up"))
            .filter_map(|l| l.split("addr=").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(|a| a.trim_matches('"').to_string())
            .next_back();
        addr.is_some()
    })
    .await;
    format!("http://{}", addr.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_talk_to_the_running_daemon() {
    let (sim, receiver, _dir, _toml, config, log) = daemon_setup(Options::default(), |t| {
        t.replace("listen = \"off\"", "listen = \"127.0.0.1:0\"")
    })
    .await;
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let _daemon = Daemon::start(&config, &log);
    let admin = admin_address(&log).await;
    assert!(!admin.ends_with(":0"), "{admin}");
    wait_until("baseline", Duration::from_secs(20), || sim.requests() >= 4).await;

    let run = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || pollhook().args(&args).output().unwrap())
            .await
            .unwrap()
    };
    // The receiver is gone for good: the endpoint is disabled, events keep queueing.
    receiver.fail_next(1, 410);
    sim.create_booking();
    wait_until("410", Duration::from_secs(20), || {
        show_log().contains("endpoint DISABLED")
    })
    .await;
    sim.create_booking();
    wait_until("second event", Duration::from_secs(20), || {
        show_log().matches("change detected").count() >= 2
    })
    .await;
    let out = run(vec![
        "deliveries".into(),
        "--admin".into(),
        admin.clone(),
        "--state".into(),
        "pending".into(),
    ])
    .await;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    let out = run(vec![
        "enable".into(),
        "crm".into(),
        "--admin".into(),
        admin.clone(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = receiver.wait_for_accepted(2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2, "{}", show_log());

    // Replay one event by id: it arrives again with the same webhook-id.
    let id = got[0].header("webhook-id").unwrap().to_string();
    let out = run(vec![
        "replay".into(),
        "--admin".into(),
        admin.clone(),
        "--event".into(),
        id.clone(),
    ])
    .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"replayed\":1"));
    let got = receiver.wait_for_accepted(3, Duration::from_secs(15)).await;
    assert_eq!(got[2].header("webhook-id"), Some(id.as_str()));

    // A bad request gets a clear error and a non-zero exit.
    let out = run(vec!["replay".into(), "--admin".into(), admin.clone()]).await;
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("say what to replay"));

    // Backfill: every known booking (3 at start, 2 created) once more, marked as a backfill.
    let out = run(vec![
        "backfill".into(),
        "--endpoint".into(),
        "crm".into(),
        "--admin".into(),
        admin.clone(),
    ])
    .await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"endpoint\":\"crm\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = receiver
        .wait_for_accepted(3 + 5, Duration::from_secs(30))
        .await;
    assert_eq!(got.len(), 8, "{}", show_log());
    assert!(
        got[3..]
            .iter()
            .all(|r| r.json().unwrap()["backfill"] == true)
    );
    let out = run(vec![
        "backfill".into(),
        "--endpoint".into(),
        "nope".into(),
        "--admin".into(),
        admin.clone(),
    ])
    .await;
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no endpoint named `nope`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A valid config whose admin listener is on `listen`, with `admin_extra` lines in `[admin]`.
fn admin_config(listen: &str, admin_extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "{listen}"
{admin_extra}
[sources.hotel]
url = "http://127.0.0.1:1/bookings"
every = "30s"
[endpoints.crm]
url = "http://127.0.0.1:2/hook"
"#
    )
}

#[test]
fn check_requires_a_token_for_an_admin_listener_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let open = write(&dir, "open.toml", &admin_config("0.0.0.0:9477", ""));
    let (code, err) = check(&open);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("admin.token"), "{err}");
    assert!(
        err.contains("0.0.0.0:9477") && err.contains("loopback"),
        "{err}"
    );

    let token = write(&dir, "admin-token", "0123456789abcdef0123456789abcdef\n");
    let guarded = write(
        &dir,
        "guarded.toml",
        &admin_config(
            "0.0.0.0:9477",
            &format!("token = {{ file = {:?} }}", token.display().to_string()),
        ),
    );
    let (code, err) = check(&guarded);
    assert_eq!(code, Some(0), "{err}");

    // Loopback needs no token; a short token is refused wherever it listens.
    let (code, err) = check(&write(&dir, "lo.toml", &admin_config("[::1]:9477", "")));
    assert_eq!(code, Some(0), "{err}");
    let short = write(&dir, "short-token", "hunter2\n");
    let weak = write(
        &dir,
        "weak.toml",
        &admin_config(
            "127.0.0.1:9477",
            &format!("token = {{ file = {:?} }}", short.display().to_string()),
        ),
    );
    let (code, err) = check(&weak);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("admin.token") && !err.contains("hunter2"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_send_the_token_and_the_post_header_from_the_config() {
    let token = "c0ffee00c0ffee00c0ffee00c0ffee00";
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, token).unwrap();
    let token_line = format!(
        "token = {{ file = {:?} }}",
        token_file.display().to_string()
    );
    let t = spawn_app(Options {
        admin_extra: token_line.clone(),
        ..Options::default()
    })
    .await;
    t.poll().await;
    t.sim.create_booking();
    t.poll().await;
    t.receiver.fail_next(1, 410);
    t.app.deliver_due().await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let addr = start_admin(&t.app, &cancel).await;

    // The operator's copy of the daemon's configuration. Only [admin] is read: a secret of the
    // daemon's that this shell cannot resolve does not matter.
    let config = write(
        &secrets,
        "pollhook.toml",
        &format!(
            r#"
[admin]
listen = "{addr}"
{token_line}
[sources.hotel]
url = "http://127.0.0.1:1/bookings"
every = "30s"
[endpoints.crm]
url = "http://127.0.0.1:2/hook"
secrets = [{{ env = "POLLHOOK_TEST_SECRET_NOBODY_SET" }}]
"#
        ),
    );
    let run = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || pollhook().args(&args).output().unwrap())
            .await
            .unwrap()
    };
    let cfg = config.display().to_string();
    let out = run(vec!["events".into(), "--config".into(), cfg.clone()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // POSTs: the header and the token go along.
    let out = run(vec![
        "enable".into(),
        "crm".into(),
        "-c".into(),
        cfg.clone(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.app.endpoint_report()[0].disabled.is_none());
    let out = run(vec![
        "replay".into(),
        "--config".into(),
        cfg.clone(),
        "--dead-of".into(),
        "crm".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"replayed\":0"));

    // Without the configuration there is no token: refused, and told why.
    let out = run(vec![
        "events".into(),
        "--admin".into(),
        format!("http://{addr}"),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("--config"), "{err}");
}

/// A service manager's notification socket: a Unix datagram socket in a temp dir that records
/// every message the daemon sends to `NOTIFY_SOCKET`, in order.
struct NotifySocket {
    path: std::path::PathBuf,
    messages: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl NotifySocket {
    fn bind(dir: &std::path::Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (m, st) = (messages.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    m.lock().unwrap().push(text);
                }
            }
        });
        NotifySocket {
            path,
            messages,
            stop,
        }
    }

    fn all(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Every message but the watchdog pings, each as its first line plus any `MONOTONIC_USEC=`.
    fn states(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|m| m != "WATCHDOG=1\n")
            .collect()
    }

    /// How many messages were received after the first one starting with `first`, which
    /// satisfy `f`.
    fn count_after(&self, first: &str, f: impl Fn(&str) -> bool) -> usize {
        let all = self.all();
        match all.iter().position(|m| m.starts_with(first)) {
            Some(i) => all[i + 1..].iter().filter(|m| f(m)).count(),
            None => 0,
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A webhook receiver whose requests the test answers itself: it knows when a delivery is in
/// flight and holds it there as long as it needs to.
struct HeldReceiver(std::net::TcpListener);

impl HeldReceiver {
    fn bind() -> HeldReceiver {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        HeldReceiver(l)
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.0.local_addr().unwrap())
    }

    /// Waits for the next request and reads it whole; the connection is returned unanswered.
    async fn next_request(&self) -> std::net::TcpStream {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            match self.0.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no delivery arrived");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        use std::io::Read;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the connection closed mid-request");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return stream;
                }
            }
        }
    }

    /// Whether another connection is waiting.
    fn has_another(&self) -> bool {
        self.0.accept().is_ok()
    }
}

fn answer_ok(mut stream: std::net::TcpStream) {
    use std::io::Write;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
}

fn send_signal(d: &Daemon, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &d.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// A daemon under a fake service manager (notification socket and a 100 ms watchdog), its one
/// endpoint the held receiver; returns once it said `READY=1`.
async fn notified_daemon() -> (
    pollhook::demo::simulator::Simulator,
    HeldReceiver,
    NotifySocket,
    Daemon,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let held = HeldReceiver::bind();
    let opts = Options {
        endpoints: format!(
            "[endpoints.crm]\nurl = \"{}\"\nsecrets = [{{ file = \"{{SECRET_FILE}}\" }}]\nretry_schedule = [\"0s\", \"5s\"]\njitter = 0.0\n",
            held.url()
        ),
        ..Options::default()
    };
    let (sim, _receiver, dir, _toml, config, log) = daemon_setup(opts, |t| t).await;
    let notify = NotifySocket::bind(dir.path());
    let socket = notify.path.display().to_string();
    let daemon = Daemon::start_with_env(
        &config,
        &log,
        &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "100000")],
    );
    wait_until("READY=1", Duration::from_secs(20), || {
        notify.all().iter().any(|m| m.starts_with("READY=1"))
    })
    .await;
    wait_until("baseline", Duration::from_secs(20), || sim.requests() >= 4).await;
    (sim, held, notify, daemon, dir, log)
}

fn monotonic_usec() -> i128 {
    match sd_notify::NotifyState::monotonic_usec_now().unwrap() {
        sd_notify::NotifyState::MonotonicUsec(u) => u,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_notifies_reloading_then_ready_and_the_watchdog_pings_through_the_drain() {
    let (sim, held, notify, mut daemon, _dir, log) = notified_daemon().await;
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // A delivery in flight, held by the receiver: the reload has to drain it.
    sim.create_booking();
    let in_flight = held.next_request().await;
    let before = monotonic_usec();
    send_signal(&daemon, "-HUP");
    wait_until("RELOADING=1", Duration::from_secs(10), || {
        notify.all().iter().any(|m| m.starts_with("RELOADING=1"))
    })
    .await;
    let after = monotonic_usec();
    // The drain is waiting for the held delivery; the watchdog goes on pinging meanwhile.
    wait_until(
        "watchdog pings during the drain",
        Duration::from_secs(8),
        || notify.count_after("RELOADING=1", |m| m == "WATCHDOG=1\n") >= 2,
    )
    .await;
    assert_eq!(
        notify.count_after("RELOADING=1", |m| m.starts_with("READY=1")),
        0,
        "READY=1 before the drain ended: {:?}",
        notify.all()
    );
    answer_ok(in_flight);
    wait_until("READY=1 after the reload", Duration::from_secs(20), || {
        notify.count_after("RELOADING=1", |m| m.starts_with("READY=1")) == 1
    })
    .await;
    assert!(
        show_log().contains("configuration reloaded"),
        "{}",
        show_log()
    );

    let states = notify.states();
    assert_eq!(states.len(), 3, "{states:?}");
    assert!(states[0].starts_with("READY=1\nSTATUS="), "{states:?}");
    let lines: Vec<&str> = states[1].lines().collect();
    assert_eq!(lines.len(), 2, "{states:?}");
    assert_eq!(lines[0], "RELOADING=1");
    let usec: i128 = lines[1]
        .strip_prefix("MONOTONIC_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC= in {states:?}"));
    assert!(
        before <= usec && usec <= after,
        "MONOTONIC_USEC={usec} is not CLOCK_MONOTONIC at the reload ({before}..{after})"
    );
    assert!(states[2].starts_with("READY=1\nSTATUS="), "{states:?}");
    assert!(
        !notify.all().iter().any(|m| m.contains("STOPPING=1")),
        "a reload is not a stop: {:?}",
        notify.all()
    );

    // A real stop says STOPPING=1, last.
    send_signal(&daemon, "-TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while daemon.0.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let states = notify.states();
    assert_eq!(states.len(), 4, "{states:?}");
    assert_eq!(states[3], "STOPPING=1\n", "{states:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_reload_drain_stops_the_process_without_starting_the_new_round() {
    let (sim, held, notify, mut daemon, _dir, log) = notified_daemon().await;
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    sim.create_booking();
    let in_flight = held.next_request().await;
    send_signal(&daemon, "-HUP");
    wait_until("RELOADING=1", Duration::from_secs(10), || {
        notify.all().iter().any(|m| m.starts_with("RELOADING=1"))
    })
    .await;
    // Mid-drain (the delivery is still held): stop.
    send_signal(&daemon, "-TERM");
    wait_until("STOPPING=1", Duration::from_secs(10), || {
        notify.all().iter().any(|m| m.starts_with("STOPPING=1"))
    })
    .await;
    // The delivery in flight completes within its grace; then the process ends.
    answer_ok(in_flight);
    let deadline =
        std::time::Instant::now() + pollhook::app::SHUTDOWN_GRACE + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after the drain limit\n{}",
            show_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{}", show_log());

    let states = notify.states();
    assert_eq!(states.len(), 3, "{states:?}");
    assert!(states[0].starts_with("READY=1"), "{states:?}");
    assert!(
        states[1].starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{states:?}"
    );
    assert_eq!(states[2], "STOPPING=1\n", "{states:?}");
    assert!(
        !show_log().contains("configuration reloaded"),
        "the new round started: {}",
        show_log()
    );
    assert!(
        !held.has_another(),
        "a delivery was sent again after the stop"
    );
}
