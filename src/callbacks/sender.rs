//! The callback saga: claim a due delivery, send the signed outcome to the partner, record the
//! attempt on the call. Whether and when to try again is the call's decision (its events), and
//! the schedule lives in the `callback_delivery` table, so deliveries survive restarts.

use std::time::{Duration, Instant};

use callingest_domain::call::{
    split_call_aggregate_id, Call, CallCommand, CallbackFailure, CallbackSuccess, RetryPolicy,
};
use chrono::{DateTime, Utc};
use cqrs_es::EventStore;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::signature::{sign, SigningSecret};
use crate::event_store::{self, Store};
use crate::jobs::{GiveUp, Job, JobError, Step};
use crate::net::{ClientOptions, NetError, OutboundClient, OutboundPolicy};

/// Attempts per series: the first and 3 retries.
pub const MAX_ATTEMPTS: u32 = 4;
/// Longest wait a `Retry-After` may impose (the domain also caps at one hour).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// A 2xx must arrive within this time.
    pub timeout: Duration,
    /// Retry n waits this × 2^(n-1), ±10 %.
    pub backoff_base_ms: u64,
    pub allow_private: bool,
    pub extra_ca_file: Option<std::path::PathBuf>,
}

/// The `webhook-id` of a call's outcome. A call has one outcome, so the id is derived from the
/// call alone: the same on every retry and every redelivery, for partners to de-duplicate.
pub fn webhook_id(call_aggregate_id: &str) -> String {
    let digest = Sha256::digest(format!("callingest:{call_aggregate_id}").as_bytes());
    format!("msg_{}", &hex::encode(digest)[..32])
}

/// The callback step: one delivery attempt of a claimed call's outcome.
pub struct CallbackSender {
    pool: PgPool,
    calls: Store<Call>,
    client: OutboundClient,
    retry: RetryPolicy,
}

impl CallbackSender {
    pub fn new(
        pool: PgPool,
        privacy: &callingest_privacy::Privacy,
        settings: &CallbackSettings,
    ) -> Result<Self, NetError> {
        let policy = OutboundPolicy {
            allow_private: settings.allow_private,
            ..Default::default()
        };
        let options = ClientOptions {
            connect_timeout: settings.timeout.min(Duration::from_secs(10)),
            total_timeout: settings.timeout,
            extra_ca_file: settings.extra_ca_file.clone(),
            // A redirect is an answer like any other non-2xx: the attempt failed.
            follow_redirects: false,
        };
        Ok(Self {
            calls: event_store::store(pool.clone(), privacy),
            pool,
            client: OutboundClient::new(policy, &options)?,
            retry: RetryPolicy {
                max_attempts: MAX_ATTEMPTS,
                backoff_base_ms: settings.backoff_base_ms,
            },
        })
    }
}

#[async_trait::async_trait]
impl Step for CallbackSender {
    /// Sends the signed outcome once and records the attempt. A delivery interrupted mid-flight
    /// is sent again, with the same `webhook-id`.
    async fn run(&self, job: &Job) -> Result<(), JobError> {
        let id = job.call_aggregate_id();
        let context = self
            .calls
            .load_aggregate(id)
            .await
            .map_err(|e| JobError::store(id, e))?;
        let call = &context.aggregate;
        let (Some(payload), Some(url)) = (
            call.callback_payload(),
            call.submission().and_then(|s| s.callback_url.clone()),
        ) else {
            return Ok(());
        };
        if !call.callback_pending() {
            // Delivered or abandoned meanwhile: the projection is about to drop the row.
            return Ok(());
        }
        let secret = self.signing_secret(id).await?;
        let body = serde_json::to_vec(&payload).map_err(|e| JobError::store(id, e))?;
        let msg_id = webhook_id(id);
        let timestamp = chrono::Utc::now().timestamp();
        let request = self
            .client
            .request(Method::POST, url.as_str())
            .map(|request| {
                request
                    .header(CONTENT_TYPE, "application/json")
                    .header("webhook-id", &msg_id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header(
                        "webhook-signature",
                        sign(&secret, &msg_id, timestamp, &body),
                    )
                    .body(body)
            });
        let started = Instant::now();
        let answer = match request {
            Ok(request) => tokio::select! {
                answer = request.send() => answer.map_err(Failure::from),
                () = job.cancel().cancelled() => return Err(JobError::Cancelled),
            },
            Err(refused) => Err(Failure::from_net(&refused)),
        };
        let response_time_ms = started.elapsed().as_millis() as u64;
        let at = chrono::Utc::now();
        let command = match answer {
            Ok(response) if response.status().is_success() => {
                CallCommand::RecordCallbackSuccess(CallbackSuccess {
                    status_code: response.status().as_u16(),
                    response_time_ms,
                    at,
                })
            }
            Ok(response) => {
                let status = response.status();
                let honour_retry_after = matches!(
                    status,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                );
                CallCommand::RecordCallbackFailure(self.failure(
                    Some(status.as_u16()),
                    format!("status {}", status.as_u16()),
                    response_time_ms,
                    honour_retry_after.then(|| retry_after(&response)).flatten(),
                    at,
                ))
            }
            Err(Failure(kind)) => CallCommand::RecordCallbackFailure(self.failure(
                None,
                kind,
                response_time_ms,
                None,
                at,
            )),
        };
        tracing::info!(outcome = %command_summary(&command), response_time_ms, "callback attempt");
        job.record(command).await?;
        Ok(())
    }

    /// An attempt past the pool's limit is a failed attempt (`timeout`); one interrupted by a
    /// drain leaves nothing: callback attempts count only once they report.
    fn give_up(&self, call: &Call, why: GiveUp, at: DateTime<Utc>) -> Option<CallCommand> {
        match why {
            GiveUp::TimedOut { limit } if call.callback_pending() => {
                Some(CallCommand::RecordCallbackFailure(self.failure(
                    None,
                    "timeout".to_owned(),
                    limit.as_millis() as u64,
                    None,
                    at,
                )))
            }
            _ => None,
        }
    }
}

impl CallbackSender {
    fn failure(
        &self,
        status_code: Option<u16>,
        error: String,
        response_time_ms: u64,
        retry_after: Option<Duration>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> CallbackFailure {
        CallbackFailure {
            status_code,
            error,
            response_time_ms,
            retry_after_ms: retry_after.map(|d| d.min(MAX_RETRY_AFTER).as_millis() as u64),
            policy: self.retry,
            jitter_ratio: rand::random_range(-0.1..=0.1),
            at,
        }
    }

    async fn signing_secret(&self, id: &str) -> Result<SigningSecret, JobError> {
        let partner_id = split_call_aggregate_id(id)
            .map(|(p, _)| p)
            .unwrap_or_default();
        let secret: String =
            sqlx::query_scalar("select signing_secret from partner where partner_id = $1")
                .bind(partner_id)
                .fetch_one(&self.pool)
                .await?;
        SigningSecret::parse(&secret).map_err(|_| {
            JobError::Unusable(format!(
                "the signing secret of partner {partner_id} is unusable"
            ))
        })
    }
}

/// Why an attempt got no answer, in a word support can read: `timeout`, `connect`, ...
struct Failure(String);

impl From<reqwest::Error> for Failure {
    fn from(err: reqwest::Error) -> Self {
        if let Some(net) = NetError::find_in(&err) {
            return Self::from_net(net);
        }
        let kind = if err.is_timeout() {
            "timeout"
        } else if err.is_connect() {
            "connect"
        } else if err.is_body() || err.is_decode() {
            "response"
        } else {
            "request"
        };
        Self(kind.to_owned())
    }
}

impl Failure {
    fn from_net(err: &NetError) -> Self {
        let kind = match err {
            NetError::ForbiddenAddress { .. } => "forbidden address",
            NetError::Resolve { .. } => "dns",
            _ => "request",
        };
        Self(kind.to_owned())
    }
}

fn command_summary(command: &CallCommand) -> String {
    match command {
        CallCommand::RecordCallbackSuccess(s) => format!("delivered ({})", s.status_code),
        CallCommand::RecordCallbackFailure(f) => format!("failed ({})", f.error),
        _ => String::new(),
    }
}

/// `Retry-After` as seconds or an HTTP date (a date in the past means now).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    crate::net::retry_after(response.headers().get(RETRY_AFTER)?.to_str().ok()?)
}
