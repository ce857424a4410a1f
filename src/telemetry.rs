//! Logs (tracing, always to stderr so stdout carries only a command's output) and the
//! Prometheus metrics recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber once. `CALLINGEST_LOG` sets the filter (default `info,sqlx=warn`),
/// `CALLINGEST_LOG_FORMAT=json` switches to one JSON object per line.
pub fn init_logging() {
    let filter = EnvFilter::try_from_env("CALLINGEST_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var("CALLINGEST_LOG_FORMAT").is_ok_and(|f| f == "json");
    // A second install (tests start many apps in one process) is harmless: keep the first.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The process-wide metrics recorder; installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency_buckets = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("callingest_http_request_duration_seconds".into()),
                    &latency_buckets,
                )
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}
