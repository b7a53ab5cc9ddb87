//! Startup checks of the Redis server's settings that can lose dagrid's data: an eviction
//! policy other than `noeviction` (Redis may delete run hashes, ready entries or dedup keys
//! when it runs out of memory) and no persistence (a restart loses every run and every queued
//! step). The coordinator and the workers run them once at startup and log a warning with the
//! fix; nothing here ever stops a service.
//!
//! The settings are read with `INFO memory` and `INFO persistence`, which managed Redis
//! services answer even when they disable `CONFIG GET`. `INFO` does not show the RDB save
//! schedule, so when AOF is off `CONFIG GET save` is tried; when that is refused too, the
//! snapshots the server made since it started (`rdb_saves`, `rdb_last_bgsave_time_sec`) stand
//! for it.

use std::collections::HashMap;
use std::time::Duration;

use crate::redis::conn::{ConnError, Redis};

/// How long the whole check may take before it is skipped.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A setting of the Redis server that can lose data, with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Risk {
    /// `maxmemory_policy` is not `noeviction`.
    Eviction {
        /// The policy in force, for example `allkeys-lru`.
        policy: String,
        /// `maxmemory` in bytes (0: no limit set yet).
        maxmemory: u64,
    },
    /// Neither AOF nor RDB snapshots are configured.
    NoPersistence,
    /// AOF is off and the RDB save schedule cannot be read (`CONFIG GET` refused), and the
    /// server has made no snapshot since it started.
    PersistenceUnknown,
    /// AOF is off; RDB snapshots are configured (`save` holds the schedule).
    SnapshotsOnly {
        /// The `save` setting, for example `3600 1 300 100 60 10000`.
        save: String,
    },
}

impl Risk {
    /// True for the risks that warrant a warning; [`Risk::SnapshotsOnly`] is a note.
    pub fn is_warning(&self) -> bool {
        !matches!(self, Risk::SnapshotsOnly { .. })
    }
}

impl std::fmt::Display for Risk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Risk::Eviction { policy, maxmemory } => write!(
                f,
                "Redis maxmemory-policy is {policy} (maxmemory {maxmemory} bytes{}): when memory runs out Redis deletes keys, which loses runs, queued steps and dedup keys; set `maxmemory-policy noeviction` (redis.conf, CONFIG SET or your provider's parameter group) so writes fail loudly instead",
                if *maxmemory == 0 { ", no limit yet" } else { "" }
            ),
            Risk::NoPersistence => f.write_str(
                "Redis has no persistence (appendonly no and no save schedule): a restart of Redis loses every run and every queued step; set `appendonly yes` and `appendfsync everysec` (at most 1 s of writes lost)",
            ),
            Risk::PersistenceUnknown => f.write_str(
                "Redis has AOF off (aof_enabled:0), has made no RDB snapshot since it started, and refuses CONFIG GET, so its save schedule is unknown: unless it snapshots, a restart of Redis loses every run and every queued step; set `appendonly yes` and `appendfsync everysec` (at most 1 s of writes lost)",
            ),
            Risk::SnapshotsOnly { save } => write!(
                f,
                "Redis persists by RDB snapshots only (save \"{save}\"): a crash loses the writes made since the last snapshot; `appendonly yes` with `appendfsync everysec` loses at most 1 s"
            ),
        }
    }
}

/// The `field:value` lines of an `INFO` reply.
fn info_fields(info: &str) -> HashMap<&str, &str> {
    info.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .collect()
}

/// The risks found in the replies of `INFO memory` and `INFO persistence`, and of
/// `CONFIG GET save` (`None` when refused or not asked). Fields a server does not report
/// (Redis-compatible servers differ) raise nothing.
pub fn assess(info_memory: &str, info_persistence: &str, save: Option<&str>) -> Vec<Risk> {
    let mut risks = Vec::new();
    let memory = info_fields(info_memory);
    if let Some(policy) = memory.get("maxmemory_policy") {
        if policy.trim() != "noeviction" {
            risks.push(Risk::Eviction {
                policy: policy.trim().to_string(),
                maxmemory: memory
                    .get("maxmemory")
                    .and_then(|m| m.trim().parse().ok())
                    .unwrap_or(0),
            });
        }
    }
    let persistence = info_fields(info_persistence);
    if persistence.get("aof_enabled").map(|v| v.trim()) == Some("0") {
        match save.map(str::trim) {
            Some("") => risks.push(Risk::NoPersistence),
            Some(save) => risks.push(Risk::SnapshotsOnly {
                save: save.to_string(),
            }),
            None => {
                let saves = persistence
                    .get("rdb_saves")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                let last_bgsave = persistence
                    .get("rdb_last_bgsave_time_sec")
                    .map(|v| v.trim())
                    .unwrap_or("-1");
                if saves == 0 && last_bgsave == "-1" {
                    risks.push(Risk::PersistenceUnknown);
                }
            }
        }
    }
    risks
}

/// Reads the server's settings and returns the risks ([`assess`]).
///
/// # Errors
/// [`ConnError`] when `INFO` fails (a refused `CONFIG GET` is not an error).
pub async fn check(redis: &Redis) -> Result<Vec<Risk>, ConnError> {
    let mut c = redis.conn().await?;
    let memory: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut *c)
        .await?;
    let persistence: String = redis::cmd("INFO")
        .arg("persistence")
        .query_async(&mut *c)
        .await?;
    let aof_off = info_fields(&persistence)
        .get("aof_enabled")
        .map(|v| v.trim())
        == Some("0");
    let save = if aof_off {
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("save")
            .query_async::<Vec<String>>(&mut *c)
            .await
            .ok()
            .and_then(|kv| kv.into_iter().nth(1))
    } else {
        None
    };
    Ok(assess(&memory, &persistence, save.as_deref()))
}

/// Runs [`check`] (for at most 5 s) and logs each risk: a warning with the fix, or an info
/// line for [`Risk::SnapshotsOnly`]. When the settings cannot be read, says so and goes on.
/// Never fails: the service starts whatever the server's settings.
pub async fn warn_on_risky_settings(redis: &Redis) {
    match tokio::time::timeout(CHECK_TIMEOUT, check(redis)).await {
        Ok(Ok(risks)) => {
            for risk in risks {
                if risk.is_warning() {
                    tracing::warn!("{risk}");
                } else {
                    tracing::info!("{risk}");
                }
            }
        }
        Ok(Err(e)) => tracing::warn!(
            cause = %e,
            "cannot read the Redis server's settings (INFO); its eviction policy and persistence are not checked"
        ),
        Err(_) => tracing::warn!(
            "the Redis server did not answer INFO within 5 s; its eviction policy and persistence are not checked"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAFE_MEMORY: &str = "# Memory\r\nused_memory:1000\r\nmaxmemory:0\r\nmaxmemory_human:0B\r\nmaxmemory_policy:noeviction\r\n";
    const AOF_ON: &str = "# Persistence\r\nloading:0\r\nrdb_saves:0\r\nrdb_last_bgsave_time_sec:-1\r\naof_enabled:1\r\n";
    const AOF_OFF: &str = "# Persistence\r\nloading:0\r\nrdb_saves:0\r\nrdb_last_bgsave_time_sec:-1\r\naof_enabled:0\r\n";

    #[test]
    fn noeviction_with_aof_is_fine() {
        assert_eq!(assess(SAFE_MEMORY, AOF_ON, None), vec![]);
    }

    #[test]
    fn an_eviction_policy_is_a_warning_that_names_the_fix() {
        let memory = "maxmemory:1073741824\r\nmaxmemory_policy:allkeys-lru\r\n";
        let risks = assess(memory, AOF_ON, None);
        assert_eq!(
            risks,
            vec![Risk::Eviction {
                policy: "allkeys-lru".into(),
                maxmemory: 1 << 30
            }]
        );
        assert!(risks[0].is_warning());
        assert!(risks[0]
            .to_string()
            .contains("set `maxmemory-policy noeviction`"));
    }

    #[test]
    fn no_aof_and_no_save_schedule_is_no_persistence() {
        let risks = assess(SAFE_MEMORY, AOF_OFF, Some(""));
        assert_eq!(risks, vec![Risk::NoPersistence]);
        assert!(risks[0].to_string().contains("appendonly yes"));
    }

    #[test]
    fn snapshots_only_is_a_note() {
        let risks = assess(SAFE_MEMORY, AOF_OFF, Some("3600 1 300 100"));
        assert_eq!(
            risks,
            vec![Risk::SnapshotsOnly {
                save: "3600 1 300 100".into()
            }]
        );
        assert!(!risks[0].is_warning());
    }

    #[test]
    fn without_config_get_past_snapshots_stand_for_a_schedule() {
        assert_eq!(
            assess(SAFE_MEMORY, AOF_OFF, None),
            vec![Risk::PersistenceUnknown]
        );
        let snapshotted = "aof_enabled:0\r\nrdb_saves:3\r\nrdb_last_bgsave_time_sec:0\r\n";
        assert_eq!(assess(SAFE_MEMORY, snapshotted, None), vec![]);
    }

    #[test]
    fn fields_a_server_does_not_report_raise_nothing() {
        assert_eq!(assess("", "", None), vec![]);
    }

    #[tokio::test]
    async fn reads_a_real_server() {
        let server = crate::redis::embedded::EmbeddedRedis::start(Default::default())
            .await
            .expect("redis-server starts");
        let redis = Redis::open(&server.url(), "check").unwrap();
        // The private server runs with AOF and noeviction.
        assert_eq!(check(&redis).await.unwrap(), vec![]);
        let mut c = redis.conn().await.unwrap();
        for (name, value) in [
            ("appendonly", "no"),
            ("save", ""),
            ("maxmemory-policy", "volatile-lru"),
        ] {
            redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query_async::<()>(&mut *c)
                .await
                .unwrap();
        }
        assert_eq!(
            check(&redis).await.unwrap(),
            vec![
                Risk::Eviction {
                    policy: "volatile-lru".into(),
                    maxmemory: 0
                },
                Risk::NoPersistence
            ]
        );
    }
}
