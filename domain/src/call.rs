//! The `Call` aggregate: one call of one partner, identified by `{partner_id}:{call_id}`.
//! That identity is what makes ingest idempotent: a call can be accepted once, and every later
//! submission of the same id is only recorded as a duplicate.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::submission::NewCall;
use crate::values::{CallId, PartnerId, TenantId};

/// The aggregate id of a partner's call. Partner ids never contain `:`, so the first colon
/// splits it back (see [`split_call_aggregate_id`]).
pub fn call_aggregate_id(partner_id: &PartnerId, call_id: &CallId) -> String {
    format!("{partner_id}:{call_id}")
}

/// `(partner_id, call_id)` of a call aggregate id.
pub fn split_call_aggregate_id(aggregate_id: &str) -> Option<(&str, &str)> {
    aggregate_id.split_once(':')
}

// ---------------------------------------------------------------- commands

#[derive(Debug, Clone, PartialEq)]
pub enum CallCommand {
    /// Take a submitted call in, or record it as a duplicate when it is already known.
    AcceptCall(AcceptCall),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcceptCall {
    pub partner_id: PartnerId,
    pub tenant_id: TenantId,
    pub sub_tenant_id: TenantId,
    pub batch_id: Uuid,
    pub call: NewCall,
    /// When the request carrying the call arrived (the domain reads no clock).
    pub received_at: DateTime<Utc>,
}

// ---------------------------------------------------------------- events

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CallEvent {
    CallAccepted(CallAccepted),
    DuplicateSubmissionReceived(DuplicateSubmissionReceived),
}

/// A call was taken in; it holds everything the partner submitted, extra fields included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallAccepted {
    pub partner_id: PartnerId,
    pub tenant_id: TenantId,
    pub sub_tenant_id: TenantId,
    pub batch_id: Uuid,
    pub accepted_at: DateTime<Utc>,
    /// Boxed: it dwarfs the other events (same JSON either way).
    pub call: Box<NewCall>,
}

/// A known call id was submitted again. It is not processed again; this is the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateSubmissionReceived {
    pub batch_id: Uuid,
    pub tenant_id: TenantId,
    pub sub_tenant_id: TenantId,
    pub received_at: DateTime<Utc>,
    /// Whether the resubmitted call differs from the one accepted (tenants included).
    pub payload_differs: bool,
}

impl DomainEvent for CallEvent {
    fn event_type(&self) -> String {
        match self {
            CallEvent::CallAccepted(_) => "CallAccepted",
            CallEvent::DuplicateSubmissionReceived(_) => "DuplicateSubmissionReceived",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

// ---------------------------------------------------------------- errors

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// A guard on the identity rule: a call only ever belongs to the partner that sent it.
    #[error("call belongs to partner {owner}, not {requester}")]
    OtherPartnersCall { owner: String, requester: String },
}

// ---------------------------------------------------------------- aggregate

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    accepted: Option<AcceptedCall>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AcceptedCall {
    partner_id: PartnerId,
    tenant_id: TenantId,
    sub_tenant_id: TenantId,
    call: NewCall,
}

impl Call {
    pub fn is_accepted(&self) -> bool {
        self.accepted.is_some()
    }
}

impl Aggregate for Call {
    const TYPE: &'static str = "Call";
    type Command = CallCommand;
    type Event = CallEvent;
    type Error = CallError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            CallCommand::AcceptCall(cmd) => {
                let event = self.accept(cmd)?;
                sink.write(event, self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CallEvent::CallAccepted(e) => {
                self.accepted = Some(AcceptedCall {
                    partner_id: e.partner_id,
                    tenant_id: e.tenant_id,
                    sub_tenant_id: e.sub_tenant_id,
                    call: *e.call,
                });
            }
            CallEvent::DuplicateSubmissionReceived(_) => {}
        }
    }
}

impl Call {
    fn accept(&self, cmd: AcceptCall) -> Result<CallEvent, CallError> {
        let Some(known) = &self.accepted else {
            return Ok(CallEvent::CallAccepted(CallAccepted {
                partner_id: cmd.partner_id,
                tenant_id: cmd.tenant_id,
                sub_tenant_id: cmd.sub_tenant_id,
                batch_id: cmd.batch_id,
                accepted_at: cmd.received_at,
                call: Box::new(cmd.call),
            }));
        };
        if known.partner_id != cmd.partner_id {
            return Err(CallError::OtherPartnersCall {
                owner: known.partner_id.to_string(),
                requester: cmd.partner_id.to_string(),
            });
        }
        let payload_differs = known.call != cmd.call
            || known.tenant_id != cmd.tenant_id
            || known.sub_tenant_id != cmd.sub_tenant_id;
        Ok(CallEvent::DuplicateSubmissionReceived(
            DuplicateSubmissionReceived {
                batch_id: cmd.batch_id,
                tenant_id: cmd.tenant_id,
                sub_tenant_id: cmd.sub_tenant_id,
                received_at: cmd.received_at,
                payload_differs,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submission::validate_batch;
    use cqrs_es::test::TestFramework;
    use serde_json::json;

    type CallTest = TestFramework<Call>;

    fn new_call(id: &str) -> NewCall {
        let body = json!({"data": [{
            "call": {
                "id": id,
                "recording_url": "https://recordings.invalid/a.mp3",
                "start_time": "2023-01-01T10:00:00Z",
                "end_time": "2023-01-01T10:30:00Z",
                "contact_number": "+1234567890"
            },
            "agent": {"id": "agent-1"},
            "customer": {"id": "customer-1"}
        }]});
        validate_batch(&body).unwrap().remove(0)
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn accept(partner: &str, tenant: &str, call: NewCall, batch: u128) -> AcceptCall {
        AcceptCall {
            partner_id: PartnerId::parse(partner).unwrap(),
            tenant_id: TenantId::parse(tenant).unwrap(),
            sub_tenant_id: TenantId::parse("sub").unwrap(),
            batch_id: Uuid::from_u128(batch),
            call,
            received_at: at("2024-05-01T12:00:00Z"),
        }
    }

    fn accepted(cmd: &AcceptCall) -> CallEvent {
        CallEvent::CallAccepted(CallAccepted {
            partner_id: cmd.partner_id.clone(),
            tenant_id: cmd.tenant_id.clone(),
            sub_tenant_id: cmd.sub_tenant_id.clone(),
            batch_id: cmd.batch_id,
            accepted_at: cmd.received_at,
            call: Box::new(cmd.call.clone()),
        })
    }

    #[test]
    fn a_new_call_is_accepted_with_everything_submitted() {
        let cmd = accept("p1", "t1", new_call("c1"), 1);
        CallTest::with(())
            .given_no_previous_events()
            .when(CallCommand::AcceptCall(cmd.clone()))
            .then_expect_events(vec![accepted(&cmd)]);
    }

    #[test]
    fn the_same_call_again_is_a_duplicate_not_a_second_acceptance() {
        let first = accept("p1", "t1", new_call("c1"), 1);
        let again = accept("p1", "t1", new_call("c1"), 2);
        CallTest::with(())
            .given(vec![accepted(&first)])
            .when(CallCommand::AcceptCall(again.clone()))
            .then_expect_events(vec![CallEvent::DuplicateSubmissionReceived(
                DuplicateSubmissionReceived {
                    batch_id: again.batch_id,
                    tenant_id: again.tenant_id,
                    sub_tenant_id: again.sub_tenant_id,
                    received_at: again.received_at,
                    payload_differs: false,
                },
            )]);
    }

    #[test]
    fn a_duplicate_records_that_its_payload_differed() {
        let first = accept("p1", "t1", new_call("c1"), 1);
        let mut changed = new_call("c1");
        changed.agent.extra.insert("team".into(), json!("red"));
        for again in [
            accept("p1", "t1", changed, 2),
            accept("p1", "other-tenant", new_call("c1"), 2),
        ] {
            let events = CallTest::with(())
                .given(vec![accepted(&first)])
                .when(CallCommand::AcceptCall(again))
                .inspect_result()
                .unwrap();
            let [CallEvent::DuplicateSubmissionReceived(dup)] = events.as_slice() else {
                panic!("expected one duplicate, got {events:?}");
            };
            assert!(dup.payload_differs);
        }
    }

    #[test]
    fn a_call_cannot_be_taken_over_by_another_partner() {
        let first = accept("p1", "t1", new_call("c1"), 1);
        CallTest::with(())
            .given(vec![accepted(&first)])
            .when(CallCommand::AcceptCall(accept(
                "p2",
                "t1",
                new_call("c1"),
                2,
            )))
            .then_expect_error(CallError::OtherPartnersCall {
                owner: "p1".into(),
                requester: "p2".into(),
            });
    }

    #[test]
    fn aggregate_ids_split_at_the_first_colon() {
        let partner = PartnerId::parse("acme").unwrap();
        let call = CallId::parse("a:b:c").unwrap();
        let id = call_aggregate_id(&partner, &call);
        assert_eq!(id, "acme:a:b:c");
        assert_eq!(split_call_aggregate_id(&id), Some(("acme", "a:b:c")));
    }

    #[test]
    fn event_types_are_the_variant_names() {
        let cmd = accept("p1", "t1", new_call("c1"), 1);
        assert_eq!(accepted(&cmd).event_type(), "CallAccepted");
        let json = serde_json::to_value(accepted(&cmd)).unwrap();
        assert!(json.get("CallAccepted").is_some());
    }
}
