//! Following runs with the coordinator's event stream (`GET /api/v1/events`, server-sent
//! events), for `dagrid submit --wait` and `dagrid batch`.
//!
//! The stream is opened before the runs are submitted (and its `ready` message awaited), so no
//! change is missed; after the submit, the states of the followed runs are read once (a
//! deduplicated run may have finished before the stream was opened), then each final run event
//! closes its run; should no event of a followed run come for [`RECHECK`], the states are read
//! again. A `reset` message (events lost: the client fell off the capped stream, or the
//! coordinator lost Redis for a while) makes the client read the states again. When the
//! stream cannot be opened (an older coordinator answers 404) or drops, the client opens it
//! again once, resuming after the last event it received (`Last-Event-ID`), and reads the
//! states again (with no event received yet, the new stream cannot resume); when that fails
//! too, it reads the states again and polls them every [`POLL_INTERVAL`] to the end, as before
//! the stream existed.

use std::time::Duration;

use crate::client::{Api, POLL_INTERVAL};

/// The stream is taken as dropped when no byte (event or keep-alive comment, sent every 15 s)
/// arrives for this long.
const STALL: Duration = Duration::from_secs(45);

/// While following by the stream, the states are read again when no event of a followed run
/// came for this long: a safety net should an event never arrive (keep-alives alone would otherwise keep a
/// client waiting forever); one lookup per quiet period, no polling.
const RECHECK: Duration = Duration::from_secs(20);

/// One server-sent message: its `event` name (`message` when none is given), `id` and `data`
/// lines (joined with `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) event: String,
    pub(crate) id: Option<String>,
    pub(crate) data: String,
}

/// An incremental parser of the `text/event-stream` format (the WHATWG HTML spec, "Server-sent
/// events"): lines end with LF, CRLF or CR; a blank line ends a message; lines starting with
/// `:` are comments; `field: value` with one optional space after the colon; unknown fields
/// are ignored, and a message with neither data nor event nor id is dropped.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    buf: Vec<u8>,
    event: Option<String>,
    id: Option<String>,
    data: Option<String>,
    /// The last chunk ended with CR: a LF starting the next one belongs to it.
    after_cr: bool,
}

impl Parser {
    /// Feeds bytes; returns the messages they complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        let mut bytes = bytes;
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' | b'\r' => {
                    let line = std::mem::take(&mut self.buf);
                    if bytes[i] == b'\r' {
                        if i + 1 == bytes.len() {
                            self.after_cr = true;
                        } else if bytes[i + 1] == b'\n' {
                            i += 1;
                        }
                    }
                    if let Some(m) = self.line(&line) {
                        out.push(m);
                    }
                }
                b => self.buf.push(b),
            }
            i += 1;
        }
        out
    }

    fn line(&mut self, line: &[u8]) -> Option<Message> {
        if line.is_empty() {
            let (event, id, data) = (self.event.take(), self.id.take(), self.data.take());
            if event.is_none() && id.is_none() && data.is_none() {
                return None;
            }
            return Some(Message {
                event: event.unwrap_or_else(|| "message".into()),
                id,
                data: data.unwrap_or_default(),
            });
        }
        if line[0] == b':' {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "id" => self.id = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }
}

/// What the stream said about the followed runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// A run's status changed.
    Run { run: String, status: String },
    /// Events were lost: read the states again.
    Reset,
    /// Anything else (a step event, an unknown message).
    Other,
}

/// An open event stream.
pub(crate) struct Feed {
    api: Api,
    query: Vec<(String, String)>,
    resp: reqwest::Response,
    parser: Parser,
    pending: std::collections::VecDeque<Message>,
    last_id: Option<String>,
}

impl Feed {
    /// Opens the stream with `query` (e.g. `[("dag", name), ("kind", "run")]`) and waits for
    /// its `ready` message; `None` when it cannot be had (an older coordinator: 404; any
    /// failure). A coordinator that does not know `kind` (400) is asked again without it:
    /// step events are skipped here anyway ([`Next::Other`]).
    pub(crate) async fn open(api: &Api, query: &[(&str, &str)]) -> Option<Feed> {
        let mut query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let resp = match api.events(&query, None).await {
            Ok(resp) => resp,
            Err(e)
                if query.iter().any(|(k, _)| k == "kind")
                    && e.downcast_ref::<crate::client::HttpError>()
                        .is_some_and(|h| h.status == reqwest::StatusCode::BAD_REQUEST) =>
            {
                query.retain(|(k, _)| k != "kind");
                api.events(&query, None).await.ok()?
            }
            Err(_) => return None,
        };
        Self::start(api.clone(), query, None, resp).await
    }

    async fn connect(
        api: Api,
        query: Vec<(String, String)>,
        last_id: Option<String>,
    ) -> Option<Feed> {
        let resp = api.events(&query, last_id.as_deref()).await.ok()?;
        Self::start(api, query, last_id, resp).await
    }

    /// The feed of an answered request, once its `ready` message came.
    async fn start(
        api: Api,
        query: Vec<(String, String)>,
        last_id: Option<String>,
        resp: reqwest::Response,
    ) -> Option<Feed> {
        let mut feed = Feed {
            api,
            query,
            resp,
            parser: Parser::default(),
            pending: Default::default(),
            last_id,
        };
        match feed.message().await? {
            m if m.event == "ready" => Some(feed),
            _ => None,
        }
    }

    /// The next raw message; `None` when the stream ended, failed or stalled.
    async fn message(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                if let Some(id) = &m.id {
                    self.last_id = Some(id.clone());
                }
                return Some(m);
            }
            let chunk = tokio::time::timeout(STALL, self.resp.chunk())
                .await
                .ok()?
                .ok()??;
            self.pending.extend(self.parser.push(&chunk));
        }
    }

    /// The next change; when the stream drops, it is opened once more after the last event
    /// received, and [`Next::Reset`] is returned (the states are read again). `None` when
    /// that fails too: fall back to polling.
    pub(crate) async fn next(&mut self) -> Option<Next> {
        let m = match self.message().await {
            Some(m) => m,
            None => {
                let again =
                    Self::connect(self.api.clone(), self.query.clone(), self.last_id.clone())
                        .await?;
                *self = again;
                // Events between the drop and the new stream may be gone (when no event had
                // come yet, the new stream starts at its own time): read the states again.
                return Some(Next::Reset);
            }
        };
        Some(match m.event.as_str() {
            "reset" => Next::Reset,
            "run" => match serde_json::from_str::<dagrid_shared::model::Event>(&m.data) {
                Ok(e) => Next::Run {
                    run: e.run,
                    status: e.status,
                },
                Err(_) => Next::Other,
            },
            _ => Next::Other,
        })
    }
}

/// The runs a command follows, as [`follow`] sees them.
pub(crate) trait Follow {
    /// True while run `id` is followed and not final.
    fn is_open(&self, id: &str) -> bool;
    /// The followed runs not yet final.
    fn open_ids(&self) -> Vec<String>;
    /// Takes statuses of `ids` (`None`: unknown to the coordinator).
    fn update(&mut self, ids: &[String], statuses: Vec<Option<String>>) -> anyhow::Result<()>;
    /// True when no followed run is open.
    fn all_final(&self) -> bool {
        self.open_ids().is_empty()
    }
    /// Called after each update (progress output).
    fn redraw(&mut self) {}
}

/// Follows runs until every one is final: by `feed` when given (see the module doc), else
/// (or once it drops) by polling their statuses every [`POLL_INTERVAL`]. Every status lookup
/// that finds all runs final ends it (their final events may have passed before the feed
/// opened); on the feed, the states are read again after a [`RECHECK`] without an event of a
/// followed run.
///
/// # Errors
/// A failed status lookup, or an error of [`Follow::update`].
pub(crate) async fn follow(
    api: &Api,
    mut feed: Option<Feed>,
    runs: &mut impl Follow,
) -> anyhow::Result<()> {
    tracing::debug!(
        events = feed.is_some(),
        "following runs (by the event stream when true, else by polling)"
    );
    let mut refetch = true;
    // When the states are read again without news of a followed run; other runs' events and
    // keep-alives do not move it.
    let mut recheck_at = tokio::time::Instant::now() + RECHECK;
    loop {
        if refetch || feed.is_none() {
            let open = runs.open_ids();
            if open.is_empty() {
                return Ok(());
            }
            let statuses = api.statuses(&open).await?;
            runs.update(&open, statuses)?;
            runs.redraw();
            refetch = false;
            recheck_at = tokio::time::Instant::now() + RECHECK;
            // The lookup may find every run final already: their final events may have passed
            // before the feed opened, and a later event of a run no longer open is dropped, so
            // waiting on the feed now could wait forever.
            if runs.all_final() {
                return Ok(());
            }
            if feed.is_none() {
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            }
        }
        let Some(f) = feed.as_mut() else {
            continue;
        };
        let Ok(next) = tokio::time::timeout_at(recheck_at, f.next()).await else {
            tracing::debug!("no event of a followed run for a while; reading the states again");
            refetch = true;
            continue;
        };
        match next {
            Some(Next::Run { run, status }) => {
                if runs.is_open(&run) {
                    recheck_at = tokio::time::Instant::now() + RECHECK;
                    runs.update(&[run], vec![Some(status)])?;
                    runs.redraw();
                    if runs.all_final() {
                        return Ok(());
                    }
                }
            }
            Some(Next::Reset) => {
                tracing::debug!("event stream reset; reading the states again");
                refetch = true;
            }
            Some(Next::Other) => {}
            None => {
                tracing::debug!("event stream dropped; polling the states");
                feed = None;
                refetch = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(event: &str, id: Option<&str>, data: &str) -> Message {
        Message {
            event: event.into(),
            id: id.map(str::to_string),
            data: data.into(),
        }
    }

    #[test]
    fn messages_end_at_blank_lines_and_comments_are_skipped() {
        let mut p = Parser::default();
        let got = p.push(
            b"event: ready\ndata: {}\n\n: keep-alive\n\nevent: run\nid: 1-0\ndata: {\"a\":1}\n\n",
        );
        assert_eq!(
            got,
            vec![
                msg("ready", None, "{}"),
                msg("run", Some("1-0"), "{\"a\":1}")
            ]
        );
    }

    #[test]
    fn messages_split_across_chunks_and_line_endings() {
        let mut p = Parser::default();
        assert!(p.push(b"event: st").is_empty());
        assert!(p.push(b"ep\r").is_empty());
        assert!(p.push(b"\nid:2-1\r\ndata:x\rdata: y\r").is_empty());
        assert_eq!(p.push(b"\r"), vec![msg("step", Some("2-1"), "x\ny")]);
        assert_eq!(p.push(b"data: \xc3"), vec![]);
        assert_eq!(p.push(b"\xa9\n\n"), vec![msg("message", None, "é")]);
    }

    #[test]
    fn unknown_fields_and_empty_messages_are_ignored() {
        let mut p = Parser::default();
        assert!(p.push(b"retry: 10\n\n\n\nfoo\n\n").is_empty());
        assert_eq!(p.push(b"data\n\n"), vec![msg("message", None, "")]);
    }
}
