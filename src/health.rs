//! `dagrid health`: probes a coordinator's (or a worker's `--health-addr`) `/health/ready`
//! (or `/health/live`) and exits 0 only on a 200, so container `HEALTHCHECK`s, systemd
//! `ExecStartPost=` checks and scripts need no curl.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

/// Arguments of `dagrid health`.
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// Base URL of the coordinator's API, or of a worker's health listener
    /// (`http://127.0.0.1:9091` for `--health-addr 0.0.0.0:9091`).
    #[arg(long, env = "DAGRID_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Probe `/health/live` (the process answers) instead of `/health/ready` (it can take work).
    #[arg(long)]
    live: bool,
    /// How long to wait for the answer, e.g. `2s`.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Sends one `GET <server>/health/ready` (or `/health/live` with `--live`) without a token
/// (the probes need none). Prints `ready: <url>` and returns exit code 0 on a 200; otherwise
/// prints to stderr why (the status and body, or the connection error with a hint) and
/// returns 1.
pub(crate) async fn run(args: &HealthArgs) -> ExitCode {
    let path = if args.live {
        "/health/live"
    } else {
        "/health/ready"
    };
    let url = format!("{}{path}", args.server.trim_end_matches('/'));
    let what = if args.live { "live" } else { "ready" };
    let answer = match reqwest::Client::builder().timeout(args.timeout).build() {
        Ok(http) => http.get(&url).send().await,
        Err(e) => {
            eprintln!("error: cannot build an HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    match answer {
        Ok(r) if r.status().is_success() => {
            println!("{what}: {url}");
            ExitCode::SUCCESS
        }
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            eprintln!("not {what}: {url} answered {status}: {}", body.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            let cause = if e.is_timeout() {
                format!(
                    "no answer within {}",
                    humantime::format_duration(args.timeout)
                )
            } else {
                // The innermost cause ("Connection refused") says more than reqwest's summary.
                let mut source: &dyn std::error::Error = &e;
                while let Some(next) = source.source() {
                    source = next;
                }
                source.to_string()
            };
            eprintln!(
                "not {what}: cannot reach {url}: {cause}; is dagrid running there? \
                 pass --server (or DAGRID_SERVER) with its address"
            );
            ExitCode::FAILURE
        }
    }
}
