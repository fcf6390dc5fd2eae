//! What cnetd itself costs: resident memory, idle CPU, and restart time.

use std::time::{Duration, Instant};

/// Resident set size of a process, in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmRSS:")
}

/// A size field of a process's `/proc/PID/status` (`VmRSS:`, `RssAnon:` …) in MiB.
pub fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU time (user + system) of a process and its reaped children so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = &stat[stat.rfind(") ")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, and cutime, cstime: the helper processes it waited for.
    let ticks: u64 = (11..=14).map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok())).sum::<Option<u64>>()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks()? as f64))
}

/// `CLK_TCK`, the unit of /proc/PID/stat times.
fn clock_ticks() -> Option<u64> {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Idle CPU use of a process over `window`, in percent of one core.
pub fn idle_cpu_percent(pid: u32, window: Duration) -> Option<f64> {
    let before = cpu_time(pid)?;
    let t = Instant::now();
    std::thread::sleep(window);
    let after = cpu_time(pid)?;
    Some((after - before).as_secs_f64() / t.elapsed().as_secs_f64() * 100.0)
}
