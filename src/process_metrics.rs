//! Process metrics in the Prometheus text format, measured when `/metrics` is scraped: resident
//! memory, open file descriptors and CPU time, read from `/proc/self` (Linux; elsewhere nothing
//! is reported). The names are the conventional `process_*` ones, so the usual dashboards work.
//!
//! Written here rather than taken from `metrics-exporter-prometheus`, which has no process
//! collector; CPU seconds are a float counter, which the `metrics` facade cannot express.

use std::fmt::Write;

/// What the kernel says about this process right now.
#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    threads: u64,
    start_time_seconds: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

/// The process metrics as Prometheus text (empty where `/proc` is not available).
pub fn render() -> String {
    match read() {
        Some(stats) => format(&stats),
        None => String::new(),
    }
}

fn format(stats: &ProcessStats) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        stats.cpu_seconds.to_string(),
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        stats.resident_bytes.to_string(),
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        stats.virtual_bytes.to_string(),
    );
    metric(
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        stats.threads.to_string(),
    );
    if let Some(start) = stats.start_time_seconds {
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start.to_string(),
        );
    }
    if let Some(open) = stats.open_fds {
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open.to_string(),
        );
    }
    if let Some(max) = stats.max_fds {
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors (soft limit).",
            max.to_string(),
        );
    }
    out
}

#[cfg(target_os = "linux")]
fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // SAFETY: sysconf only reads a system constant.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_boot_time(&s));
    let mut stats = parse_stat(&stat, ticks.max(1) as u64, page.max(1) as u64, boot_time)?;
    // Counting the entries opens one more descriptor for the listing itself; that is as the
    // other Prometheus clients count.
    stats.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as u64);
    stats.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| parse_max_open_files(&s));
    Some(stats)
}

#[cfg(not(target_os = "linux"))]
fn read() -> Option<ProcessStats> {
    None
}

/// `/proc/self/stat`: the command name (field 2) is in parentheses and may itself hold spaces
/// and parentheses, so the fields are counted from the last `)`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_stat(
    stat: &str,
    ticks_per_second: u64,
    page_bytes: u64,
    boot_time: Option<u64>,
) -> Option<ProcessStats> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = ticks_per_second as f64;
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        threads: field(20)?,
        start_time_seconds: boot_time
            .and_then(|boot| Some(boot as f64 + field(22)? as f64 / ticks)),
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page_bytes,
        open_fds: None,
        max_fds: None,
    })
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name_whatever_it_holds() {
        // A command name with spaces and a `)` of its own; utime 250, stime 50 ticks, 7
        // threads, started 1000 ticks after boot, 4096000 bytes virtual, 300 pages resident.
        let stat = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                    1000 4096000 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stats = parse_stat(stat, 100, 4096, Some(1_700_000_000)).unwrap();
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.threads, 7);
        assert_eq!(stats.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(stats.virtual_bytes, 4_096_000);
        assert_eq!(stats.resident_bytes, 300 * 4096);
        assert_eq!(parse_stat("garbage", 100, 4096, None), None);
    }

    #[test]
    fn limits_and_boot_time_are_read_from_their_lines() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             63304                63304                processes\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reports_memory_descriptors_and_cpu() {
        let text = render();
        for name in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_cpu_seconds_total",
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing from {text}"));
            let value: f64 = line[name.len() + 1..].parse().unwrap();
            assert!(value >= 0.0);
        }
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            rss > 1_000_000.0,
            "a test process uses more than 1 MB: {rss}"
        );
    }
}
