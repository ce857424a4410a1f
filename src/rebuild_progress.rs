//! Progress of `callingest projections rebuild`, reported on stderr while it runs (stdout keeps
//! the one JSON summary per projection that scripts read).

use std::time::Duration;

/// How often a progress line is written.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// One progress line: events replayed of those in the log, the rate so far and an estimate of
/// the time left at that rate.
pub fn progress_line(projection: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        done as f64 / seconds
    } else {
        0.0
    };
    let percent = if total > 0 {
        (done.min(total) as f64 * 100.0 / total as f64).floor()
    } else {
        100.0
    };
    let left = total.saturating_sub(done);
    let estimate = if left == 0 {
        "0s".to_owned()
    } else if rate > 0.0 {
        format!("{}s", (left as f64 / rate).ceil() as u64)
    } else {
        "unknown".to_owned()
    };
    format!(
        "{projection}: {done}/{total} events ({percent}%), {rate:.0} events/s, about {estimate} left"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_gives_the_count_the_rate_and_the_time_left_at_that_rate() {
        let line = progress_line("read_models", 2_500, 10_000, Duration::from_secs(2));
        assert_eq!(
            line,
            "read_models: 2500/10000 events (25%), 1250 events/s, about 6s left"
        );
    }

    #[test]
    fn before_any_event_the_estimate_is_unknown_and_an_empty_log_is_done() {
        assert!(progress_line("p", 0, 10, Duration::ZERO).ends_with("about unknown left"));
        assert_eq!(
            progress_line("p", 0, 0, Duration::from_millis(5)),
            "p: 0/0 events (100%), 0 events/s, about 0s left"
        );
    }

    #[test]
    fn events_written_during_the_rebuild_never_make_it_exceed_all_of_it() {
        let line = progress_line("p", 12, 10, Duration::from_secs(1));
        assert!(
            line.contains("(100%)") && line.ends_with("about 0s left"),
            "{line}"
        );
    }
}
