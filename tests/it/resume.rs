//! Interrupted polls: a poll stages each page as it goes, so after a failure, a restart or a
//! crash it continues from the page after the last one staged; a resume point the API refuses,
//! a changed configuration or repeated failures start it afresh. Nothing is lost, nothing is
//! sent twice, and nothing staged is visible before the poll's last page.

use crate::helpers::*;

/// Six bookings on three pages of two; a baseline is recorded.
async fn three_pages(extra: &str) -> TestApp {
    let t = spawn_app(Options {
        initial_bookings: 6,
        page_size: 2,
        source_extra: extra.to_string(),
        ..Options::default()
    })
    .await;
    assert_eq!(t.poll().await, 0);
    t
}

/// Page 3 answers 503 on every attempt of the next poll (the first try and its retries).
fn page_3_down(t: &TestApp) {
    for _ in 0..4 {
        t.sim.refuse_page(3, 503);
    }
}

fn pages_since(sim: &pollhook::demo::simulator::Simulator, from: usize) -> Vec<usize> {
    sim.listed_pages()[from..].to_vec()
}

fn kinds(events: &[pollhook::outbox::Event]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.kind.status_word().to_string(), e.booking_id.clone()))
        .collect()
}

#[tokio::test]
async fn a_poll_that_fails_on_a_page_resumes_there_and_commits_everything_once() {
    let t = three_pages("").await;
    let first = t.sim.bookings()[0]["id"].as_u64().unwrap();
    t.sim.modify_booking(first);
    let new = t.sim.create_booking();
    page_3_down(&t);
    let before = t.sim.listed_pages().len();
    let e = t.app.poll_now("hotel").await.unwrap_err();
    assert!(e.to_string().contains("503"), "{e}");
    assert!(
        t.app.store().events().unwrap().is_empty(),
        "nothing staged is visible"
    );
    assert_eq!(
        t.app.store().source_state("hotel").unwrap().unwrap().polls,
        1
    );
    assert_eq!(pages_since(&t.sim, before), [1, 2, 3, 3, 3, 3]);

    let before = t.sim.listed_pages().len();
    let r = t.app.poll_now("hotel").await.unwrap();
    assert!(r.resumed);
    assert_eq!(
        pages_since(&t.sim, before),
        [3, 4],
        "pages 1 and 2 were staged already"
    );
    assert_eq!(r.pages, 4);
    assert_eq!(r.bookings, 7);
    assert_eq!(
        kinds(&r.events),
        [
            ("modify".to_string(), first.to_string()),
            ("new".to_string(), new.to_string())
        ]
    );
    // Committed exactly once: the next poll finds nothing new.
    assert_eq!(t.poll().await, 0);
    t.deliver().await;
    assert_eq!(t.accepted().len(), 2);
}

#[tokio::test]
async fn a_restarted_daemon_continues_the_staged_poll() {
    let t = three_pages("").await;
    let id = t.sim.bookings()[1]["id"].as_u64().unwrap();
    t.sim.cancel_booking(id);
    page_3_down(&t);
    assert!(t.app.poll_now("hotel").await.is_err());
    // A new process over the same state file.
    drop(t.app);
    let app = build(&t.toml);
    let before = t.sim.listed_pages().len();
    let r = app.poll_now("hotel").await.unwrap();
    assert!(r.resumed);
    assert_eq!(pages_since(&t.sim, before), [3]);
    assert_eq!(kinds(&r.events), [("cancel".to_string(), id.to_string())]);
}

#[tokio::test]
async fn a_refused_resume_point_starts_the_poll_afresh_and_loses_nothing() {
    let t = three_pages("").await;
    let a = t.sim.bookings()[0]["id"].as_u64().unwrap();
    t.sim.modify_booking(a);
    page_3_down(&t);
    assert!(t.app.poll_now("hotel").await.is_err());
    // Meanwhile page 3's link expired, and another booking changed on a staged page.
    t.sim.refuse_page(3, 400);
    let b = t.sim.bookings()[1]["id"].as_u64().unwrap();
    t.sim.modify_booking(b);
    let before = t.sim.listed_pages().len();
    let r = t.app.poll_now("hotel").await.unwrap();
    assert!(!r.resumed, "started afresh");
    assert_eq!(pages_since(&t.sim, before), [3, 1, 2, 3]);
    assert_eq!(
        kinds(&r.events),
        [
            ("modify".to_string(), a.to_string()),
            ("modify".to_string(), b.to_string())
        ],
        "both changes, each once, from the fresh poll"
    );
    assert_eq!(t.poll().await, 0);
}

#[tokio::test]
async fn a_changed_source_configuration_does_not_resume() {
    let t = three_pages("").await;
    let a = t.sim.bookings()[0]["id"].as_u64().unwrap();
    t.sim.modify_booking(a);
    page_3_down(&t);
    assert!(t.app.poll_now("hotel").await.is_err());
    let changed = t
        .toml
        .replace("retry_backoff = \"10ms\"", "retry_backoff = \"11ms\"");
    assert_ne!(changed, t.toml);
    drop(t.app);
    let app = build(&changed);
    let before = t.sim.listed_pages().len();
    let r = app.poll_now("hotel").await.unwrap();
    assert!(!r.resumed);
    assert_eq!(pages_since(&t.sim, before), [1, 2, 3]);
    assert_eq!(kinds(&r.events), [("modify".to_string(), a.to_string())]);
}

#[tokio::test]
async fn a_poll_that_keeps_failing_at_one_page_starts_afresh() {
    let t = three_pages("").await;
    for _ in 0..3 {
        page_3_down(&t);
        assert!(t.app.poll_now("hotel").await.is_err());
    }
    let before = t.sim.listed_pages().len();
    let r = t.app.poll_now("hotel").await.unwrap();
    assert!(!r.resumed);
    assert_eq!(pages_since(&t.sim, before), [1, 2, 3]);
}

#[tokio::test]
async fn a_resumed_full_poll_still_knows_what_it_saw_before_the_interruption() {
    // Disappearances are decided from the ids seen on every page, the staged ones included:
    // without them the four bookings on pages 1 and 2 would look gone too.
    let t = three_pages("on_disappear = \"cancel\"\nmax_disappear_share = 0.5").await;
    page_3_down(&t);
    assert!(t.app.poll_now("hotel").await.is_err());
    let last = t.sim.bookings()[5]["id"].as_u64().unwrap();
    assert!(t.sim.remove_booking(last));
    let r = t.app.poll_now("hotel").await.unwrap();
    assert!(r.resumed);
    assert_eq!(r.held_back, 0);
    assert_eq!(kinds(&r.events), [("cancel".to_string(), last.to_string())]);
}

#[tokio::test]
async fn a_malformed_page_drops_the_staged_poll() {
    let t = three_pages("").await;
    let a = t.sim.bookings()[0]["id"].as_u64().unwrap();
    t.sim.modify_booking(a);
    t.sim.corrupt_page(3);
    let e = t.app.poll_now("hotel").await.unwrap_err();
    assert!(e.to_string().contains("JSON"), "{e}");
    assert!(t.app.store().events().unwrap().is_empty());
    let before = t.sim.listed_pages().len();
    let r = t.app.poll_now("hotel").await.unwrap();
    assert!(!r.resumed, "a malformed answer is not worth resuming");
    assert_eq!(pages_since(&t.sim, before), [1, 2, 3]);
    assert_eq!(kinds(&r.events), [("modify".to_string(), a.to_string())]);
}

#[tokio::test]
async fn a_poll_interrupted_after_its_last_page_is_finished_without_fetching_again() {
    // Every page staged, then the daemon dies while looking up a vanished booking: the next
    // start fetches no page again, only does what is left (the lookup and the promotion).
    let t = three_pages(
        "on_disappear = \"lookup\"\n[sources.hotel.lookup]\nquery = { id = \"{{ id }}\" }",
    )
    .await;
    let gone = t.sim.bookings()[1]["id"].as_u64().unwrap();
    let changed = t.sim.bookings()[4]["id"].as_u64().unwrap();
    assert!(t.sim.remove_booking(gone));
    t.sim.modify_booking(changed);
    t.sim.hold_lookups(true);
    let before = t.sim.listed_pages().len();
    let cut = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        t.app.poll_now("hotel"),
    )
    .await;
    assert!(cut.is_err(), "the poll waits for its lookup");
    assert_eq!(pages_since(&t.sim, before), [1, 2, 3]);
    assert!(t.app.store().events().unwrap().is_empty());
    drop(t.app);
    t.sim.hold_lookups(false);
    let app = build(&t.toml);
    // However long ago it began (resume_within is for pages, and they are all in).
    app.clock()
        .advance(std::time::Duration::from_secs(2 * 3600));
    let before = t.sim.listed_pages().len();
    let r = app.poll_now("hotel").await.unwrap();
    assert!(r.resumed);
    assert_eq!(pages_since(&t.sim, before), Vec::<usize>::new());
    assert_eq!(
        kinds(&r.events),
        [
            ("modify".to_string(), changed.to_string()),
            ("cancel".to_string(), gone.to_string())
        ]
    );
    assert_eq!(app.poll_now("hotel").await.unwrap().events.len(), 0);
}
