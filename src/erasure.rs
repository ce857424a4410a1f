//! Erasure and access for a data subject (GDPR art. 15 and 17): the calls a phone number or
//! e-mail address appears in, found through the keyed blind indexes, and their erasure by
//! destroying the calls' data keys (crypto-shredding, see `callingest_privacy`).
//!
//! A customer's number or e-mail erases everything personal of the calls it matches (both
//! keys); an agent's e-mail erases the agent's fields only (the agent key). Destroying the keys
//! is what erases: it happens first, in one transaction that also scrubs the read models and
//! leaves word for what that transaction cannot reach (see [`follow_up`]): the erased calls'
//! recordings, which every worker instance deletes from its spool, and the `PersonalDataErased`
//! event (no personal data in it) each affected call then records, exactly once even across a
//! crash. Erasing again finds nothing left to erase and answers zero calls.

pub mod follow_up;

use callingest_domain::call::{split_call_aggregate_id, Call, ErasureReason, ErasureScope};
use callingest_privacy::blind::Subject as IndexKind;
use callingest_privacy::Privacy;
use sqlx::PgPool;

use crate::event_store::Store;

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
    /// The keys are destroyed, but recording the event failed: [`follow_up`] records it later.
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

impl Erased {
    /// Every call id the erasure touched, the customer's calls first.
    pub fn call_ids(&self) -> Vec<String> {
        self.calls
            .iter()
            .chain(&self.agent_calls)
            .cloned()
            .collect()
    }
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

/// Erases `subject` from the partner's calls: destroys the keys and scrubs the read models
/// ([`destroy_keys`]), then records `PersonalDataErased` on each call. The erasure stands once
/// the keys are destroyed: an event that could not be recorded here is recorded by a worker's
/// next [`follow_up::record_missing_events`].
pub async fn erase(
    pool: &PgPool,
    privacy: &Privacy,
    calls: &Store<Call>,
    partner_id: &str,
    subject: &Subject,
    reason: ErasureReason,
) -> Result<Erased, ErasureError> {
    let (erased, pending) = destroy_keys(pool, privacy, partner_id, subject, reason).await?;
    if let Err(err) = follow_up::record_events(pool, calls, &pending).await {
        tracing::warn!(
            error = %crate::error_chain::ErrorChain(&err),
            "erasure events not recorded yet; a worker records them"
        );
    }
    metrics::counter!("callingest_personal_data_erased_calls_total", "reason" => follow_up::text(reason))
        .increment((erased.calls.len() + erased.agent_calls.len()) as u64);
    Ok(erased)
}

/// The erasure's one transaction: destroys the keys (and blind indexes) of the partner's calls
/// that hold `subject`, scrubs the read models, and leaves the follow-up rows (the erased
/// recordings, the events to record). Answers what it erased and the pending events' ids.
pub async fn destroy_keys(
    pool: &PgPool,
    privacy: &Privacy,
    partner_id: &str,
    subject: &Subject,
    reason: ErasureReason,
) -> Result<(Erased, Vec<i64>), ErasureError> {
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
    let mut pending = follow_up::leave(&mut tx, &customer, ErasureScope::Call, reason).await?;
    pending.extend(follow_up::leave(&mut tx, &agent, ErasureScope::Agent, reason).await?);
    tx.commit().await?;
    let call_ids = |ids: Vec<String>| {
        ids.iter()
            .filter_map(|id| split_call_aggregate_id(id).map(|(_, c)| c.to_owned()))
            .collect()
    };
    let erased = Erased {
        calls: call_ids(customer),
        agent_calls: call_ids(agent),
    };
    Ok((erased, pending))
}

/// Whether the call's own personal data (the customer's side: number, recording, transcript)
/// is erased. It waits for an erasure of the call still in its transaction (a share lock on
/// the key row), so a worker that asks after keeping a recording in its spool either sees that
/// erasure, or the erasure starts after the question and lists the recording's digest (its
/// `RecordingFetched` was recorded before the file was kept) for the spools to delete.
pub async fn call_erased(pool: &PgPool, aggregate_id: &str) -> Result<bool, sqlx::Error> {
    let erased: Option<bool> = sqlx::query_scalar(
        "select call_erased_at is not null from keyring.call_key
         where call_aggregate_id = $1 for share",
    )
    .bind(aggregate_id)
    .fetch_optional(pool)
    .await?;
    Ok(erased.unwrap_or(false))
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
    let pending = follow_up::leave(
        &mut tx,
        &erased,
        ErasureScope::Call,
        ErasureReason::Retention,
    )
    .await?;
    tx.commit().await?;
    if let Err(err) = follow_up::record_events(pool, calls, &pending).await {
        tracing::warn!(
            error = %crate::error_chain::ErrorChain(&err),
            "retention events not recorded yet; the next pass records them"
        );
    }
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
