//! Calls as tests submit them (items and batches built from the published example) and as the
//! service keeps them (events of the log, rows of the read model).

use std::collections::HashMap;

use serde_json::{json, Value};
use sqlx::PgPool;

use super::app::{TestApp, PARTNER_ID};
use super::drain::wait_for;

/// The item of the published example, with its `example.com` URLs moved to `.invalid` hosts:
/// tests never point at anything off this machine.
pub fn published_item() -> Value {
    json!({
        "call": {
            "id": "call123",
            "recording_url": "https://recordings.invalid/recordings/call123.mp3",
            "start_time": "2023-01-01T10:00:00Z",
            "end_time": "2023-01-01T10:30:00Z",
            "contact_number": "+1234567890"
        },
        "agent": {"id": "agent123", "email": "agent@example.com", "name": "John Doe"},
        "customer": {
            "id": "customer123",
            "name": "Jane Smith",
            "email": "customer@example.com",
            "disposition_status": "interested"
        },
        "industry": "Technology",
        "function": "Sales",
        "callback_url": "https://partner.invalid/callback",
        "metadata": {"campaign": "Q1 Outreach", "source": "Website"}
    })
}

pub fn item_with_id(id: &str) -> Value {
    let mut item = published_item();
    item["call"]["id"] = json!(id);
    item
}

/// A call with this recording and no callback (callbacks have their own tests).
pub fn item(id: &str, recording_url: &str) -> Value {
    let mut item = item_with_id(id);
    item["call"]["recording_url"] = json!(recording_url);
    item.as_object_mut().unwrap().remove("callback_url");
    item
}

pub fn batch(items: Vec<Value>) -> Value {
    json!({ "data": items })
}

pub async fn json_body(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

/// The id of a call's aggregate, built as the service builds it.
pub fn aggregate_id(partner_id: &str, call_id: &str) -> String {
    callingest_domain::call::call_aggregate_id(
        &callingest_domain::values::PartnerId::parse(partner_id).expect("a valid partner id"),
        &callingest_domain::values::CallId::parse(call_id).expect("a valid call id"),
    )
}

impl TestApp {
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// `(event_type, payload)` of one call's events, in order, as readers see them: personal
    /// fields opened through the service's one decrypt path.
    pub async fn call_events(&self, partner_id: &str, call_id: &str) -> Vec<(String, Value)> {
        let id = format!("{partner_id}:{call_id}");
        let keys =
            callingest_privacy::keyring::load(&self.pool, &self.privacy, std::slice::from_ref(&id))
                .await
                .unwrap();
        self.stored_call_events(partner_id, call_id)
            .await
            .into_iter()
            .map(|(event_type, payload)| {
                // An event a test wrote undecodable on purpose is shown as stored.
                let Ok(event) =
                    serde_json::from_value::<callingest_domain::call::CallEvent>(payload.clone())
                else {
                    return (event_type, payload);
                };
                let opened =
                    callingest_privacy::seal::open_event(&self.privacy, &id, event, keys.get(&id))
                        .unwrap();
                (event_type, serde_json::to_value(opened).unwrap())
            })
            .collect()
    }

    /// `(event_type, payload)` of one call's events, in order, as the event log holds them.
    pub async fn stored_call_events(
        &self,
        partner_id: &str,
        call_id: &str,
    ) -> Vec<(String, Value)> {
        sqlx::query_as(
            "select event_type, payload from events
             where aggregate_type = 'Call' and aggregate_id = $1 order by sequence",
        )
        .bind(aggregate_id(partner_id, call_id))
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// The types of the test partner's call's events, in order.
    pub async fn event_types(&self, call_id: &str) -> Vec<String> {
        self.call_events(PARTNER_ID, call_id)
            .await
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    pub async fn count_events_of_type(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("select count(*) from events where event_type = $1")
            .bind(event_type)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The read-model row (`call` table, as JSON) of the test partner's call, if any.
    pub async fn call_row(&self, call_id: &str) -> Option<Value> {
        sqlx::query_scalar("select to_jsonb(c) from call c where partner_id = $1 and call_id = $2")
            .bind(PARTNER_ID)
            .bind(call_id)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
    }

    /// The call's read-model row once the service ran out of work ([`TestApp::drain`]): it
    /// must then be `completed` or `failed`.
    pub async fn final_row(&self, call_id: &str) -> Value {
        self.drain().await;
        self.finished_row(call_id).await
    }

    /// [`TestApp::final_row`] with a bound of its own on the drain (transcription takes longer
    /// than plain processing).
    pub async fn final_row_within(&self, call_id: &str, within: std::time::Duration) -> Value {
        self.drain_within(within).await;
        self.finished_row(call_id).await
    }

    /// The row of one call once it is `completed` or `failed`, waiting for it alone (bounded
    /// by `within`) while the service may still work on others: for tests showing that one
    /// call is not held up by another.
    pub async fn finished_row_of(
        &self,
        partner_id: &str,
        call_id: &str,
        within: std::time::Duration,
    ) -> Value {
        let pool = &self.pool;
        wait_for(
            &format!("{partner_id}/{call_id} to finish"),
            within,
            || async move {
                let row: Option<Value> = sqlx::query_scalar(
                    "select to_jsonb(c) from call c where partner_id = $1 and call_id = $2",
                )
                .bind(partner_id)
                .bind(call_id)
                .fetch_optional(pool)
                .await
                .unwrap();
                match row {
                    Some(row) if row["status"] == "completed" || row["status"] == "failed" => {
                        Ok(row)
                    }
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await
    }

    async fn finished_row(&self, call_id: &str) -> Value {
        let row = self
            .call_row(call_id)
            .await
            .unwrap_or_else(|| panic!("call {call_id} has no row after the drain"));
        assert!(
            row["status"] == "completed" || row["status"] == "failed",
            "call {call_id} not finished after the drain: {row}"
        );
        row
    }
}

/// Runs `sql` as the analyst role and returns the rows as JSON objects.
pub async fn as_analyst(app: &TestApp, sql: &str) -> Result<Vec<Value>, sqlx::Error> {
    let mut tx = app.pool.begin().await?;
    sqlx::query("set local role callingest_analyst")
        .execute(&mut *tx)
        .await?;
    let wrapped = format!(
        "select to_jsonb(q) from ({}) q",
        sql.trim().trim_end_matches(';')
    );
    let rows = sqlx::query_scalar(&wrapped).fetch_all(&mut *tx).await;
    tx.rollback().await?;
    rows
}

/// Every call in `accepted` (ids of `partner`, answered 200) is in the event log exactly once,
/// was processed exactly once (completed or failed) and called back exactly once: what the
/// crash and failover tests hold the service to after their load.
pub async fn assert_each_call_logged_processed_and_called_back_once(
    pool: &PgPool,
    partner: &str,
    accepted: &[String],
) {
    let counts: Vec<(String, String, i64)> = sqlx::query_as(
        "select aggregate_id, event_type, count(*) from events where aggregate_type = 'Call'
         group by aggregate_id, event_type",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut per_call: HashMap<String, HashMap<String, i64>> = HashMap::new();
    for (id, event_type, count) in counts {
        per_call.entry(id).or_default().insert(event_type, count);
    }
    for call in accepted {
        let events = per_call
            .get(&aggregate_id(partner, call))
            .unwrap_or_else(|| panic!("{call} answered 200 but missing"));
        let get = |t: &str| events.get(t).copied().unwrap_or(0);
        assert_eq!(get("CallAccepted"), 1, "{call}: {events:?}");
        assert_eq!(
            get("ProcessingCompleted") + get("ProcessingFailed"),
            1,
            "{call} not processed exactly once: {events:?}"
        );
        assert_eq!(get("CallbackDelivered"), 1, "{call}: {events:?}");
    }
}
