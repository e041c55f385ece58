//! The state file itself: what is refused at open (an empty file, a file that is not redb,
//! another program's database, a damaged file), its mode, why an open failed, `check --store`,
//! and what a corrupt file does to readiness.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pollhook::App;
use pollhook::app::AppError;
use pollhook::config::Config;
use pollhook::store::StoreError;

use crate::helpers::*;

fn pollhook() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pollhook"))
}

/// Runs the binary to its end (killed, and the test failed, after `secs`).
fn run_bounded(mut cmd: Command, secs: u64) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {secs}s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `pollhook check --store --config PATH`: exit code, stdout, stderr.
fn check_store(config: &Path) -> (Option<i32>, String, String) {
    let mut cmd = pollhook();
    cmd.args(["check", "--store", "--config"]).arg(config);
    let out = run_bounded(cmd, 120);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config naming `state` as its store, with one source nobody serves.
fn bare_config(state: &Path) -> String {
    format!(
        "[store]\npath = \"{}\"\n[admin]\nlisten = \"off\"\n[sources.hotel]\nurl = \"http://127.0.0.1:1/b\"\nevery = \"1h\"\n",
        state.display()
    )
}

fn build_err(toml: &str) -> StoreError {
    let config = Config::from_toml_str(toml, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    match App::build(config) {
        Ok(_) => panic!("the app was built"),
        Err(AppError::Store(e)) => e,
        Err(e) => panic!("not a store error: {e}"),
    }
}

/// A real state file after a few polls and deliveries (the app dropped: the file is closed),
/// its config file beside it, and what it holds.
struct Made {
    dir: tempfile::TempDir,
    state: PathBuf,
    config: PathBuf,
    bookings: usize,
    events: u64,
}

async fn made_store() -> Made {
    let t = spawn_app(Options::default()).await;
    t.poll().await;
    t.sim.create_booking();
    let first = t.sim.bookings()[0]["id"].as_u64().unwrap();
    t.sim.modify_booking(first);
    t.poll().await;
    t.deliver().await;
    t.sim.create_booking();
    t.poll().await;
    t.deliver().await;
    let bookings = t.app.store().known("hotel").unwrap().len();
    let events = t.app.counts().await.unwrap().events;
    let TestApp { app, dir, toml, .. } = t;
    drop(app);
    let state = dir.path().join("state.redb");
    let config = dir.path().join("pollhook.toml");
    std::fs::write(&config, toml).unwrap();
    Made {
        dir,
        state,
        config,
        bookings,
        events,
    }
}

/// Flips every bit of the 4 KiB page in the middle of the file. The file is compacted first, so
/// that the middle holds live rows rather than free pages (flipping free space damages nothing).
fn flip_middle(path: &Path) {
    {
        let mut db = redb::Database::open(path).unwrap();
        while db.compact().unwrap() {}
    }
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2 / 4096 * 4096;
    for b in &mut bytes[mid..mid + 4096] {
        *b = !*b;
    }
    std::fs::write(path, bytes).unwrap();
}

fn assert_names_the_way_out(message: &str, path: &Path) {
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("restore it from a backup"), "{message}");
    assert!(message.contains("remove the file"), "{message}");
    assert!(!message.contains("another pollhook"), "{message}");
}

#[test]
fn a_zero_length_state_file_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.redb");
    std::fs::write(&state, b"").unwrap();
    let e = build_err(&bare_config(&state));
    assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
    let message = e.to_string();
    assert!(message.contains("not a pollhook state file"), "{message}");
    assert!(message.contains("empty"), "{message}");
    assert_names_the_way_out(&message, &state);
    assert_eq!(
        std::fs::metadata(&state).unwrap().len(),
        0,
        "left as it was"
    );
}

#[test]
fn a_file_that_is_not_a_redb_database_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.redb");
    let garbage = b"{\"this\": \"is a JSON export, not a state file\"}\n".repeat(100);
    std::fs::write(&state, &garbage).unwrap();
    let e = build_err(&bare_config(&state));
    assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
    let message = e.to_string();
    assert!(message.contains("not a redb database"), "{message}");
    assert_names_the_way_out(&message, &state);
    assert_eq!(std::fs::read(&state).unwrap(), garbage);
}

#[test]
fn another_programs_redb_database_is_refused_and_left_as_it_is() {
    use redb::ReadableDatabase;
    const OTHER: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("settings");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.redb");
    {
        let db = redb::Database::create(&state).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(OTHER)
            .unwrap()
            .insert("colour", "blue")
            .unwrap();
        txn.commit().unwrap();
    }
    let e = build_err(&bare_config(&state));
    assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
    let message = e.to_string();
    assert!(message.contains("without pollhook's tables"), "{message}");
    assert!(message.contains("settings"), "{message}");
    assert_names_the_way_out(&message, &state);
    let db = redb::Database::open(&state).unwrap();
    let txn = db.begin_read().unwrap();
    let tables: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_string())
        .collect();
    assert_eq!(tables, ["settings"], "nothing of pollhook's was added");
}

#[tokio::test]
async fn a_new_state_file_is_created_0600() {
    let t = spawn_app(Options::default()).await;
    let mode = std::fs::metadata(t.dir.path().join("state.redb"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
}

#[tokio::test]
async fn a_state_file_with_4_kib_flipped_in_the_middle_is_refused_at_open_naming_it() {
    let m = made_store().await;
    flip_middle(&m.state);
    let toml = std::fs::read_to_string(&m.config).unwrap();
    let config = Config::from_toml_str(&toml, "test.toml").unwrap();
    let built = std::panic::catch_unwind(|| App::build(config).map(|_| ()));
    let e = match built {
        Err(_) => panic!("opening a damaged file panicked"),
        Ok(Ok(())) => panic!("a damaged file was opened"),
        Ok(Err(AppError::Store(e))) => e,
        Ok(Err(e)) => panic!("not a store error: {e}"),
    };
    assert!(e.is_corruption(), "{e}");
    let message = e.to_string();
    assert!(
        message.contains(&format!("state file {} is corrupt", m.state.display())),
        "{message}"
    );
    assert!(message.contains("backup"), "{message}");
    assert!(message.contains("check --store"), "{message}");
}

#[tokio::test]
async fn the_daemon_exits_non_zero_on_a_corrupt_state_file() {
    let m = made_store().await;
    flip_middle(&m.state);
    let config = m.config.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = pollhook();
        cmd.args(["run", "--config"]).arg(&config);
        run_bounded(cmd, 120)
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("state file {} is corrupt", m.state.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn check_store_reports_corruption_with_a_non_zero_exit() {
    let m = made_store().await;
    flip_middle(&m.state);
    let config = m.config.clone();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || check_store(&config))
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("state file {} is corrupt", m.state.display())),
        "{stderr}"
    );
    assert!(!stdout.contains("OK"), "{stdout}");
}

/// The rows `check --store` printed for `table`.
fn rows_of(stdout: &str, table: &str) -> Option<u64> {
    stdout.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some(table))
            .then(|| words.next().and_then(|n| n.parse().ok()))
            .flatten()
    })
}

#[tokio::test]
async fn check_store_reports_ok_with_row_counts_on_an_intact_file() {
    let m = made_store().await;
    let before = std::fs::metadata(&m.state).unwrap().len();
    let config = m.config.clone();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || check_store(&config))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("{}: OK", m.state.display())),
        "{stdout}"
    );
    assert!(stdout.contains("schema version 2"), "{stdout}");
    assert_eq!(
        rows_of(&stdout, "snapshot_v2"),
        Some(m.bookings as u64),
        "{stdout}"
    );
    assert_eq!(rows_of(&stdout, "events_v2"), Some(m.events), "{stdout}");
    assert!(rows_of(&stdout, "meta_v1").is_some(), "{stdout}");
    assert!(!stdout.contains("warning"), "a new file is 0600: {stdout}");
    assert_eq!(std::fs::metadata(&m.state).unwrap().len(), before);

    // A file other users may read is flagged.
    std::fs::set_permissions(&m.state, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = m.config.clone();
    let (code, stdout, _) = tokio::task::spawn_blocking(move || check_store(&config))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("has mode 644"), "{stdout}");
    assert!(stdout.contains("chmod 600"), "{stdout}");
    drop(m.dir);
}

#[test]
fn check_store_reads_a_first_release_file_without_upgrading_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.redb");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-v1.redb"),
        &state,
    )
    .unwrap();
    let config = dir.path().join("pollhook.toml");
    std::fs::write(&config, bare_config(&state)).unwrap();
    for _ in 0..2 {
        let (code, stdout, stderr) = check_store(&config);
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        assert!(stdout.contains("schema version 1"), "{stdout}");
        assert_eq!(rows_of(&stdout, "snapshot_v1"), Some(61), "{stdout}");
    }
}

#[test]
fn check_store_refuses_a_missing_file_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.redb");
    let config = dir.path().join("pollhook.toml");
    std::fs::write(&config, bare_config(&state)).unwrap();
    let (code, _, stderr) = check_store(&config);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!state.exists());
}

#[tokio::test]
async fn check_store_refuses_a_file_a_running_pollhook_holds() {
    let t = spawn_app(Options::default()).await;
    t.poll().await;
    let config = t.dir.path().join("pollhook.toml");
    std::fs::write(&config, &t.toml).unwrap();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || check_store(&config))
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(stderr.contains("stop the daemon first"), "{stderr}");
    // The running instance is undisturbed.
    t.poll().await;
}

#[test]
fn a_read_only_state_directory_is_named_and_not_blamed_on_another_pollhook() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let state = state_dir.join("pollhook.redb");
    let config = dir.path().join("pollhook.toml");
    std::fs::write(&config, bare_config(&state)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = pollhook();
    cmd.args(["once", "--config"]).arg(&config);
    // Root writes into any directory whatever its mode, so as root the binary runs as an
    // unprivileged user: the same failure, tested everywhere.
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    if root {
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534);
    }
    let out = run_bounded(cmd, 60);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot open state file {} for writing",
            state.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "write access to its directory {}",
            state_dir.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("StateDirectory="), "{stderr}");
    assert!(!stderr.contains("another pollhook"), "{stderr}");
    assert!(std::fs::read_dir(&state_dir).unwrap().next().is_none());
}

#[tokio::test]
async fn readiness_reports_a_corrupt_state_file() {
    let t = spawn_app(Options::default()).await;
    t.poll().await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let addr = start_admin(&t.app, &cancel).await;
    let url = format!("http://{addr}/readyz");
    let ready = reqwest::get(&url).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    // A store operation panics inside the engine, as it does on a damaged page.
    let r: Result<(), StoreError> = t
        .app
        .store()
        .run(|_| panic!("simulated engine panic on a damaged page"))
        .await;
    assert!(r.unwrap_err().is_corruption());
    assert!(t.app.state_file_fault().is_some());

    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body = resp.text().await.unwrap();
    let state = t.dir.path().join("state.redb");
    assert!(
        body.contains(&format!("state file {} is corrupt", state.display())),
        "{body}"
    );
    // Every later operation is refused without touching the file again.
    assert!(t.app.counts().await.unwrap_err().is_corruption());
    let polled = t.app.poll_now("hotel").await;
    assert!(polled.is_err());
    cancel.cancel();
}

#[tokio::test]
async fn after_an_io_error_on_the_state_file_nothing_touches_it_and_readiness_says_why() {
    let t = spawn_app(Options::default()).await;
    t.poll().await;
    // The engine's answer to every write once one failed with an I/O error (a full disk).
    let r: Result<(), StoreError> = t
        .app
        .store()
        .run(|_| Err(StoreError::Db(redb::Error::PreviousIo)))
        .await;
    let e = r.unwrap_err();
    assert!(e.is_fatal() && !e.is_corruption(), "{e}");
    let cancel = tokio_util::sync::CancellationToken::new();
    let addr = start_admin(&t.app, &cancel).await;
    let resp = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body = resp.text().await.unwrap();
    assert!(body.contains("accepts no further writes"), "{body}");
    assert!(body.contains("free space"), "{body}");
    // No poll and no delivery round touches the file (a round would send without recording).
    assert!(t.app.poll_now("hotel").await.is_err());
    assert!(t.app.deliver_due().await.is_err());
    assert!(t.app.counts().await.unwrap_err().is_fatal());
    cancel.cancel();
}
