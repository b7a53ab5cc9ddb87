//! The end-to-end tests, in one test binary (one build and one link instead of one per file):
//! each module is one area, against real redis-servers of its own; [`common`] holds the
//! clusters they run on. `cargo test --test it <module>::` runs one area, e.g.
//! `cargo test --test it chaos:: -- --test-threads=1 --nocapture`.

mod common;

mod auth;
mod chaos;
mod conditions;
mod dagu_examples;
mod dagu_keys;
mod dagu_params;
mod dagu_repeat;
mod dagu_runpol;
mod dagu_steps;
mod drain;
mod e2e;
mod events;
mod handlers;
mod health;
mod health_verb;
mod hostile;
mod http_edge;
mod idempotency;
mod logs;
mod orphans;
mod queues;
mod redis_restart;
mod reliability;
mod retention;
mod retry;
mod run_store;
mod schedule;
mod step_env;
mod step_spawn;
mod sub_dag_registration;
mod sub_dags;
mod sub_dags_chaos;
mod sub_views;
mod submit_wait;
mod worker_binary;
mod worker_labels;
mod worker_selector;
