//! Call events of a page as the projections see them: decoded, and their sealed personal fields
//! opened with the keys of the page's calls, loaded in one query (none when nothing is sealed).
//!
//! Only the call key's part is opened: no read model holds the agent's name, e-mail or unknown
//! fields, so a replay neither loads nor unwraps agent keys, and those fields read as erased
//! here.

use callingest_domain::call::CallEvent;
use callingest_privacy::{keyring, seal, KeyringError, Privacy};
use sqlx::PgConnection;

use crate::event_log::StoredEvent;
use crate::projector::ProjectionError;

pub async fn open_call_events<'e>(
    conn: &mut PgConnection,
    privacy: &Privacy,
    events: impl Iterator<Item = &'e StoredEvent>,
) -> Result<Vec<(&'e StoredEvent, CallEvent)>, ProjectionError> {
    let events: Vec<&StoredEvent> = events.collect();
    // The calls whose events may be sealed, known from the event type alone: PostgreSQL looks
    // their keys up while this process decodes the page, instead of one after the other
    // (`biased`: the query is sent first, then the decoding runs to its end).
    let mut sealable: Vec<String> = events
        .iter()
        .filter(|e| seal::SEALABLE_EVENT_TYPES.contains(&e.event_type.as_str()))
        .map(|e| e.aggregate_id.clone())
        .collect();
    sealable.sort_unstable();
    sealable.dedup();
    let (keys, decoded) = tokio::join!(
        biased;
        keyring::load_call_keys(&mut *conn, privacy, &sealable),
        async { decode(&events) }
    );
    let decoded = decoded?;
    let keys = keys.map_err(|e| match e {
        KeyringError::Database(e) => ProjectionError::Database(e),
        other => ProjectionError::Keyring(other),
    })?;
    decoded
        .into_iter()
        .map(|(event, e)| {
            if !seal::is_sealed(&e) {
                return Ok((event, e));
            }
            let opened = seal::open_event(
                privacy,
                &event.aggregate_id,
                e,
                keys.get(&event.aggregate_id),
            )
            .map_err(|source| ProjectionError::Sealed {
                global_position: event.global_position,
                source,
            })?;
            Ok((event, opened))
        })
        .collect()
}

fn decode<'e>(
    events: &[&'e StoredEvent],
) -> Result<Vec<(&'e StoredEvent, CallEvent)>, ProjectionError> {
    events
        .iter()
        .map(|event| {
            let call_event: CallEvent = event
                .decode()
                .map_err(|e| ProjectionError::undecodable(event, e))?;
            Ok((*event, call_event))
        })
        .collect()
}
