use serde_json::{json, Value};

use crate::helpers::{batch, item_with_id, json_body, published_item, TestApp};

#[tokio::test]
async fn the_published_example_is_accepted_and_stored_as_events() {
    let app = TestApp::spawn().await;

    let response = app.post_batch(&batch(vec![published_item()])).await;

    assert_eq!(response.status(), 200);
    let body = json_body(response).await;
    assert_eq!(body["success"], true);
    assert_eq!(
        body["calls"],
        json!([{"id": "call123", "status": "accepted"}])
    );
    let batch_id = body["batch_id"].as_str().expect("batch id").to_owned();

    let events = app.call_events("partner-a", "call123").await;
    assert_eq!(events.len(), 1);
    let (event_type, payload) = &events[0];
    assert_eq!(event_type, "CallAccepted");
    let accepted = &payload["CallAccepted"];
    assert_eq!(accepted["partner_id"], "partner-a");
    assert_eq!(accepted["tenant_id"], "tenant1");
    assert_eq!(accepted["sub_tenant_id"], "subtenant1");
    assert_eq!(accepted["batch_id"], batch_id.as_str());
    assert_eq!(accepted["call"]["call"]["contact_number"], "+1234567890");
    assert_eq!(
        accepted["call"]["metadata"],
        json!({"campaign": "Q1 Outreach", "source": "Website"})
    );
    // Fields outside the contract are kept, not dropped.
    assert_eq!(
        accepted["call"]["extra"],
        json!({"industry": "Technology", "function": "Sales"})
    );

    let (batch_type, batch_payload): (String, Value) = sqlx::query_as(
        "select event_type, payload from events where aggregate_type = 'Batch' and aggregate_id = $1",
    )
    .bind(&batch_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(batch_type, "BatchSubmitted");
    assert_eq!(
        batch_payload["BatchSubmitted"]["call_ids"],
        json!(["call123"])
    );
}

#[tokio::test]
async fn events_carry_the_request_id_source_ip_and_user_agent() {
    let app = TestApp::spawn().await;

    let response = app
        .batch_request()
        .header("user-agent", "partner-sdk/1.2")
        .json(&batch(vec![published_item()]))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let metadata: Value =
        sqlx::query_scalar("select metadata from events where aggregate_id = 'partner-a:call123'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(metadata["request_id"], request_id.as_str());
    assert_eq!(metadata["source_ip"], "127.0.0.1");
    assert_eq!(metadata["user_agent"], "partner-sdk/1.2");
}

#[tokio::test]
async fn a_full_batch_of_fifty_calls_is_accepted_with_one_answer_per_call() {
    let app = TestApp::spawn().await;
    let items: Vec<Value> = (0..50)
        .map(|i| item_with_id(&format!("call-{i}")))
        .collect();

    let response = app.post_batch(&batch(items)).await;

    assert_eq!(response.status(), 200);
    let body = json_body(response).await;
    let calls = body["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 50);
    assert!(calls.iter().all(|c| c["status"] == "accepted"));
    assert_eq!(calls[49]["id"], "call-49");
    assert_eq!(app.count_events_of_type("CallAccepted").await, 50);
    assert_eq!(app.count_events_of_type("BatchSubmitted").await, 1);
}

#[tokio::test]
async fn optional_fields_may_be_left_out_and_tenants_may_use_plus_zero_offsets() {
    let app = TestApp::spawn().await;
    let item = json!({
        "call": {
            "id": "minimal",
            "recording_url": "http://127.0.0.1:9/a.wav",
            "start_time": "2023-01-01T10:00:00+00:00",
            "end_time": "2023-01-01T10:00:05.5Z",
            "contact_number": "+44"
        },
        "agent": {"id": "a"},
        "customer": {"id": "c"},
        "custom_fields": [{"internal_name": "plan", "value": "gold"}]
    });

    let response = app.post_batch(&batch(vec![item])).await;

    assert_eq!(response.status(), 200);
    let events = app.call_events("partner-a", "minimal").await;
    assert_eq!(
        events[0].1["CallAccepted"]["call"]["custom_fields"],
        json!([{"internal_name": "plan", "value": "gold"}])
    );
}

#[tokio::test]
async fn sql_metacharacters_in_every_string_field_are_stored_verbatim() {
    let app = TestApp::spawn().await;
    let evil = "x'); drop table events; -- \\ \" %_ $1";
    let item = json!({
        "call": {
            "id": evil,
            "recording_url": "https://r.invalid/a.wav?q=';--",
            "start_time": "2023-01-01T10:00:00Z",
            "end_time": "2023-01-01T10:30:00Z",
            "contact_number": "+1234567890"
        },
        "agent": {"id": evil, "email": "o'brien@example.com", "name": evil},
        "customer": {"id": evil, "name": evil, "email": "o'neil@example.com", "disposition_status": evil},
        "callback_url": "https://p.invalid/cb?x=';--",
        "metadata": {evil: evil},
        "custom_fields": [{"internal_name": evil, "value": evil}],
        "industry": evil
    });

    let response = app.post_batch(&batch(vec![item.clone()])).await;

    assert_eq!(response.status(), 200);
    let events = app.call_events("partner-a", evil).await;
    let stored = &events[0].1["CallAccepted"]["call"];
    assert_eq!(stored["call"]["id"], evil);
    assert_eq!(
        stored["call"]["recording_url"],
        item["call"]["recording_url"]
    );
    assert_eq!(stored["agent"]["id"], evil);
    assert_eq!(stored["agent"]["email"], "o'brien@example.com");
    assert_eq!(stored["agent"]["name"], evil);
    assert_eq!(stored["customer"]["id"], evil);
    assert_eq!(stored["customer"]["name"], evil);
    assert_eq!(stored["customer"]["disposition_status"], evil);
    assert_eq!(stored["callback_url"], item["callback_url"]);
    assert_eq!(stored["metadata"], json!({evil: evil}));
    assert_eq!(
        stored["custom_fields"],
        json!([{"internal_name": evil, "value": evil}])
    );
    assert_eq!(stored["extra"]["industry"], evil);
}

#[tokio::test]
async fn sql_metacharacters_are_stored_verbatim() {
    let app = TestApp::spawn().await;
    let tricky = "x'); drop table events; --\"\\";
    let mut item = item_with_id(tricky);
    item["agent"]["name"] = json!(tricky);

    let response = app.post_batch(&batch(vec![item])).await;

    assert_eq!(response.status(), 200);
    let events = app.call_events("partner-a", tricky).await;
    assert_eq!(events[0].1["CallAccepted"]["call"]["agent"]["name"], tricky);
}
