//! Restarts: what was committed survives, is delivered once, and is never detected twice.

use crate::helpers::*;

#[tokio::test]
async fn a_restart_between_detection_and_delivery_loses_and_duplicates_nothing() {
    let t = spawn_app(Options::default()).await;
    t.poll().await;
    let id = t.sim.create_booking();
    t.poll().await;
    t.sim.modify_booking(id);
    t.poll().await;
    let detected: Vec<String> = t
        .app
        .store()
        .events()
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(detected.len(), 2);
    assert!(t.receiver.received().is_empty());

    // "Crash": drop the app (closing redb) without delivering anything, then start again.
    let TestApp {
        app,
        sim,
        receiver,
        dir,
        toml,
    } = t;
    drop(app);
    let app = crate::helpers::build(&toml);
    // Polling again after the restart finds no change: nothing is detected twice.
    assert_eq!(app.poll_now("hotel").await.unwrap().events.len(), 0);
    for _ in 0..3 {
        app.deliver_due().await.unwrap();
    }
    let got: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(
        got, detected,
        "both events, once each, in order, with their original ids"
    );
    drop((sim, dir));
}

#[tokio::test]
async fn the_daemon_delivers_on_its_own_and_stops_cleanly() {
    use tokio_util::sync::CancellationToken;
    let t = spawn_app(Options::default()).await;
    t.poll().await;
    let cancel = CancellationToken::new();
    let runner = {
        let app = t.app.clone();
        let c = cancel.clone();
        tokio::spawn(async move { app.run(c).await })
    };
    t.sim.create_booking();
    // The schedule says every hour; poll now, the running worker delivers without a hook.
    t.poll().await;
    let got = t
        .receiver
        .wait_for_accepted(1, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(got.len(), 1);
    cancel.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(15), runner)
        .await
        .expect("run() returns after cancel")
        .unwrap();
}
