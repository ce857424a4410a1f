//! Submits one call and reads it back, as a partner would:
//! `CALLINGEST_URL=http://127.0.0.1:8080 CALLINGEST_PARTNER=demo CALLINGEST_API_KEY=... \
//!  cargo run -p callingest-client --example partner`

use callingest_client::types::{
    AgentInfo, BatchCallRequest, CallInfo, CallStatus, CallSubmission, CustomerInfo,
};
use callingest_client::{partner_client, Error};
use chrono::{DateTime, Utc};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Credentials are given once; every request of this client carries them.
    let api = partner_client(
        &std::env::var("CALLINGEST_URL")?,
        &std::env::var("CALLINGEST_PARTNER")?,
        &std::env::var("CALLINGEST_API_KEY")?,
    )?;

    // Builders check what the schema states (lengths, patterns) before anything is sent.
    // Every `extra` map (fields outside the contract, kept by the service) must be given.
    let mut call: CallSubmission = CallSubmission::builder()
        .call(
            CallInfo::builder()
                .id("call123")
                .recording_url("https://example.com/recordings/call123.mp3")
                .start_time("2023-01-01T10:00:00Z".parse::<DateTime<Utc>>()?)
                .end_time("2023-01-01T10:30:00Z".parse::<DateTime<Utc>>()?)
                .contact_number("+1234567890")
                .extra(serde_json::Map::new()),
        )
        .agent(
            AgentInfo::builder()
                .id("agent123")
                .extra(serde_json::Map::new()),
        )
        .customer(
            CustomerInfo::builder()
                .id("customer123")
                .extra(serde_json::Map::new()),
        )
        .extra(serde_json::Map::new())
        .try_into()?;
    call.extra.insert("industry".into(), "Technology".into());

    let submitted = api
        .submit_batch_call()
        .x_tenant_id("tenant1")
        .x_sub_tenant_id("subtenant1")
        .body(BatchCallRequest { data: vec![call] })
        .send()
        .await;
    match submitted {
        Ok(receipt) => println!("batch {}: {:?}", receipt.batch_id, receipt.calls),
        // Every error answer has the same typed body; a 422 lists each broken field.
        Err(Error::ErrorResponse(answer)) if answer.status() == 422 => {
            for broken in &answer.errors {
                eprintln!("{}: {}", broken.field, broken.message);
            }
            return Ok(());
        }
        Err(other) => return Err(other.into()),
    }

    let call = api.get_call().call_id("call123").send().await?;
    match call.status {
        CallStatus::Completed => println!("{:?} ms recorded", call.recording_duration_ms),
        status => println!("call123 is {status}"),
    }
    Ok(())
}
