//! The `Batch` aggregate: one accepted request of up to 50 calls, with a server-made id.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::submission::MAX_CALLS_PER_BATCH;
use crate::values::{CallId, PartnerId, TenantId};

#[derive(Debug, Clone, PartialEq)]
pub enum BatchCommand {
    SubmitBatch(SubmitBatch),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubmitBatch {
    pub batch_id: Uuid,
    pub partner_id: PartnerId,
    pub tenant_id: TenantId,
    pub sub_tenant_id: TenantId,
    /// The call ids in the order they were sent (repeats included).
    pub call_ids: Vec<CallId>,
    pub received_at: DateTime<Utc>,
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BatchEvent {
    BatchSubmitted(BatchSubmitted),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSubmitted {
    pub batch_id: Uuid,
    pub partner_id: PartnerId,
    pub tenant_id: TenantId,
    pub sub_tenant_id: TenantId,
    pub call_ids: Vec<CallId>,
    pub received_at: DateTime<Utc>,
    pub request_id: String,
}

impl DomainEvent for BatchEvent {
    fn event_type(&self) -> String {
        match self {
            BatchEvent::BatchSubmitted(_) => "BatchSubmitted".to_owned(),
        }
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("a batch must contain at least one call")]
    Empty,
    #[error("a batch may contain at most {MAX_CALLS_PER_BATCH} calls, got {0}")]
    TooManyCalls(usize),
    #[error("batch was already submitted")]
    AlreadySubmitted,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    submitted: bool,
}

impl Batch {
    /// The one rule set of a submission, shared by `handle` and by the batched append path.
    pub fn submit(&self, cmd: SubmitBatch) -> Result<BatchEvent, BatchError> {
        if self.submitted {
            return Err(BatchError::AlreadySubmitted);
        }
        match cmd.call_ids.len() {
            0 => return Err(BatchError::Empty),
            n if n > MAX_CALLS_PER_BATCH => return Err(BatchError::TooManyCalls(n)),
            _ => {}
        }
        Ok(BatchEvent::BatchSubmitted(BatchSubmitted {
            batch_id: cmd.batch_id,
            partner_id: cmd.partner_id,
            tenant_id: cmd.tenant_id,
            sub_tenant_id: cmd.sub_tenant_id,
            call_ids: cmd.call_ids,
            received_at: cmd.received_at,
            request_id: cmd.request_id,
        }))
    }
}

impl Aggregate for Batch {
    const TYPE: &'static str = "Batch";
    type Command = BatchCommand;
    type Event = BatchEvent;
    type Error = BatchError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            BatchCommand::SubmitBatch(cmd) => {
                let event = self.submit(cmd)?;
                sink.write(event, self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BatchEvent::BatchSubmitted(_) => self.submitted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn submit(calls: usize) -> SubmitBatch {
        SubmitBatch {
            batch_id: Uuid::from_u128(7),
            partner_id: PartnerId::parse("p1").unwrap(),
            tenant_id: TenantId::parse("t1").unwrap(),
            sub_tenant_id: TenantId::parse("s1").unwrap(),
            call_ids: (0..calls)
                .map(|i| CallId::parse(&format!("c{i}")).unwrap())
                .collect(),
            received_at: "2024-05-01T12:00:00Z".parse().unwrap(),
            request_id: "req-1".into(),
        }
    }

    fn submitted(cmd: &SubmitBatch) -> BatchEvent {
        BatchEvent::BatchSubmitted(BatchSubmitted {
            batch_id: cmd.batch_id,
            partner_id: cmd.partner_id.clone(),
            tenant_id: cmd.tenant_id.clone(),
            sub_tenant_id: cmd.sub_tenant_id.clone(),
            call_ids: cmd.call_ids.clone(),
            received_at: cmd.received_at,
            request_id: cmd.request_id.clone(),
        })
    }

    #[test]
    fn a_batch_is_submitted_with_its_call_ids() {
        let cmd = submit(3);
        TestFramework::<Batch>::with(())
            .given_no_previous_events()
            .when(BatchCommand::SubmitBatch(cmd.clone()))
            .then_expect_events(vec![submitted(&cmd)]);
    }

    #[test]
    fn a_batch_cannot_be_submitted_twice() {
        let cmd = submit(1);
        TestFramework::<Batch>::with(())
            .given(vec![submitted(&cmd)])
            .when(BatchCommand::SubmitBatch(cmd))
            .then_expect_error(BatchError::AlreadySubmitted);
    }

    #[test]
    fn an_empty_batch_is_refused() {
        TestFramework::<Batch>::with(())
            .given_no_previous_events()
            .when(BatchCommand::SubmitBatch(submit(0)))
            .then_expect_error(BatchError::Empty);
    }

    #[test]
    fn a_batch_over_fifty_calls_is_refused() {
        TestFramework::<Batch>::with(())
            .given_no_previous_events()
            .when(BatchCommand::SubmitBatch(submit(51)))
            .then_expect_error(BatchError::TooManyCalls(51));
    }
}
