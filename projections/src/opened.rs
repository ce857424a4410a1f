//! Call events of a page as readers see them: decoded, and their sealed personal fields opened
//! with the keys of the page's calls, loaded in one query (none when nothing is sealed).

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
    let mut decoded = Vec::new();
    let mut sealed_ids = Vec::new();
    for event in events {
        let call_event: CallEvent = event
            .decode()
            .map_err(|e| ProjectionError::undecodable(event, e))?;
        if seal::is_sealed(&call_event) {
            sealed_ids.push(event.aggregate_id.clone());
        }
        decoded.push((event, call_event));
    }
    if sealed_ids.is_empty() {
        return Ok(decoded);
    }
    sealed_ids.sort_unstable();
    sealed_ids.dedup();
    let keys = keyring::load(&mut *conn, privacy, &sealed_ids)
        .await
        .map_err(|e| match e {
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
