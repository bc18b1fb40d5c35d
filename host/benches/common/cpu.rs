//! CPU accounting from `/proc`: a process's CPU seconds, and this process's by thread group,
//! so that a bench can say where a host's time went.
#![allow(dead_code)] // not every benchmark accounts CPU

use std::collections::BTreeMap;

/// Clock ticks a second, as `/proc` counts CPU time.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// User plus system CPU seconds from a `stat` file of `/proc` (fields 14 and 15, after the
/// command name, which may itself hold spaces).
fn stat_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    Some((utime + stime) / ticks_per_second())
}

/// CPU seconds used so far by process `pid` (0 if it is gone).
pub fn process_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| stat_seconds(&s)).unwrap_or(0.0)
}

/// This process's CPU seconds so far, by thread group: `workers` (the partition workers,
/// `partition-N`), `kafka clients` (librdkafka's `rdk:` threads) and `other`. Threads that
/// have ended are not counted, so compare snapshots of threads that outlive both.
pub fn thread_groups() -> BTreeMap<&'static str, f64> {
    let mut groups = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return groups };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let seconds = std::fs::read_to_string(path.join("stat")).ok().and_then(|s| stat_seconds(&s)).unwrap_or(0.0);
        let group = if name.starts_with("partition-") {
            "workers"
        } else if name.starts_with("rdk:") {
            "kafka clients"
        } else {
            "other"
        };
        *groups.entry(group).or_insert(0.0) += seconds;
    }
    groups
}
