//! The small messages of issue 9, item 10: each name listed once after "available:", no
//! dangling colon after "0 endpoint(s)", and a type error that names the key, what was found and
//! a valid example. (The read-only directory case is `state_file::a_read_only_state_directory_is_named_and_not_blamed_on_another_pollhook`.)

use std::process::Command;

use pollhook::config::Config;

fn error_of(toml: &str) -> String {
    match Config::from_toml_str(toml, "m.toml") {
        Ok(_) => panic!("the config was accepted:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

/// The names after "available: " up to the end of that clause.
fn available(message: &str) -> Vec<String> {
    let Some((_, rest)) = message.split_once("available: ") else {
        panic!("no \"available:\" in {message}");
    };
    let clause = rest.split([';', '\n', ')']).next().unwrap_or_default();
    clause.split(", ").map(|s| s.trim().to_string()).collect()
}

fn assert_each_once(names: &[String], message: &str) {
    let mut sorted = names.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "a name listed twice: {message}");
}

#[test]
fn an_unavailable_name_lists_each_available_name_once() {
    let source = error_of(
        r#"
[sources.hotel]
url = "http://127.0.0.1:1/b"
every = "1m"
query = { since = "{{ bogus }}" }
"#,
    );
    let names = available(&source);
    assert_each_once(&names, &source);
    for n in ["now", "today", "page", "secret"] {
        assert!(names.iter().any(|x| x == n), "{n} missing: {source}");
    }

    let body = error_of(
        r#"
[sources.hotel]
url = "http://127.0.0.1:1/b"
every = "1m"
[endpoints.crm]
url = "http://127.0.0.1:2/h"
body = { x = "{{ bogus }}" }
"#,
    );
    let names = available(&body);
    assert_each_once(&names, &body);
    for n in [
        "now",
        "today",
        "event.id",
        "booking/<pointer>",
        "beds24.<VARIABLE>",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing: {body}");
    }
    assert!(!names.iter().any(|x| x == "event"), "{body}");
}

#[test]
fn check_with_no_endpoints_leaves_no_dangling_colon() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[admin]\nlisten = \"off\"\n[sources.hotel]\nurl = \"http://127.0.0.1:1/b\"\nevery = \"1m\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pollhook"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 endpoint(s))"), "{stdout}");
    assert!(!stdout.contains("endpoint(s):"), "{stdout}");
    assert!(stdout.contains("1 source(s): hotel"), "{stdout}");
}

#[test]
fn a_type_error_names_the_key_what_was_found_and_a_valid_example() {
    let cases = [
        ("every = 30", "sources.hotel.every", "30", "every = \"30s\""),
        (
            "jitter = \"lots\"",
            "sources.hotel.jitter",
            "lots",
            "jitter = 0.1",
        ),
        (
            "max_pages = \"ten\"",
            "sources.hotel.max_pages",
            "ten",
            "max_pages = 1000",
        ),
        (
            "ignore_fields = \"/modifiedTime\"",
            "sources.hotel.ignore_fields",
            "/modifiedTime",
            "ignore_fields = [\"/modifiedTime\"]",
        ),
    ];
    for (line, key, found, example) in cases {
        // jitter is an endpoint key; the others belong to the source.
        let toml = if line.starts_with("jitter") {
            format!(
                "[sources.hotel]\nurl = \"http://127.0.0.1:1/b\"\nevery = \"1m\"\n[endpoints.crm]\nurl = \"http://127.0.0.1:2/h\"\n{line}\n"
            )
        } else {
            format!("[sources.hotel]\nurl = \"http://127.0.0.1:1/b\"\n{line}\n")
        };
        let key = if line.starts_with("jitter") {
            "endpoints.crm.jitter"
        } else {
            key
        };
        let message = error_of(&toml);
        assert!(message.contains(key), "{line}: {message}");
        assert!(message.contains(found), "{line}: {message}");
        assert!(
            message.contains(&format!("for example: {example}")),
            "{line}: {message}"
        );
    }
}
