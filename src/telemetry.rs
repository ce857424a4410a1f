//! Logs (tracing, always to stderr so stdout carries only a command's output) and the
//! Prometheus metrics recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::{ConfigError, LogConfig, LogFormat};

/// Installs the log subscriber once, as the `log` section says (`CALLINGEST_LOG`, default
/// `info,sqlx=warn`; `CALLINGEST_LOG_FORMAT=json` for one JSON object per line). A filter that
/// does not parse is refused, naming its variable.
pub fn init_logging(config: &LogConfig) -> Result<(), ConfigError> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(config.env_filter()?)
        .with_writer(std::io::stderr);
    // A second install (tests start many apps in one process) is harmless: keep the first.
    let _ = match config.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    Ok(())
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
