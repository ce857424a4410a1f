//! Turning a validated batch into events: every call of the batch is either accepted or
//! recorded as a duplicate, and the batch itself is recorded, before `submit` returns.
//!
//! The fast path appends the whole batch in one transaction (see [`batch_append`]); when a
//! concurrent writer got to one of its calls first, it falls back to one cqrs-es command per
//! call, which reloads and retries on conflict.

mod batch_append;
mod call_by_call;

use std::collections::HashMap;

use callingest_domain::submission::NewCall;
use callingest_domain::values::{CallId, PartnerId, TenantId};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

pub use batch_append::BatchAppender;
pub use call_by_call::CallByCall;

/// Who sent a submission and through which request; stored as metadata of every event.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub request_id: String,
    pub source_ip: String,
    pub user_agent: String,
}

impl RequestContext {
    pub fn event_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("request_id".to_owned(), self.request_id.clone()),
            ("source_ip".to_owned(), self.source_ip.clone()),
            ("user_agent".to_owned(), self.user_agent.clone()),
        ])
    }
}

/// A batch that passed validation, ready to become events.
#[derive(Debug, Clone)]
pub struct Submission {
    pub partner_id: PartnerId,
    pub tenant_id: TenantId,
    pub sub_tenant_id: TenantId,
    pub calls: Vec<NewCall>,
    pub received_at: DateTime<Utc>,
    pub request: RequestContext,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// First time this partner sent this call id: it will be processed.
    Accepted,
    /// The call id was already known: recorded, not processed again.
    Duplicate,
}

/// What became of each call of a batch, in the order they were sent.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub batch_id: Uuid,
    pub calls: Vec<(CallId, CallOutcome)>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The database could not be reached or did not answer in time.
    #[error("database unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("could not store the batch")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl IngestError {
    /// `Unavailable` when a database error in `err`'s chain says so (the one classifier,
    /// [`crate::db::means_unavailable`]), `Store` otherwise.
    fn classify(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        if crate::error_chain::caused_by_unavailable_database(&err) {
            Self::Unavailable(Box::new(err))
        } else {
            Self::Store(Box::new(err))
        }
    }
}

impl From<sqlx::Error> for IngestError {
    fn from(err: sqlx::Error) -> Self {
        Self::classify(err)
    }
}

pub struct IngestService {
    fast: BatchAppender,
    slow: CallByCall,
}

impl IngestService {
    pub fn new(pool: PgPool, privacy: &callingest_privacy::Privacy) -> Self {
        Self {
            fast: BatchAppender::new(pool.clone(), privacy),
            slow: CallByCall::new(pool, privacy),
        }
    }

    pub async fn submit(&self, submission: &Submission) -> Result<Receipt, IngestError> {
        let batch_id = Uuid::now_v7();
        let receipt = match self.fast.append(batch_id, submission).await? {
            Some(receipt) => receipt,
            None => {
                metrics::counter!("callingest_batch_append_fallbacks_total").increment(1);
                tracing::info!(%batch_id, "batch append conflicted; appending call by call");
                self.slow.append(batch_id, submission).await?
            }
        };
        let accepted = receipt
            .calls
            .iter()
            .filter(|(_, o)| *o == CallOutcome::Accepted)
            .count();
        metrics::counter!("callingest_calls_accepted_total").increment(accepted as u64);
        metrics::counter!("callingest_calls_duplicate_total")
            .increment((receipt.calls.len() - accepted) as u64);
        metrics::counter!("callingest_batches_accepted_total").increment(1);
        Ok(receipt)
    }
}

/// The commands of a submission, shared by both paths so they cannot drift apart.
mod commands {
    use callingest_domain::batch::SubmitBatch;
    use callingest_domain::call::AcceptCall;
    use uuid::Uuid;

    use super::Submission;

    pub fn accept_calls(batch_id: Uuid, s: &Submission) -> impl Iterator<Item = AcceptCall> + '_ {
        s.calls.iter().map(move |call| AcceptCall {
            partner_id: s.partner_id.clone(),
            tenant_id: s.tenant_id.clone(),
            sub_tenant_id: s.sub_tenant_id.clone(),
            batch_id,
            call: call.clone(),
            received_at: s.received_at,
        })
    }

    pub fn submit_batch(batch_id: Uuid, s: &Submission) -> SubmitBatch {
        SubmitBatch {
            batch_id,
            partner_id: s.partner_id.clone(),
            tenant_id: s.tenant_id.clone(),
            sub_tenant_id: s.sub_tenant_id.clone(),
            call_ids: s.calls.iter().map(|c| c.call.id.clone()).collect(),
            received_at: s.received_at,
            request_id: s.request.request_id.clone(),
        }
    }
}
