//! The one compare-and-set loop on runs: read the run, plan its transition with the pure code
//! of [`crate::plan`], write it with one `apply_transition` script call (a compare-and-set on
//! the run's `ver`), and read again and plan again when another writer got there first.
//!
//! The orchestrator (reports), stop, the retry handler, deadlines and automatic retries all
//! go through [`Store::apply_cas_many`] (or [`Store::apply_cas`] for one run), so what a written
//! transition owes happens here once for every caller: its metrics ([`Counted`]) and the
//! admission pass of its queue when the run freed a slot (the script answers 2).

use std::collections::{BTreeMap, BTreeSet};

use dagrid_shared::dag::Dag;
use dagrid_shared::model::RunRecord;
use dagrid_shared::transition::{self, Counted};
use redis::Value;

use super::{Store, StoreError, StoreResult};
use crate::plan::Transition;

/// Compare-and-set rounds before giving up (each lost round means another writer changed the
/// run between its read and its write).
pub(crate) const MAX_CAS_ROUNDS: usize = 16;

/// What became of one run in [`Store::apply_cas_many`].
#[derive(Debug)]
pub(crate) enum CasOutcome<E> {
    /// The transition was written; `run` is the record it was planned from.
    Applied {
        /// The run as read before the write.
        run: Box<RunRecord>,
        /// What was written.
        transition: Box<Transition>,
    },
    /// The planner declined (nothing written).
    Declined(E),
    /// No run has this id.
    NotFound,
    /// The run's DAG version (its digest given) is missing from Redis.
    MissingSpec(String),
    /// Every round lost its compare-and-set; nothing written.
    Lost,
}

/// A transition written by [`Store::apply_cas`].
#[derive(Debug)]
pub(crate) struct Applied {
    /// The run as read before the write.
    pub(crate) run: RunRecord,
    /// What was written.
    pub(crate) transition: Transition,
}

impl Store {
    /// Moves one run: `plan(run, dag)` gives its transition (or declines with `E`), written as
    /// one `apply_transition` compare-and-set, read and planned again while other writers win,
    /// at most [`MAX_CAS_ROUNDS`] rounds.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the run does not exist, [`StoreError::Corrupt`] when its
    /// DAG version is missing, [`StoreError::Conflict`] when every round lost,
    /// [`StoreError::Unavailable`] when Redis failed. `Ok(Err(e))`: the planner declined.
    pub(crate) async fn apply_cas<E>(
        &self,
        run_id: &str,
        mut plan: impl FnMut(&RunRecord, &Dag) -> Result<Transition, E>,
    ) -> StoreResult<Result<Applied, E>> {
        let runs = BTreeMap::from([(run_id.to_string(), Vec::new())]);
        let mut out = self
            .apply_cas_many(runs, |_, run, dag| plan(run, dag))
            .await?;
        match out.remove(run_id) {
            Some(CasOutcome::Applied { run, transition }) => Ok(Ok(Applied {
                run: *run,
                transition: *transition,
            })),
            Some(CasOutcome::Declined(e)) => Ok(Err(e)),
            Some(CasOutcome::NotFound) | None => Err(StoreError::NotFound {
                run: run_id.to_string(),
            }),
            Some(CasOutcome::MissingSpec(spec)) => Err(StoreError::Corrupt(format!(
                "run {run_id}: its DAG version {spec} is missing"
            ))),
            Some(CasOutcome::Lost) => Err(StoreError::Conflict {
                run: run_id.to_string(),
                rounds: MAX_CAS_ROUNDS,
            }),
        }
    }

    /// Moves several runs at once: per round, one pipeline of HGETALL reads the runs still to
    /// write, `plan(id, run, dag)` plans each, and one pipeline of `apply_transition` calls
    /// writes them, each also acknowledging the results-stream entries given with its run
    /// (`runs`: run id → entry ids). Runs whose compare-and-set lost go to the next round, at
    /// most [`MAX_CAS_ROUNDS`]. Each written transition is counted in the metrics once, and
    /// each queue in which a written transition freed a slot gets one admission pass.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis failed (what was written stays written).
    pub(crate) async fn apply_cas_many<E>(
        &self,
        runs: BTreeMap<String, Vec<String>>,
        mut plan: impl FnMut(&str, &RunRecord, &Dag) -> Result<Transition, E>,
    ) -> StoreResult<BTreeMap<String, CasOutcome<E>>> {
        let mut out = BTreeMap::new();
        let mut todo = runs;
        for _ in 0..MAX_CAS_ROUNDS {
            if todo.is_empty() {
                break;
            }
            let ids: Vec<String> = todo.keys().cloned().collect();
            let records = self.runs(&ids).await?;
            let mut pipe = redis::pipe();
            let mut written = Vec::new();
            for (run_id, record) in ids.into_iter().zip(records) {
                let Some(run) = record else {
                    todo.remove(&run_id);
                    out.insert(run_id, CasOutcome::NotFound);
                    continue;
                };
                let Some(dag) = self.spec(&run.spec).await? else {
                    todo.remove(&run_id);
                    out.insert(run_id, CasOutcome::MissingSpec(run.spec));
                    continue;
                };
                match plan(&run_id, &run, &dag) {
                    Ok(t) => {
                        let entry_ids = todo.get(&run_id).map(Vec::as_slice).unwrap_or(&[]);
                        pipe.invoke_script(&transition::call(
                            self.redis().keys(),
                            &dag,
                            &run,
                            entry_ids,
                            &t,
                            None,
                        )?);
                        written.push((run_id, run, t));
                    }
                    Err(e) => {
                        todo.remove(&run_id);
                        out.insert(run_id, CasOutcome::Declined(e));
                    }
                }
            }
            if written.is_empty() {
                break;
            }
            #[cfg(test)]
            self.rival_write(&written).await?;
            let replies = self.script_pipeline(&pipe).await?;
            let mut to_admit = BTreeSet::new();
            for ((run_id, run, t), reply) in written.into_iter().zip(replies) {
                if matches!(reply, Value::Int(0)) {
                    continue;
                }
                Counted::of(&run, &t).count();
                if matches!(reply, Value::Int(2)) {
                    to_admit.insert(run.queue.clone());
                }
                todo.remove(&run_id);
                out.insert(
                    run_id,
                    CasOutcome::Applied {
                        run: Box::new(run),
                        transition: Box::new(t),
                    },
                );
            }
            for q in to_admit {
                self.admit_waiting(&q).await?;
            }
        }
        for run_id in todo.into_keys() {
            out.insert(run_id, CasOutcome::Lost);
        }
        Ok(out)
    }

    /// Test hook: when [`Store::rival_writes`] is set, another writer changes each run
    /// (HINCRBY of its `ver`) between its read and its write, so every compare-and-set loses.
    #[cfg(test)]
    async fn rival_write(&self, written: &[(String, RunRecord, Transition)]) -> StoreResult<()> {
        if !self.rival_writes.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let mut c = self.redis().conn().await?;
        for (run_id, _, _) in written {
            redis::cmd("HINCRBY")
                .arg(self.redis().keys().run(run_id))
                .arg(dagrid_shared::redis::fields::run_field::VERSION)
                .arg(1)
                .query_async::<()>(&mut *c)
                .await
                .map_err(dagrid_shared::ConnError::from)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! A stop or a retry whose compare-and-set keeps losing answers 409 `conflict`: a real
    //! redis-server, the real router, and [`Store::rival_writes`] as the other writer.

    use std::collections::BTreeMap;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use crate::api::{router, AppState};
    use crate::store::Store;

    /// A redis-server on a free port, without persistence, killed on drop.
    struct Server(std::process::Child, u16);

    impl Server {
        fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server on PATH (apt-get install redis-server)");
            Self(child, port)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn call(app: &axum::Router, method: &str, uri: &str, body: Body) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body)
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn stop_and_retry_that_keep_losing_their_compare_and_set_answer_409_conflict() {
        let server = Server::start();
        let url = format!("redis://127.0.0.1:{}", server.1);
        let redis =
            dagrid_shared::redis::conn::Redis::open(&url, "cas-test").expect("the URL parses");
        let mut ready = false;
        for _ in 0..100 {
            if dagrid_shared::redis::conn::ensure_groups(&redis)
                .await
                .is_ok()
            {
                ready = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(ready, "redis-server answers");
        let store = Arc::new(Store::new(redis.clone(), BTreeMap::new(), None));
        let state = AppState {
            store: store.clone(),
            draining: tokio_util::sync::CancellationToken::new(),
            started: std::time::Instant::now(),
            events: crate::events::Feed::new(store.clone()),
            keep_alive: crate::api::events::KEEP_ALIVE,
        };
        let app = router(state, &crate::Auth::default());
        let dag = "name: cas\nsteps:\n  - name: a\n    command: sleep 60\n";
        let (status, _) = call(&app, "POST", "/api/v1/dags", Body::from(dag)).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, run) = call(
            &app,
            "POST",
            "/api/v1/runs",
            Body::from(json!({"dag": "cas"}).to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{run}");
        let id = run["id"].as_str().expect("run id").to_string();
        let stop = format!("/api/v1/runs/{id}/stop");
        let retry = format!("/api/v1/runs/{id}/retry");

        // Another writer changes the run between each read and write: the stop gives up.
        store.rival_writes.store(true, Ordering::SeqCst);
        let (status, body) = call(&app, "POST", &stop, Body::empty()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "conflict", "{body}");
        store.rival_writes.store(false, Ordering::SeqCst);
        let (status, body) = call(&app, "POST", &stop, Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "aborted", "{body}");

        // The same for a retry of the aborted run.
        store.rival_writes.store(true, Ordering::SeqCst);
        let (status, body) = call(&app, "POST", &retry, Body::empty()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "conflict", "{body}");
        store.rival_writes.store(false, Ordering::SeqCst);
        let (status, body) = call(&app, "POST", &retry, Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "running", "{body}");
    }
}
