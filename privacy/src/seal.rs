//! An event's stored form and back. Every path that writes call events seals them here, and
//! every path that reads them opens them here, so the personal fields are never stored in clear
//! and an erased field always reads the same way: [`Personal::Erased`], never an error.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use callingest_domain::call::CallEvent;
use callingest_domain::personal::{AgentPersonal, CallPersonal, Personal, Sealed};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::keys::{field_aad, CallKeys, DataKey, Part, Privacy, SEAL_PREFIX};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A sealed field whose key exists did not open: the data was altered, or the keyring
    /// does not belong to this event log.
    #[error("the sealed personal data of {aggregate_id} does not open with its key")]
    DoesNotOpen { aggregate_id: String },
    #[error("personal data of {aggregate_id} could not be encoded")]
    Encoding {
        aggregate_id: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The types of the events that can hold sealed fields (their `event_type` in the log, the
/// variant's name): a reader can load the keys a page needs before it decodes the page.
pub const SEALABLE_EVENT_TYPES: [&str; 2] = ["CallAccepted", "TranscriptProduced"];

/// Whether a stored event holds sealed fields (and so needs its call's keys to be read).
pub fn is_sealed(event: &CallEvent) -> bool {
    match event {
        CallEvent::CallAccepted(e) => e.sealed.is_some(),
        CallEvent::TranscriptProduced(e) => e.sealed.is_some(),
        _ => false,
    }
}

/// The form of `event` to store: its personal fields sealed under `keys`. A field whose key is
/// already gone (the call was erased while this event was being made) is not stored at all.
pub fn seal_event<'e>(
    privacy: &Privacy,
    aggregate_id: &str,
    event: &'e CallEvent,
    keys: &CallKeys,
) -> Result<Cow<'e, CallEvent>, SealError> {
    if !needs_sealing(event) {
        return Ok(Cow::Borrowed(event));
    }
    seal_owned_event(privacy, aggregate_id, event.clone(), keys).map(Cow::Owned)
}

/// [`seal_event`] for an event the caller owns: the fields move into the sealed form instead
/// of being copied (the batch append seals every call it accepts).
pub fn seal_owned_event(
    privacy: &Privacy,
    aggregate_id: &str,
    event: CallEvent,
    keys: &CallKeys,
) -> Result<CallEvent, SealError> {
    let sealer = Sealer {
        privacy,
        aggregate_id,
    };
    match event {
        CallEvent::CallAccepted(mut e) if e.sealed.is_none() => {
            let call = e.call.take_call_personal();
            let agent = e.call.take_agent_personal();
            e.sealed = Some(Sealed {
                call: sealer.seal("CallAccepted", Part::Call, keys.call.as_ref(), &call)?,
                agent: sealer.seal("CallAccepted", Part::Agent, keys.agent.as_ref(), &agent)?,
            });
            Ok(CallEvent::CallAccepted(e))
        }
        CallEvent::TranscriptProduced(mut e) if e.sealed.is_none() => {
            let segments = e.segments.take();
            e.sealed = Some(Sealed {
                call: sealer.seal(
                    "TranscriptProduced",
                    Part::Call,
                    keys.call.as_ref(),
                    &segments,
                )?,
                agent: None,
            });
            Ok(CallEvent::TranscriptProduced(e))
        }
        other => Ok(other),
    }
}

fn needs_sealing(event: &CallEvent) -> bool {
    match event {
        CallEvent::CallAccepted(e) => e.sealed.is_none(),
        CallEvent::TranscriptProduced(e) => e.sealed.is_none(),
        _ => false,
    }
}

/// The event as readers see it: sealed fields opened with `keys`, or left erased where a key
/// is gone (`keys` `None`: the call has no keys left at all).
pub fn open_event(
    privacy: &Privacy,
    aggregate_id: &str,
    event: CallEvent,
    keys: Option<&CallKeys>,
) -> Result<CallEvent, SealError> {
    let no_keys = CallKeys::default();
    let keys = keys.unwrap_or(&no_keys);
    let sealer = Sealer {
        privacy,
        aggregate_id,
    };
    Ok(match event {
        CallEvent::CallAccepted(mut e) => {
            if let Some(sealed) = e.sealed.take() {
                if let Some(call) = sealer.open::<CallPersonal>(
                    "CallAccepted",
                    Part::Call,
                    keys.call.as_ref(),
                    sealed.call.as_deref(),
                )? {
                    e.call.restore_call_personal(call);
                }
                if let Some(agent) = sealer.open::<AgentPersonal>(
                    "CallAccepted",
                    Part::Agent,
                    keys.agent.as_ref(),
                    sealed.agent.as_deref(),
                )? {
                    e.call.restore_agent_personal(agent);
                }
            }
            CallEvent::CallAccepted(e)
        }
        CallEvent::TranscriptProduced(mut e) => {
            if let Some(sealed) = e.sealed.take() {
                e.segments = sealer
                    .open::<Personal<_>>(
                        "TranscriptProduced",
                        Part::Call,
                        keys.call.as_ref(),
                        sealed.call.as_deref(),
                    )?
                    .unwrap_or_default();
            }
            CallEvent::TranscriptProduced(e)
        }
        other => other,
    })
}

struct Sealer<'a> {
    privacy: &'a Privacy,
    aggregate_id: &'a str,
}

impl Sealer<'_> {
    fn seal<T: Serialize>(
        &self,
        event_type: &str,
        part: Part,
        key: Option<&DataKey>,
        value: &T,
    ) -> Result<Option<String>, SealError> {
        let Some(key) = key else {
            return Ok(None);
        };
        // Serialised straight into the buffer that is then sealed in place.
        let mut buf = Vec::with_capacity(512);
        buf.resize(SEAL_PREFIX, 0);
        serde_json::to_writer(&mut buf, value).map_err(|source| SealError::Encoding {
            aggregate_id: self.aggregate_id.to_owned(),
            source,
        })?;
        let aad = field_aad(self.aggregate_id, event_type, part);
        self.privacy.seal_buffer(key, &aad, &mut buf);
        Ok(Some(STANDARD_NO_PAD.encode(&buf)))
    }

    /// `None` when there is nothing to open or its key is gone: the fields stay erased.
    fn open<T: DeserializeOwned>(
        &self,
        event_type: &str,
        part: Part,
        key: Option<&DataKey>,
        sealed: Option<&str>,
    ) -> Result<Option<T>, SealError> {
        let (Some(key), Some(sealed)) = (key, sealed) else {
            return Ok(None);
        };
        let does_not_open = || SealError::DoesNotOpen {
            aggregate_id: self.aggregate_id.to_owned(),
        };
        let bytes = STANDARD_NO_PAD
            .decode(sealed)
            .map_err(|_| does_not_open())?;
        let aad = field_aad(self.aggregate_id, event_type, part);
        let plain = self
            .privacy
            .open(key, &aad, &bytes)
            .map_err(|_| does_not_open())?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|source| SealError::Encoding {
                aggregate_id: self.aggregate_id.to_owned(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterKey;

    /// An accepted call as the ingest benchmark submits it, in the event's JSON.
    const ACCEPTED: &str = r#"{"CallAccepted": {"call": {"call": {"id": "c1",
        "end_time": "2023-01-01T10:30:00Z", "start_time": "2023-01-01T10:00:00Z",
        "recording_url": "https://recordings.invalid/recordings/call.mp3",
        "contact_number": "+1234567890"},
        "agent": {"id": "agent123", "name": "John Doe", "email": "agent@example.com"},
        "extra": {"function": "Sales", "industry": "Technology"},
        "customer": {"id": "customer123", "name": "Jane Smith", "email": "customer@example.com",
                     "disposition_status": "interested"},
        "metadata": {"source": "Website", "campaign": "Q1 Outreach"},
        "callback_url": "https://partner.invalid/callback", "custom_fields": []},
        "batch_id": "01a233d3-77a4-74c5-ae53-e96e1f493675", "tenant_id": "tenant1",
        "partner_id": "p", "accepted_at": "2026-12-01T22:57:06.468356166Z",
        "sub_tenant_id": "subtenant1"}}"#;

    #[test]
    fn a_sealed_call_holds_no_personal_value_and_opens_back_to_the_same_event() {
        let privacy = Privacy::new(&MasterKey::from_base64(&MasterKey::generate_base64()).unwrap());
        let event: CallEvent = serde_json::from_str(ACCEPTED).unwrap();
        let CallEvent::CallAccepted(accepted) = &event else {
            unreachable!()
        };
        let (keys, _) = privacy.new_key_row("p", "p:c1", &accepted.call);

        let stored = seal_owned_event(&privacy, "p:c1", event.clone(), &keys).unwrap();
        let text = serde_json::to_string(&stored).unwrap();
        for personal in [
            "+1234567890",
            "recordings.invalid",
            "Jane Smith",
            "customer@example.com",
            "John Doe",
            "agent@example.com",
            "Q1 Outreach",
            "Technology",
        ] {
            assert!(
                !text.contains(personal),
                "{personal} stored in clear: {text}"
            );
        }
        let read = |text: &str, id| {
            open_event(
                &privacy,
                id,
                serde_json::from_str(text).unwrap(),
                Some(&keys),
            )
        };
        assert_eq!(read(&text, "p:c1").unwrap(), event);
        assert!(
            read(&text, "p:c2").is_err(),
            "a ciphertext moved to another call must not open"
        );
        // The borrowing form (other writers) stores what opens to the same event.
        let borrowed = seal_event(&privacy, "p:c1", &event, &keys).unwrap();
        let borrowed = serde_json::to_string(borrowed.as_ref()).unwrap();
        assert_eq!(read(&borrowed, "p:c1").unwrap(), event);
    }
}
