//! What the commands that report print: `check --probe` and the admin API client behind
//! `events`, `deliveries`, `replay` and `enable`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::Config;

pub(super) async fn probe_sources(config: &Config, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let selected: Vec<_> = config
        .sources
        .iter()
        .filter(|s| only.is_none_or(|o| o == s.name))
        .collect();
    if selected.is_empty() {
        anyhow::bail!("no source named `{}`", only.unwrap_or_default());
    }
    for s in selected {
        println!("{} ({}):", s.name, s.url);
        match crate::poll::probe(s, Some(&config.store_path)).await {
            Ok(r) => {
                if let Some(t) = &r.token {
                    println!("  token: {t}");
                }
                println!("  {} page(s), {} booking(s)", r.pages, r.bookings);
                match &r.sample {
                    Some((id, status)) => println!(
                        "  sample: id {id:?}, status {}",
                        status
                            .as_deref()
                            .map(|s| format!("{s:?}"))
                            .unwrap_or_else(|| "(none: `status` not set or not found)".into())
                    ),
                    None => {
                        println!("  no bookings found: check `items` and the request parameters")
                    }
                }
                let statuses: Vec<String> = r
                    .statuses
                    .iter()
                    .map(|(s, n)| format!("{s} x{n}"))
                    .collect();
                println!("  statuses seen: {}", statuses.join(", "));
                println!(
                    "  cancelled (status in {:?}): {}{}",
                    s.cancelled_values,
                    r.cancelled,
                    if r.cancelled_examples.is_empty() {
                        String::new()
                    } else {
                        format!(", e.g. {}", r.cancelled_examples.join(", "))
                    }
                );
            }
            Err(e) => {
                failed = true;
                println!("  FAILED: {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(super) async fn admin_call(method: reqwest::Method, url: &str) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let resp = client.request(method, url).send().await.with_context(|| {
        format!(
            "cannot reach the admin API at {url} (is the daemon running with [admin] listen on?)"
        )
    })?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if status.is_success() {
        println!("{}", body.trim_end());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{status}: {}", body.trim_end());
        Ok(ExitCode::from(1))
    }
}
