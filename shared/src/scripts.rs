//! The Lua scripts of every multi-key transition, one file each under `src/lua/`.
//!
//! Each script opens with a header naming its KEYS, ARGV and reply. Every key a script touches
//! is passed in KEYS and shares the namespace hash tag (see [`crate::keys`]), so the scripts
//! run unchanged on Redis Cluster.

use std::sync::LazyLock;

use redis::Script;

/// Creates a run, indexes it and queues its first steps (`lua/create_run.lua`).
pub static CREATE_RUN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/create_run.lua")));

/// Compare-and-set of a run's state after step reports (`lua/apply_transition.lua`).
pub static APPLY_TRANSITION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/apply_transition.lua")));

/// A worker's final report on a step attempt (`lua/complete_step.lua`).
pub static COMPLETE_STEP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/complete_step.lua")));

/// A worker's claim of the most urgent ready entries, highest priority level first
/// (`lua/claim.lua`).
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/claim.lua")));

/// Every script, for loading them all at once (SCRIPT LOAD) before pipelining EVALSHA.
pub fn all() -> [&'static Script; 4] {
    [&*CREATE_RUN, &*APPLY_TRANSITION, &*COMPLETE_STEP, &*CLAIM]
}
