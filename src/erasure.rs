//! Erasure and access for a data subject (GDPR art. 15 and 17): the calls a phone number or
//! e-mail address appears in, found through the keyed blind indexes, and their erasure by
//! destroying the calls' data keys (crypto-shredding, see `callingest_privacy`).
//!
//! A customer's number or e-mail erases everything personal of the calls it matches (both
//! keys); an agent's e-mail erases the agent's fields only (the agent key). Destroying the keys
//! is what erases: it happens first, in one transaction that also scrubs the read models; each
//! affected call then records a `PersonalDataErased` event (no personal data in it). Erasing
//! again finds nothing left to erase and answers zero calls.

use std::collections::HashMap;

use callingest_domain::call::{
    split_call_aggregate_id, Call, CallCommand, ErasureReason, ErasureScope,
};
use callingest_privacy::blind::Subject as IndexKind;
use callingest_privacy::Privacy;
use chrono::Utc;
use sqlx::PgPool;

use crate::event_store::{execute, Store};

/// Whose data: a phone number or an e-mail address.
#[derive(Debug, Clone)]
pub enum Subject {
    PhoneNumber(String),
    Email(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// Said so a partner understands it (400).
    #[error("{0}")]
    Invalid(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("could not record the erasure on call {call}")]
    Record {
        call: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Subject {
    /// From the request's two optional fields: exactly one, non-blank and well-formed enough
    /// to be a number (`+` and digits once normalised) or an address (with an `@`).
    pub fn from_request(
        phone_number: Option<&str>,
        email: Option<&str>,
    ) -> Result<Self, ErasureError> {
        let invalid = |m: &str| Err(ErasureError::Invalid(m.to_owned()));
        match (phone_number, email) {
            (Some(number), None) => {
                let digits = callingest_privacy::blind::normalise(IndexKind::ContactNumber, number);
                if digits.trim_start_matches('+').is_empty() {
                    return invalid("phone_number must hold digits, e.g. +14155550100");
                }
                Ok(Subject::PhoneNumber(number.to_owned()))
            }
            (None, Some(email)) => {
                if !email.contains('@') || email.trim().len() < 3 {
                    return invalid("email must be an e-mail address");
                }
                Ok(Subject::Email(email.to_owned()))
            }
            (Some(_), Some(_)) => invalid("give either phone_number or email, not both"),
            (None, None) => invalid("give phone_number or email"),
        }
    }

    /// The blind indexes to look for: contact number, customer e-mail, agent e-mail (a number
    /// is only ever the customer's). Each under every master key held: during a rotation, rows
    /// not re-wrapped yet still hold indexes under the previous key.
    fn indexes(&self, privacy: &Privacy, partner_id: &str) -> Indexes {
        let index = |kind, v: &str| privacy.blind_indexes(partner_id, kind, v);
        match self {
            Subject::PhoneNumber(n) => Indexes {
                contact_number: index(IndexKind::ContactNumber, n),
                ..Indexes::default()
            },
            Subject::Email(e) => Indexes {
                customer_email: index(IndexKind::CustomerEmail, e),
                agent_email: index(IndexKind::AgentEmail, e),
                ..Indexes::default()
            },
        }
    }
}

/// The index values a subject may be stored under, per index (empty: not looked for).
#[derive(Default)]
struct Indexes {
    contact_number: Vec<Vec<u8>>,
    customer_email: Vec<Vec<u8>>,
    agent_email: Vec<Vec<u8>>,
}

/// One call held for a subject.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubjectCall {
    pub call_id: String,
    /// `customer` or `agent`: how the subject appears in the call.
    pub role: &'static str,
}

/// What an erasure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    /// Calls whose personal data was erased (the subject was their customer).
    pub calls: Vec<String>,
    /// Calls whose agent fields were erased (the subject was their agent).
    pub agent_calls: Vec<String>,
}

/// The partner's calls that hold `subject` (calls still holding it: erased ones no longer do).
pub async fn calls_of(
    pool: &PgPool,
    privacy: &Privacy,
    partner_id: &str,
    subject: &Subject,
) -> Result<Vec<SubjectCall>, ErasureError> {
    let Indexes {
        contact_number,
        customer_email,
        agent_email,
    } = subject.indexes(privacy, partner_id);
    // A key row is written before its call's events on the call-by-call path: only rows whose
    // call exists count.
    let rows: Vec<(String, bool)> = sqlx::query_as(
        "select k.call_aggregate_id,
                coalesce(k.contact_number_index = any($2) or k.customer_email_index = any($3), false)
         from keyring.call_key k
         where k.partner_id = $1
           and (k.contact_number_index = any($2) or k.customer_email_index = any($3)
                or k.agent_email_index = any($4))
           and exists (select 1 from events e where e.aggregate_type = 'Call'
                       and e.aggregate_id = k.call_aggregate_id and e.sequence = 1)
         order by k.call_aggregate_id",
    )
    .bind(partner_id)
    .bind(contact_number)
    .bind(customer_email)
    .bind(agent_email)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, customer)| {
            Some(SubjectCall {
                call_id: split_call_aggregate_id(&id)?.1.to_owned(),
                role: if customer { "customer" } else { "agent" },
            })
        })
        .collect())
}

/// Erases `subject` from the partner's calls: destroys the keys, scrubs the read models, then
/// records `PersonalDataErased` on each call.
pub async fn erase(
    pool: &PgPool,
    privacy: &Privacy,
    calls: &Store<Call>,
    partner_id: &str,
    subject: &Subject,
    reason: ErasureReason,
) -> Result<Erased, ErasureError> {
    let Indexes {
        contact_number,
        customer_email,
        agent_email,
    } = subject.indexes(privacy, partner_id);
    let mut tx = pool.begin().await?;
    let customer: Vec<String> = sqlx::query_scalar(
        "update keyring.call_key set
             call_key = null, agent_key = null,
             contact_number_index = null, customer_email_index = null, agent_email_index = null,
             call_erased_at = now(), agent_erased_at = coalesce(agent_erased_at, now())
         where partner_id = $1
           and (contact_number_index = any($2) or customer_email_index = any($3))
         returning call_aggregate_id",
    )
    .bind(partner_id)
    .bind(&contact_number)
    .bind(&customer_email)
    .fetch_all(&mut *tx)
    .await?;
    let agent: Vec<String> = sqlx::query_scalar(
        "update keyring.call_key set agent_key = null, agent_email_index = null,
             agent_erased_at = now()
         where partner_id = $1 and agent_email_index = any($2)
         returning call_aggregate_id",
    )
    .bind(partner_id)
    .bind(&agent_email)
    .fetch_all(&mut *tx)
    .await?;
    scrub_read_models(&mut tx, &customer).await?;
    tx.commit().await?;
    record(calls, &customer, ErasureScope::Call, reason).await?;
    record(calls, &agent, ErasureScope::Agent, reason).await?;
    let call_ids = |ids: Vec<String>| {
        ids.iter()
            .filter_map(|id| split_call_aggregate_id(id).map(|(_, c)| c.to_owned()))
            .collect()
    };
    metrics::counter!("callingest_personal_data_erased_calls_total", "reason" => format!("{reason:?}").to_lowercase())
        .increment((customer.len() + agent.len()) as u64);
    Ok(Erased {
        calls: call_ids(customer),
        agent_calls: call_ids(agent),
    })
}

/// The read models show the erased state at once (the projections do the same when they meet
/// the `PersonalDataErased` events, so a rebuild agrees).
async fn scrub_read_models(
    tx: &mut sqlx::PgConnection,
    aggregate_ids: &[String],
) -> Result<(), sqlx::Error> {
    if aggregate_ids.is_empty() {
        return Ok(());
    }
    let (partners, calls): (Vec<String>, Vec<String>) = aggregate_ids
        .iter()
        .filter_map(|id| split_call_aggregate_id(id))
        .map(|(p, c)| (p.to_owned(), c.to_owned()))
        .unzip();
    sqlx::query(
        "update call c set contact_number = null, personal_data_erased = true
         from unnest($1::text[], $2::text[]) as k(p, c2)
         where c.partner_id = k.p and c.call_id = k.c2",
    )
    .bind(&partners)
    .bind(&calls)
    .execute(&mut *tx)
    .await?;
    callingest_projections::transcripts::scrub(&mut *tx, &partners, &calls).await?;
    // A call not fetched yet loses its recording's address: its fetch then fails.
    sqlx::query("update processing_job set recording_url = '' where call_aggregate_id = any($1)")
        .bind(aggregate_ids)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Records `PersonalDataErased` on each call whose keys were destroyed.
async fn record(
    calls: &Store<Call>,
    aggregate_ids: &[String],
    scope: ErasureScope,
    reason: ErasureReason,
) -> Result<(), ErasureError> {
    let at = Utc::now();
    let metadata = HashMap::from([("erasure".to_owned(), format!("{reason:?}").to_lowercase())]);
    for id in aggregate_ids {
        execute(
            calls,
            id,
            CallCommand::RecordErasure { scope, reason, at },
            &metadata,
        )
        .await
        .map_err(|e| ErasureError::Record {
            call: id.clone(),
            source: Box::new(e),
        })?;
    }
    Ok(())
}

/// Most calls one retention pass erases (the next pass goes on).
const RETENTION_BATCH: i64 = 500;

/// Erases the personal data of calls older than their partner's `retention_days` (by the
/// time their keys were made, i.e. their acceptance), up to [`RETENTION_BATCH`] per call;
/// answers how many calls it erased.
pub async fn apply_retention(pool: &PgPool, calls: &Store<Call>) -> Result<usize, ErasureError> {
    let mut tx = pool.begin().await?;
    let erased: Vec<String> = sqlx::query_scalar(
        "update keyring.call_key k set
             call_key = null, agent_key = null,
             contact_number_index = null, customer_email_index = null, agent_email_index = null,
             call_erased_at = now(), agent_erased_at = coalesce(k.agent_erased_at, now())
         where k.call_aggregate_id in (
             select c.call_aggregate_id from keyring.call_key c
             join partner p on p.partner_id = c.partner_id
             where p.retention_days is not null and c.call_key is not null
               and c.created_at < now() - make_interval(days => p.retention_days)
             limit $1
             for update of c skip locked)
         returning k.call_aggregate_id",
    )
    .bind(RETENTION_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    scrub_read_models(&mut tx, &erased).await?;
    tx.commit().await?;
    record(calls, &erased, ErasureScope::Call, ErasureReason::Retention).await?;
    metrics::counter!("callingest_personal_data_erased_calls_total", "reason" => "retention")
        .increment(erased.len() as u64);
    Ok(erased.len())
}

/// The retention job of a worker process: a pass every `every`, more at once while a pass
/// finds a full batch. Every instance may run it: rows are claimed with `skip locked`.
pub async fn run_retention(pool: PgPool, calls: Store<Call>, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        loop {
            match apply_retention(&pool, &calls).await {
                Ok(n) if n as i64 == RETENTION_BATCH => continue,
                Ok(0) => {}
                Ok(n) => tracing::info!(calls = n, "personal data erased by retention"),
                Err(err) => {
                    tracing::warn!(error = %crate::error_chain::ErrorChain(&err), "retention pass failed")
                }
            }
            break;
        }
    }
}
