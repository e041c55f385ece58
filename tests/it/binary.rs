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
async fn daemon_setup(
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

struct Daemon(std::process::Child);

impl Daemon {
    fn start(config: &std::path::Path, log: &std::path::Path) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = pollhook()
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon(child)
    }

    fn kill9(&mut self) {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_talk_to_the_running_daemon() {
    let port = free_port();
    let admin = format!("http://127.0.0.1:{port}");
    let (sim, receiver, _dir, _toml, config, log) = daemon_setup(Options::default(), |t| {
        t.replace(
            "listen = \"off\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
    })
    .await;
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let _daemon = Daemon::start(&config, &log);
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
