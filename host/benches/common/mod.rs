//! Shared by the benchmarks: the machine's description and the BENCHMARKS.md writer.
#![allow(dead_code)] // each benchmark uses its own part

pub mod cpu;
pub mod fleet;

use std::path::Path;

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores, {}", std::env::consts::ARCH)
}

/// Replaces the section starting at `heading` (up to the next `## ` heading) in `path`, or
/// appends it; creates the file with a title if needed.
pub fn write_section(path: &Path, heading: &str, body: &str) -> std::io::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let new = match old.find(heading) {
        Some(start) => {
            let rest = &old[start + heading.len()..];
            let end = rest.find("\n## ").map_or(old.len(), |i| start + heading.len() + i + 1);
            format!("{}{body}{}", &old[..start], &old[end..])
        }
        None => format!("{}\n{body}", old.trim_end_matches('\n').to_owned() + "\n"),
    };
    std::fs::write(path, new)
}

/// The 1, 5 and 15 minute load averages, to show how busy the machine was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map_or("unknown".into(), |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}
