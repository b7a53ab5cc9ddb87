//! Readers of the Redis server's own accounting: `INFO cpu` (CPU seconds), `INFO
//! commandstats` (calls and µs per command, counting the commands scripts call too), `INFO
//! memory` (`used_memory`), and `MEMORY USAGE` of a sample of keys grouped by kind.

use std::collections::BTreeMap;
use std::collections::HashMap;

use redis::aio::MultiplexedConnection;

/// `INFO <section>` as `field → value`.
///
/// # Errors
/// Redis errors.
pub async fn info(
    conn: &mut MultiplexedConnection,
    section: &str,
) -> anyhow::Result<HashMap<String, String>> {
    let text: String = redis::cmd("INFO").arg(section).query_async(conn).await?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// CPU time the redis-server process has used (`INFO cpu`), in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// `used_cpu_sys + used_cpu_user`: every thread of the server (main thread, I/O threads,
    /// the background threads that fsync and free memory), not its forked children.
    pub total: f64,
    /// `used_cpu_sys_main_thread + used_cpu_user_main_thread` (Redis 6.2+), the thread that
    /// executes every command; `None` on older servers.
    pub main_thread: Option<f64>,
    /// `used_cpu_sys`: the part of `total` spent in the kernel (system calls: socket reads and
    /// writes, `epoll_wait`, the append-only file's writes).
    pub sys: f64,
}

impl Cpu {
    /// Reads `INFO cpu`.
    ///
    /// # Errors
    /// Redis errors, or no `used_cpu_sys` field.
    pub async fn read(conn: &mut MultiplexedConnection) -> anyhow::Result<Self> {
        let i = info(conn, "cpu").await?;
        let f = |k: &str| i.get(k).and_then(|v| v.parse::<f64>().ok());
        let (sys, user) = f("used_cpu_sys")
            .zip(f("used_cpu_user"))
            .ok_or_else(|| anyhow::anyhow!("INFO cpu has no used_cpu_sys/used_cpu_user"))?;
        let total = sys + user;
        let main_thread = f("used_cpu_sys_main_thread")
            .zip(f("used_cpu_user_main_thread"))
            .map(|(s, u)| s + u);
        Ok(Cpu {
            total,
            main_thread,
            sys,
        })
    }

    /// `self − before`.
    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            total: self.total - before.total,
            main_thread: self.main_thread.zip(before.main_thread).map(|(a, b)| a - b),
            sys: self.sys - before.sys,
        }
    }
}

/// One line of `INFO commandstats`.
#[derive(Debug, Clone)]
pub struct CommandStat {
    /// The command, lower case (`evalsha`, `xadd`, `client|setname`).
    pub name: String,
    /// Calls since the last `CONFIG RESETSTAT` (commands run by scripts included).
    pub calls: u64,
    /// Total µs spent in it (a script's time includes the commands it calls).
    pub usec: u64,
}

/// `CONFIG RESETSTAT`: zeroes the command statistics (not the CPU counters).
///
/// # Errors
/// Redis errors.
pub async fn reset_stats(conn: &mut MultiplexedConnection) -> anyhow::Result<()> {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// `INFO commandstats`, most calls first.
///
/// # Errors
/// Redis errors.
pub async fn command_stats(conn: &mut MultiplexedConnection) -> anyhow::Result<Vec<CommandStat>> {
    let mut out: Vec<CommandStat> = info(conn, "commandstats")
        .await?
        .into_iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("cmdstat_")?.to_string();
            let field = |f: &str| {
                v.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| *k == f)
                    .and_then(|(_, v)| v.parse::<u64>().ok())
            };
            Some(CommandStat {
                name,
                calls: field("calls")?,
                usec: field("usec")?,
            })
        })
        .collect();
    out.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// Prints the command table: per command, calls per `unit` (`per` of them: the runs), µs per
/// call and its share of the summed µs of all lines; commands under 0.01 calls per `unit` are
/// summed in one line. Redis counts the commands a script calls on their own lines too, and a
/// script's µs include theirs, so that sum counts script work twice: the share is a guide to
/// where time goes, not an exact split.
pub fn print_command_table(stats: &[CommandStat], per: f64, unit: &str) {
    let total_usec: u64 = stats.iter().map(|s| s.usec).sum();
    let calls: u64 = stats.iter().map(|s| s.calls).sum();
    println!(
        "  {:<24} {:>10} {:>9} {:>7}",
        "command",
        format!("calls/{unit}"),
        "µs/call",
        "share"
    );
    let (mut rare_calls, mut rare_usec) = (0u64, 0u64);
    for s in stats {
        if (s.calls as f64 / per) < 0.01 {
            rare_calls += s.calls;
            rare_usec += s.usec;
            continue;
        }
        println!(
            "  {:<24} {:>10.2} {:>9.1} {:>6.1}%",
            s.name,
            s.calls as f64 / per,
            s.usec as f64 / s.calls.max(1) as f64,
            100.0 * s.usec as f64 / total_usec.max(1) as f64
        );
    }
    if rare_calls > 0 {
        println!(
            "  {:<24} {:>10.2} {:>9.1} {:>6.1}%",
            "(others, < 0.01/run)",
            rare_calls as f64 / per,
            rare_usec as f64 / rare_calls as f64,
            100.0 * rare_usec as f64 / total_usec.max(1) as f64
        );
    }
    println!(
        "  {:<24} {:>10.2}   (commands inside scripts counted too; a script's µs include theirs)",
        "all",
        calls as f64 / per
    );
}

/// `used_memory` of `INFO memory`, bytes.
///
/// # Errors
/// Redis errors, or no such field.
pub async fn used_memory(conn: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    info(conn, "memory")
        .await?
        .get("used_memory")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("INFO memory has no used_memory"))
}

/// The kind of a key: its name with every id-like `:`-separated part (8+ characters with a
/// digit, such as run ids, hashes and timestamps) replaced by `<id>`, so that the 100,000 run
/// hashes of a namespace are one kind.
pub fn key_kind(key: &str) -> String {
    key.split(':')
        .map(|part| {
            let digits = part.bytes().filter(u8::is_ascii_digit).count();
            if part.len() >= 8 && digits > 0 {
                "<id>"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// Memory of one kind of key (see [`key_kind`]).
#[derive(Debug, Clone)]
pub struct KindUsage {
    /// The kind, e.g. `{dagrid}:run:<id>`.
    pub kind: String,
    /// How many keys of the kind exist.
    pub keys: u64,
    /// The Redis type of the first sampled key (`hash`, `stream`, `zset`…).
    pub kind_type: String,
    /// `MEMORY USAGE … SAMPLES 0` of the sampled keys, scaled to all keys of the kind
    /// (bytes; an estimate when only some keys were sampled).
    pub bytes: f64,
}

/// Scans every key, groups them by [`key_kind`] and measures up to `sample` keys of each kind
/// with `MEMORY USAGE <key> SAMPLES 0` (every element counted: exact, slow on huge keys),
/// largest kind first.
///
/// # Errors
/// Redis errors.
pub async fn usage_by_kind(
    conn: &mut MultiplexedConnection,
    sample: usize,
) -> anyhow::Result<Vec<KindUsage>> {
    let mut kinds: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(10_000)
            .query_async(conn)
            .await?;
        for k in keys {
            let e = kinds.entry(key_kind(&k)).or_default();
            e.0 += 1;
            if e.1.len() < sample {
                e.1.push(k);
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut out = Vec::new();
    for (kind, (keys, sampled)) in kinds {
        let mut sum = 0u64;
        let mut kind_type = String::new();
        for k in &sampled {
            let bytes: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(k)
                .arg("SAMPLES")
                .arg(0)
                .query_async(conn)
                .await?;
            sum += bytes.unwrap_or(0);
            if kind_type.is_empty() {
                kind_type = redis::cmd("TYPE").arg(k).query_async(conn).await?;
            }
        }
        let bytes = sum as f64 * keys as f64 / sampled.len().max(1) as f64;
        out.push(KindUsage {
            kind,
            keys,
            kind_type,
            bytes,
        });
    }
    out.sort_by(|a, b| b.bytes.total_cmp(&a.bytes));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::key_kind;

    #[test]
    fn ids_become_one_kind() {
        assert_eq!(
            key_kind("{dagrid}:run:0194f1c2-7a3b-7c9d-8e1f-123456789abc"),
            "{dagrid}:run:<id>"
        );
        assert_eq!(
            key_kind("{dagrid}:dedup:one:p:0123456789abcdef0123456789abcdef"),
            "{dagrid}:dedup:one:p:<id>"
        );
        assert_eq!(key_kind("{dagrid}:ready:5"), "{dagrid}:ready:5");
        assert_eq!(key_kind("{dagrid}:runs:dag:one"), "{dagrid}:runs:dag:one");
    }
}
