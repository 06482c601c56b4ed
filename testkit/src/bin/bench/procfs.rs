//! Memory and CPU of a process, read from /proc (Linux).

use anyhow::{Context, Result};

/// Resident memory of a process.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// VmRSS: resident now, KiB.
    pub rss_kib: u64,
    /// VmHWM: the peak resident set since the process started, KiB.
    pub peak_kib: u64,
}

/// Reads VmRSS and VmHWM of `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Memory { rss_kib: field("VmRSS:")?, peak_kib: field("VmHWM:")? })
}

/// CPU seconds (user + system) of `pid` itself, and of its children it has waited for.
pub fn cpu_seconds(pid: &str) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; the fields after it are plain numbers.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed /proc stat")?;
    let fields: Vec<f64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
    // utime, stime, cutime, cstime are fields 14-17 of stat, 12-15 after the name; they count
    // in USER_HZ, which Linux fixes at 100 for /proc.
    let ticks = |i: usize| fields.get(i - 3).copied().unwrap_or(0.0) / 100.0;
    Ok((ticks(14) + ticks(15), ticks(16) + ticks(17)))
}
