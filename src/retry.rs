//! `dagrid retry`: runs a finished run's failed steps (or one step) again as a new attempt of
//! the same run (`POST /api/v1/runs/{id}/retry`, Dagu's `retry`).

use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use crate::client::Api;

/// Arguments of `dagrid retry`.
#[derive(Debug, Clone, Args)]
pub(crate) struct RetryArgs {
    /// Run id of a finished run.
    pub(crate) run_id: String,
    /// Run only this step again (its downstream steps keep their state); without it, every
    /// failed or aborted step and everything downstream of them runs again.
    #[arg(long, value_name = "NAME")]
    pub(crate) step: Option<String>,
    /// With --step: the step and all its descendants run again.
    #[arg(long, requires = "step")]
    pub(crate) downstream: bool,
    /// The retried steps run even if their own preconditions do not hold (Dagu's
    /// --bypass-preconditions); DAG-level preconditions still apply.
    #[arg(long)]
    pub(crate) ignore_preconditions: bool,
}

/// The request body of a retry.
fn body(args: &RetryArgs) -> Value {
    let mut body = serde_json::Map::new();
    if let Some(step) = &args.step {
        body.insert("step".into(), step.clone().into());
    }
    if args.downstream {
        body.insert("downstream".into(), true.into());
    }
    if args.ignore_preconditions {
        body.insert("ignore_preconditions".into(), true.into());
    }
    Value::Object(body)
}

/// `dagrid retry`: prints `<run id> <status>` and the steps queued again with their attempt;
/// exit 0 once the retry is accepted (follow it with `dagrid status`). Errors (the run is still
/// active, an unknown run or step) are the API's message, exit 1.
pub(crate) async fn run(server: &str, args: &RetryArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(server)?;
    let run: Value = api
        .post(&format!("/api/v1/runs/{}/retry", args.run_id), &body(args))
        .await?;
    println!(
        "{} {}",
        run["id"].as_str().unwrap_or(&args.run_id),
        run["status"].as_str().unwrap_or("running")
    );
    for s in run["steps"].as_array().into_iter().flatten() {
        if matches!(s["status"].as_str(), Some("queued" | "running" | "pending"))
            && s["history"].as_array().is_some_and(|h| !h.is_empty())
        {
            eprintln!(
                "step {} runs again as attempt {}",
                s["name"].as_str().unwrap_or_default(),
                s["attempt"].as_u64().unwrap_or(0)
                    + u64::from(s["status"].as_str() == Some("pending"))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_holds_only_what_was_asked() {
        let mut a = RetryArgs {
            run_id: "r".into(),
            step: None,
            downstream: false,
            ignore_preconditions: false,
        };
        assert_eq!(body(&a), serde_json::json!({}));
        a.step = Some("b".into());
        a.downstream = true;
        a.ignore_preconditions = true;
        assert_eq!(
            body(&a),
            serde_json::json!({"step": "b", "downstream": true, "ignore_preconditions": true})
        );
    }
}
