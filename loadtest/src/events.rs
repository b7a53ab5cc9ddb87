//! A reader of the coordinator's event stream (`GET /api/v1/events`, server-sent events):
//! opened before submitting, so that the binaries wait for runs to finish without polling.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// Run statuses after which a run changes no more.
pub const FINAL: [&str; 3] = ["succeeded", "failed", "aborted"];

/// An open event stream.
#[derive(Debug)]
pub struct Events {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

/// One event: its `event:` name (`run`, `step`, `reset`…) and its `data:` as JSON.
#[derive(Debug, Clone)]
pub struct Event {
    /// `run`, `step`, `reset`, `ready`.
    pub event: String,
    /// The data (for `run` and `step`: `{"run", "dag", "step"?, "status", "at_ms", …}`).
    pub data: Value,
}

impl Events {
    /// Opens `GET <api>/api/v1/events?<query>` and waits for its `ready` event.
    ///
    /// # Errors
    /// The request fails, or the first event is not `ready`.
    pub async fn open(api: &str, query: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let resp = http
            .get(format!("{api}/api/v1/events?{query}"))
            .header("accept", "text/event-stream")
            .send()
            .await?
            .error_for_status()?;
        let mut events = Events {
            resp,
            buf: Vec::new(),
        };
        let first = events.next().await?;
        anyhow::ensure!(
            first.event == "ready",
            "the event stream began with {first:?}"
        );
        Ok(events)
    }

    /// The next event (comments skipped).
    ///
    /// # Errors
    /// The stream ends or fails, or nothing arrives for 60 s.
    pub async fn next(&mut self) -> anyhow::Result<Event> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let msg: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&msg);
                let (mut event, mut data) = (String::from("message"), String::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() && event == "message" {
                    continue; // a keep-alive comment
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::Null);
                return Ok(Event { event, data });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.resp.chunk())
                .await
                .context("no event for 60 s")??
                .context("the event stream ended")?;
            // Line endings may be \r\n; keep \n only so that blank lines are "\n\n".
            self.buf
                .extend(chunk.iter().copied().filter(|b| *b != b'\r'));
        }
    }

    /// Waits until run `id` is final; returns its final status.
    ///
    /// # Errors
    /// As [`Events::next`], or a `reset` event (events were lost).
    pub async fn run_final(&mut self, id: &str) -> anyhow::Result<String> {
        loop {
            let e = self.next().await?;
            match e.event.as_str() {
                "reset" => anyhow::bail!("the event stream was reset: {}", e.data),
                "run" if e.data["run"] == id => {
                    let status = e.data["status"].as_str().unwrap_or_default();
                    if FINAL.contains(&status) {
                        return Ok(status.to_string());
                    }
                }
                _ => {}
            }
        }
    }
}
