//! The `keyring` schema: one row per call with its wrapped data keys and its blind indexes.
//!
//! It is apart from the event log so it can be backed up and expired on its own schedule:
//! a key row destroyed here erases the call's personal fields in every copy of the log.

use std::collections::HashMap;

use callingest_domain::submission::NewCall;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, PgExecutor, Postgres};

use crate::blind::Subject;
use crate::keys::{CallKeys, MasterKey, Part, Privacy};

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A wrapped key did not open under the master key.
    #[error(
        "the data key of {0} does not open: CALLINGEST_MASTER_KEY is not the key this database was sealed with"
    )]
    KeyDoesNotOpen(String),
    #[error(
        "CALLINGEST_MASTER_KEY is not the master key this database was sealed with \
         (no key of keyring.master_key opens with it); start with the right key"
    )]
    WrongMasterKey,
    /// The start's keys do not fit the state of a master-key rotation; says what to set.
    #[error("{0}")]
    Rotation(String),
    /// A row wrapped by a master key this process was not given.
    #[error(
        "the keys of {0} are wrapped by master key version {1}, which is not configured: a \
         master-key rotation is under way; set CALLINGEST_PREVIOUS_MASTER_KEY"
    )]
    VersionNotHeld(String, i32),
}

/// A new call's key row, ready to insert.
#[derive(Debug, Clone)]
pub struct CallKeyRow {
    pub call_aggregate_id: String,
    pub partner_id: String,
    pub call_key: Vec<u8>,
    pub agent_key: Vec<u8>,
    /// The master key that wrapped them and keyed the indexes.
    pub master_key_version: i32,
    pub contact_number_index: Option<Vec<u8>>,
    pub customer_email_index: Option<Vec<u8>>,
    pub agent_email_index: Option<Vec<u8>>,
}

impl Privacy {
    /// Fresh keys for a new call and the row that keeps them (wrapped) with its blind indexes.
    pub fn new_key_row(
        &self,
        partner_id: &str,
        aggregate_id: &str,
        call: &NewCall,
    ) -> (CallKeys, CallKeyRow) {
        let (keys, wrapped) = self.new_call_keys(aggregate_id);
        let [contact_number_index, customer_email_index, agent_email_index] = self
            .call_indexes(wrapped.master_key_version, partner_id, call)
            .expect("the writing version is always one held");
        let row = CallKeyRow {
            call_aggregate_id: aggregate_id.to_owned(),
            partner_id: partner_id.to_owned(),
            call_key: wrapped.call,
            agent_key: wrapped.agent,
            master_key_version: wrapped.master_key_version,
            contact_number_index,
            customer_email_index,
            agent_email_index,
        };
        (keys, row)
    }

    /// A call's three blind indexes (contact number, customer e-mail, agent e-mail) under the
    /// index key of master key `version`; `None` where the value is absent or erased.
    pub fn call_indexes(
        &self,
        version: i32,
        partner_id: &str,
        call: &NewCall,
    ) -> Result<[Option<Vec<u8>>; 3], crate::keys::VersionNotHeld> {
        let index = |subject, value: Option<String>| {
            value
                .map(|v| self.blind_index_under(version, partner_id, subject, &v))
                .transpose()
        };
        Ok([
            index(
                Subject::ContactNumber,
                call.call.contact_number.clear().map(|n| n.to_string()),
            )?,
            index(
                Subject::CustomerEmail,
                call.customer.email.present().map(|e| e.to_string()),
            )?,
            index(
                Subject::AgentEmail,
                call.agent.email.present().map(|e| e.to_string()),
            )?,
        ])
    }
}

/// Inserts the key rows bound by [`bind_rows`] as parameters `$1` to `$8`. A statement may
/// start with it as a data-modifying `with` clause (numbering its own parameters from `$9`),
/// so that the keys go in with the events that need them in one round trip. A row that exists
/// already is a unique violation: the statement fails as a whole (a batch then falls back to
/// the call-by-call path).
pub const INSERT_ROWS: &str = "insert into keyring.call_key
         (call_aggregate_id, partner_id, call_key, agent_key,
          contact_number_index, customer_email_index, agent_email_index, master_key_version)
     select * from unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[],
                          $5::bytea[], $6::bytea[], $7::bytea[], $8::int[])";

/// Binds `rows`, column by column, as parameters `$1` to `$8` of [`INSERT_ROWS`]. The columns
/// borrow the rows' bytes: nothing is copied before sqlx encodes them.
pub fn bind_rows<'q>(
    query: Query<'q, Postgres, PgArguments>,
    rows: &'q [CallKeyRow],
) -> Query<'q, Postgres, PgArguments> {
    let text = |f: fn(&CallKeyRow) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    let bytes = |f: fn(&CallKeyRow) -> &[u8]| rows.iter().map(f).collect::<Vec<_>>();
    let index = |f: fn(&CallKeyRow) -> Option<&[u8]>| rows.iter().map(f).collect::<Vec<_>>();
    query
        .bind(text(|r| &r.call_aggregate_id))
        .bind(text(|r| &r.partner_id))
        .bind(bytes(|r| &r.call_key))
        .bind(bytes(|r| &r.agent_key))
        .bind(index(|r| r.contact_number_index.as_deref()))
        .bind(index(|r| r.customer_email_index.as_deref()))
        .bind(index(|r| r.agent_email_index.as_deref()))
        .bind(
            rows.iter()
                .map(|r| r.master_key_version)
                .collect::<Vec<_>>(),
        )
}

/// Inserts one call's key row unless it has one already (a call is accepted once; an earlier
/// attempt may have left its row), and answers the keys the call now has.
pub async fn ensure_row(
    conn: &mut PgConnection,
    privacy: &Privacy,
    keys: CallKeys,
    row: &CallKeyRow,
) -> Result<CallKeys, KeyringError> {
    let inserted: Option<i32> = sqlx::query_scalar(
        "insert into keyring.call_key
             (call_aggregate_id, partner_id, call_key, agent_key,
              contact_number_index, customer_email_index, agent_email_index, master_key_version)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (call_aggregate_id) do nothing
         returning 1",
    )
    .bind(&row.call_aggregate_id)
    .bind(&row.partner_id)
    .bind(&row.call_key)
    .bind(&row.agent_key)
    .bind(&row.contact_number_index)
    .bind(&row.customer_email_index)
    .bind(&row.agent_email_index)
    .bind(row.master_key_version)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_some() {
        return Ok(keys);
    }
    let ids = [row.call_aggregate_id.clone()];
    Ok(load(&mut *conn, privacy, &ids)
        .await?
        .remove(&row.call_aggregate_id)
        .unwrap_or_default())
}

/// A call's id, its wrapped call and agent keys, and the version of the master key that
/// wrapped them, as stored.
type StoredKeys = (String, Option<Vec<u8>>, Option<Vec<u8>>, i32);

/// The keys of these calls, unwrapped, in one query. A call without a row, or whose keys were
/// destroyed, has no (or only some) keys: its sealed fields read as erased.
pub async fn load<'c>(
    executor: impl PgExecutor<'c>,
    privacy: &Privacy,
    aggregate_ids: &[String],
) -> Result<HashMap<String, CallKeys>, KeyringError> {
    load_parts(executor, privacy, aggregate_ids, true).await
}

/// [`load`] without the agent keys: for readers that use none of the agent's personal fields
/// (the projections: no read model holds the agent's name or e-mail), so a replay neither
/// reads nor unwraps them. Those fields read as erased in what such a reader opens.
pub async fn load_call_keys<'c>(
    executor: impl PgExecutor<'c>,
    privacy: &Privacy,
    aggregate_ids: &[String],
) -> Result<HashMap<String, CallKeys>, KeyringError> {
    load_parts(executor, privacy, aggregate_ids, false).await
}

async fn load_parts<'c>(
    executor: impl PgExecutor<'c>,
    privacy: &Privacy,
    aggregate_ids: &[String],
    with_agent: bool,
) -> Result<HashMap<String, CallKeys>, KeyringError> {
    if aggregate_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<StoredKeys> = sqlx::query_as(
        "select call_aggregate_id, call_key, case when $2 then agent_key end, master_key_version
         from keyring.call_key where call_aggregate_id = any($1)",
    )
    .bind(aggregate_ids)
    .bind(with_agent)
    .fetch_all(executor)
    .await?;
    let mut keys = HashMap::with_capacity(rows.len());
    for (id, call, agent, version) in rows {
        if !privacy.versions().any(|v| v == version) {
            return Err(KeyringError::VersionNotHeld(id, version));
        }
        let unwrap = |part, wrapped: Option<Vec<u8>>| {
            wrapped
                .map(|w| privacy.unwrap(&id, part, version, &w))
                .transpose()
                .map_err(|_| KeyringError::KeyDoesNotOpen(id.clone()))
        };
        let k = CallKeys {
            call: unwrap(Part::Call, call)?,
            agent: unwrap(Part::Agent, agent)?,
        };
        keys.insert(id, k);
    }
    Ok(keys)
}

/// One row of `keyring.master_key`: a master key's version, a text sealed under it, and
/// whether it wraps new rows.
type MasterKeyRow = (i32, Vec<u8>, bool);

/// The keys of a start: the configured master key, checked against the keyring, and the
/// previous one during a rotation. A first start records its key as version 1.
///
/// The keyring says which keys exist: one current key, plus during a rotation either the new
/// key (recorded by the first start given it, before `rotate-master-key` makes it current) or
/// the previous one (after). A start must hold the current key, and the other one when there is
/// one; anything else is refused with a message that says which variable to set.
pub async fn open(
    pool: &sqlx::PgPool,
    key: &MasterKey,
    previous: Option<&MasterKey>,
) -> Result<Privacy, KeyringError> {
    let previous = previous.filter(|p| *p != key);
    sqlx::query(
        "insert into keyring.master_key (version, sealed_check, is_current)
         select 1, $1, true where not exists (select 1 from keyring.master_key)
         on conflict do nothing",
    )
    .bind(key.seal_check())
    .execute(pool)
    .await?;
    // Twice at most: the second pass sees the new key this start recorded.
    for _ in 0..2 {
        let rows: Vec<MasterKeyRow> = sqlx::query_as(
            "select version, sealed_check, is_current from keyring.master_key order by version",
        )
        .fetch_all(pool)
        .await?;
        match classify(&rows, key, previous)? {
            Keys::Ready(privacy) => return Ok(privacy),
            Keys::RecordNew { version } => {
                // On conflict another start recorded a new key first: the next pass tells
                // whether it is this one.
                sqlx::query(
                    "insert into keyring.master_key (version, sealed_check, is_current)
                     values ($1, $2, false) on conflict do nothing",
                )
                .bind(version)
                .bind(key.seal_check())
                .execute(pool)
                .await?;
            }
        }
    }
    Err(KeyringError::Rotation(
        "the keyring changed during the start; start again".into(),
    ))
}

enum Keys {
    Ready(Privacy),
    /// `CALLINGEST_MASTER_KEY` is a new key to rotate to: record it as `version`.
    RecordNew {
        version: i32,
    },
}

/// What the configured keys are, given the keyring's rows (pure: the rules of [`open`]).
fn classify(
    rows: &[MasterKeyRow],
    key: &MasterKey,
    previous: Option<&MasterKey>,
) -> Result<Keys, KeyringError> {
    let opened_by = |k: &MasterKey| rows.iter().find(|(_, sealed, _)| k.opens_check(sealed));
    let Some(current) = rows.iter().find(|r| r.2) else {
        return Err(KeyringError::Rotation(
            "keyring.master_key has no current key".into(),
        ));
    };
    let other = rows.iter().find(|r| !r.2);
    let rotation = |m: &str| Err(KeyringError::Rotation(m.to_owned()));
    match (opened_by(key), previous.map(|p| (p, opened_by(p)))) {
        (Some(k), None) if k.2 => match other {
            // A new key recorded but not current yet wraps nothing: an instance not given it
            // (a rolling deploy half done) still reads and writes everything.
            None => Ok(Keys::Ready(Privacy::with_versions((k.0, key), None))),
            Some(o) if o.0 > k.0 => Ok(Keys::Ready(Privacy::with_versions((k.0, key), None))),
            Some(_) => rotation(
                "a master-key rotation is under way: set CALLINGEST_PREVIOUS_MASTER_KEY to the \
                 previous master key until `callingest privacy rotate-master-key` has finished",
            ),
        },
        (Some(k), None) if k.0 > current.0 => rotation(
            "CALLINGEST_MASTER_KEY is the new key of a master-key rotation not run yet: set \
             CALLINGEST_PREVIOUS_MASTER_KEY to the current master key too",
        ),
        (Some(_), None) => rotation(
            "CALLINGEST_MASTER_KEY is the master key this database is being rotated away from: \
             set it to the new key and CALLINGEST_PREVIOUS_MASTER_KEY to this one",
        ),
        (Some(k), Some((p, opened))) if k.2 => match (other, opened) {
            // Rotated already: the previous key is no longer needed.
            (None, _) => Ok(Keys::Ready(Privacy::with_versions((k.0, key), None))),
            (Some(o), Some(po)) if o.0 == po.0 && o.0 < k.0 => Ok(Keys::Ready(
                Privacy::with_versions((k.0, key), Some((o.0, p))),
            )),
            (Some(o), Some(po)) if o.0 == po.0 => rotation(
                "CALLINGEST_MASTER_KEY and CALLINGEST_PREVIOUS_MASTER_KEY are swapped: the \
                 new key goes in CALLINGEST_MASTER_KEY",
            ),
            _ => rotation(
                "CALLINGEST_PREVIOUS_MASTER_KEY is not the master key this database is being \
                 rotated away from",
            ),
        },
        (k, Some((p, Some(po)))) if po.2 => match (k, other) {
            // The new key, recorded: new rows stay under the current key until the rotation
            // runs, so instances not yet given the new key can still read them.
            (Some(k), Some(o)) if k.0 == o.0 && k.0 > po.0 => {
                let privacy = Privacy::with_versions((k.0, key), Some((po.0, p)));
                privacy
                    .set_writing_version(po.0)
                    .expect("the previous version is held");
                Ok(Keys::Ready(privacy))
            }
            (None, None) => Ok(Keys::RecordNew { version: po.0 + 1 }),
            (None, Some(_)) => rotation(
                "another new master key is being rotated to: every instance needs the same \
                 CALLINGEST_MASTER_KEY (and a rotation under way must finish before another)",
            ),
            _ => rotation(
                "CALLINGEST_MASTER_KEY and CALLINGEST_PREVIOUS_MASTER_KEY are swapped: the \
                 new key goes in CALLINGEST_MASTER_KEY",
            ),
        },
        _ => Err(KeyringError::WrongMasterKey),
    }
}

/// Which version wraps new rows now, for a process holding two master keys (during a
/// rotation the keyring's current key changes when `rotate-master-key` runs): read before
/// each batch of new key rows. A process with one key never asks.
pub async fn refresh_writing_version<'c>(
    executor: impl PgExecutor<'c>,
    privacy: &Privacy,
) -> Result<(), KeyringError> {
    if privacy.previous_version().is_none() {
        return Ok(());
    }
    let version: i32 =
        sqlx::query_scalar("select version from keyring.master_key where is_current")
            .fetch_one(executor)
            .await?;
    privacy
        .set_writing_version(version)
        .map_err(|e| KeyringError::Rotation(format!("the keyring's current {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_base64(&MasterKey::generate_base64()).unwrap()
    }

    fn row(version: i32, key: &MasterKey, current: bool) -> MasterKeyRow {
        (version, key.seal_check(), current)
    }

    /// `(configured version, previous version, writing version)` of a start that is let in.
    fn ready(
        rows: &[MasterKeyRow],
        key: &MasterKey,
        previous: Option<&MasterKey>,
    ) -> (i32, Option<i32>, i32) {
        match classify(rows, key, previous) {
            Ok(Keys::Ready(p)) => (
                p.current_version(),
                p.previous_version(),
                p.writing_version(),
            ),
            Ok(Keys::RecordNew { version }) => panic!("asked to record version {version}"),
            Err(e) => panic!("refused: {e}"),
        }
    }

    fn refused(rows: &[MasterKeyRow], key: &MasterKey, previous: Option<&MasterKey>) -> String {
        match classify(rows, key, previous) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("let in"),
        }
    }

    #[test]
    fn outside_a_rotation_only_the_current_key_is_let_in() {
        let (old, other) = (key(), key());
        let rows = [row(1, &old, true)];
        assert_eq!(ready(&rows, &old, None), (1, None, 1));
        assert!(
            refused(&rows, &other, None).contains("CALLINGEST_MASTER_KEY is not the master key")
        );
    }

    #[test]
    fn a_new_key_is_recorded_then_wraps_nothing_until_the_rotation_runs() {
        let (old, new, third) = (key(), key(), key());
        let steady = [row(1, &old, true)];
        assert!(matches!(
            classify(&steady, &new, Some(&old)),
            Ok(Keys::RecordNew { version: 2 })
        ));
        let pending = [row(1, &old, true), row(2, &new, false)];
        // Both keys held, rows still wrapped by the old one; the old key alone still works.
        assert_eq!(ready(&pending, &new, Some(&old)), (2, Some(1), 1));
        assert_eq!(ready(&pending, &old, None), (1, None, 1));
        assert!(refused(&pending, &new, None).contains("CALLINGEST_PREVIOUS_MASTER_KEY"));
        assert!(refused(&pending, &third, Some(&old)).contains("another new master key"));
        assert!(refused(&pending, &old, Some(&new)).contains("swapped"));
    }

    #[test]
    fn during_and_after_a_rotation_the_new_key_is_needed() {
        let (old, new) = (key(), key());
        let rotating = [row(1, &old, false), row(2, &new, true)];
        assert_eq!(ready(&rotating, &new, Some(&old)), (2, Some(1), 2));
        assert!(refused(&rotating, &new, None).contains("rotation is under way"));
        assert!(refused(&rotating, &old, None).contains("rotated away from"));
        assert!(refused(&rotating, &new, Some(&key())).contains("CALLINGEST_PREVIOUS_MASTER_KEY"));

        let rotated = [row(2, &new, true)];
        assert_eq!(ready(&rotated, &new, None), (2, None, 2));
        // The previous key is no longer needed, and no longer held.
        assert_eq!(ready(&rotated, &new, Some(&old)), (2, None, 2));
        assert!(refused(&rotated, &old, None).contains("is not the master key"));
    }
}
