//! `ready-latency <url> [rate] [duration]`: sends GET `<url>` at a fixed rate (requests per
//! second, default 200) for a duration (default `30s`, humantime), open loop: each request
//! leaves at its scheduled time whether or not the previous ones answered, and its latency is
//! measured from that scheduled time (so a stalled server is not hidden by fewer requests).
//! Prints the p50, p90, p99 and max latency in ms, the requests sent and the errors (a
//! transport error or a non-2xx status).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: ready-latency <url> [rate req/s, default 200] [duration, default 30s]";
    let Some(url) = args.first().cloned() else {
        bail!("{usage}");
    };
    let rate: u32 = match args.get(1) {
        Some(r) => r
            .parse()
            .ok()
            .filter(|r| *r > 0)
            .with_context(|| format!("rate {r:?} is not a positive integer; {usage}"))?,
        None => 200,
    };
    let duration = match args.get(2) {
        Some(d) => humantime::parse_duration(d)
            .with_context(|| format!("duration {d:?} is not a duration like 30s; {usage}"))?,
        None => Duration::from_secs(30),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let total = (rate as f64 * duration.as_secs_f64()).round() as u64;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut inflight = JoinSet::new();
    let start = Instant::now();
    for _ in 0..total {
        let scheduled = ticker.tick().await.into_std();
        let (http, url) = (http.clone(), url.clone());
        inflight.spawn(async move {
            let ok = match http.get(&url).send().await {
                Ok(r) => {
                    let ok = r.status().is_success();
                    let _ = r.bytes().await;
                    ok
                }
                Err(_) => false,
            };
            (scheduled.elapsed(), ok)
        });
    }
    let mut latencies = Vec::with_capacity(total as usize);
    let mut errors = 0u64;
    while let Some(done) = inflight.join_next().await {
        let (latency, ok) = done?;
        latencies.push(latency);
        if !ok {
            errors += 1;
        }
    }
    let took = start.elapsed();
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies[i.clamp(1, latencies.len()) - 1].as_secs_f64() * 1000.0
    };
    println!(
        "{url}: {} requests in {:.1} s ({:.1} req/s, target {rate}), errors {errors}",
        latencies.len(),
        took.as_secs_f64(),
        latencies.len() as f64 / took.as_secs_f64(),
    );
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(100.0)
    );
    Ok(())
}
