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
use crate::keys::{CallKeys, Part, Privacy};

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
         (keyring.master_key_check does not open with it); start with the right key"
    )]
    WrongMasterKey,
}

/// A new call's key row, ready to insert.
#[derive(Debug, Clone)]
pub struct CallKeyRow {
    pub call_aggregate_id: String,
    pub partner_id: String,
    pub call_key: Vec<u8>,
    pub agent_key: Vec<u8>,
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
        let (keys, call_key, agent_key) = self.new_call_keys(aggregate_id);
        let index = |subject, value: Option<String>| {
            value.map(|v| self.blind_index(partner_id, subject, &v))
        };
        let row = CallKeyRow {
            call_aggregate_id: aggregate_id.to_owned(),
            partner_id: partner_id.to_owned(),
            call_key,
            agent_key,
            contact_number_index: index(
                Subject::ContactNumber,
                call.call.contact_number.clear().map(|n| n.to_string()),
            ),
            customer_email_index: index(
                Subject::CustomerEmail,
                call.customer.email.present().map(|e| e.to_string()),
            ),
            agent_email_index: index(
                Subject::AgentEmail,
                call.agent.email.present().map(|e| e.to_string()),
            ),
        };
        (keys, row)
    }
}

/// Inserts the key rows bound by [`bind_rows`] as parameters `$1` to `$7`. A statement may
/// start with it as a data-modifying `with` clause (numbering its own parameters from `$8`),
/// so that the keys go in with the events that need them in one round trip.
pub const INSERT_ROWS: &str = "insert into keyring.call_key
         (call_aggregate_id, partner_id, call_key, agent_key,
          contact_number_index, customer_email_index, agent_email_index)
     select * from unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[],
                          $5::bytea[], $6::bytea[], $7::bytea[])";

/// Binds `rows`, column by column, as parameters `$1` to `$7` of [`INSERT_ROWS`]. The columns
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
              contact_number_index, customer_email_index, agent_email_index)
         values ($1, $2, $3, $4, $5, $6, $7)
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

/// A call's id and its wrapped call and agent keys, as stored.
type WrappedKeys = (String, Option<Vec<u8>>, Option<Vec<u8>>);

/// The keys of these calls, unwrapped, in one query. A call without a row, or whose keys were
/// destroyed, has no (or only some) keys: its sealed fields read as erased.
pub async fn load<'c>(
    executor: impl PgExecutor<'c>,
    privacy: &Privacy,
    aggregate_ids: &[String],
) -> Result<HashMap<String, CallKeys>, KeyringError> {
    if aggregate_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<WrappedKeys> = sqlx::query_as(
        "select call_aggregate_id, call_key, agent_key from keyring.call_key
         where call_aggregate_id = any($1)",
    )
    .bind(aggregate_ids)
    .fetch_all(executor)
    .await?;
    let mut keys = HashMap::with_capacity(rows.len());
    for (id, call, agent) in rows {
        let unwrap = |part, wrapped: Option<Vec<u8>>| {
            wrapped
                .map(|w| privacy.unwrap(&id, part, &w))
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

/// Refuses a master key other than the one this database's keys were wrapped with. The first
/// start with a keyring records a check sealed under its key; every later start opens it.
pub async fn verify_master_key(
    executor: impl PgExecutor<'_> + Copy,
    privacy: &Privacy,
) -> Result<(), KeyringError> {
    sqlx::query(
        "insert into keyring.master_key_check (id, sealed) values (1, $1)
         on conflict (id) do nothing",
    )
    .bind(privacy.seal_check())
    .execute(executor)
    .await?;
    let sealed: Vec<u8> =
        sqlx::query_scalar("select sealed from keyring.master_key_check where id = 1")
            .fetch_one(executor)
            .await?;
    if privacy.opens_check(&sealed) {
        Ok(())
    } else {
        Err(KeyringError::WrongMasterKey)
    }
}
