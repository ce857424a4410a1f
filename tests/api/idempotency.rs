use serde_json::{json, Value};

use crate::helpers::{batch, item_with_id, json_body, published_item, TestApp};

fn statuses(body: &Value) -> Vec<&str> {
    body["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn the_same_call_id_twice_in_one_batch_is_accepted_once() {
    let app = TestApp::spawn().await;

    let response = app
        .post_batch(&batch(vec![item_with_id("c1"), item_with_id("c1")]))
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        statuses(&json_body(response).await),
        vec!["accepted", "duplicate"]
    );
    let types: Vec<String> = app
        .call_events("partner-a", "c1")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(types, vec!["CallAccepted", "DuplicateSubmissionReceived"]);
}

#[tokio::test]
async fn resubmitting_a_call_id_in_a_later_batch_does_not_accept_it_twice() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.post_batch(&batch(vec![item_with_id("c1")]))
            .await
            .status(),
        200
    );

    let response = app
        .post_batch(&batch(vec![item_with_id("c1"), item_with_id("c2")]))
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        statuses(&json_body(response).await),
        vec!["duplicate", "accepted"]
    );
    assert_eq!(app.count_events_of_type("CallAccepted").await, 2);
    let events = app.call_events("partner-a", "c1").await;
    assert_eq!(
        events[1].1["DuplicateSubmissionReceived"]["payload_differs"],
        false
    );
}

#[tokio::test]
async fn a_resubmission_with_different_data_is_a_duplicate_that_records_the_difference() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.post_batch(&batch(vec![item_with_id("c1")]))
            .await
            .status(),
        200
    );
    let mut changed = item_with_id("c1");
    changed["call"]["recording_url"] = json!("https://elsewhere.invalid/other.mp3");

    let response = app
        .batch_request()
        .header("x-tenant-id", "another-tenant")
        .json(&batch(vec![changed]))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(statuses(&json_body(response).await), vec!["duplicate"]);
    let events = app.call_events("partner-a", "c1").await;
    assert_eq!(events.len(), 2);
    // The first submission wins: the accepted call keeps its original recording.
    assert_eq!(
        events[0].1["CallAccepted"]["call"]["call"]["recording_url"],
        published_item()["call"]["recording_url"]
    );
    assert_eq!(
        events[1].1["DuplicateSubmissionReceived"]["payload_differs"],
        true
    );
}

#[tokio::test]
async fn concurrent_submissions_of_the_same_call_accept_it_exactly_once() {
    let app = TestApp::spawn().await;
    let body = batch(vec![item_with_id("raced"), item_with_id("other")]);

    let requests = (0..8).map(|_| app.post_batch(&body));
    let responses = futures_util::future::join_all(requests).await;

    let mut accepted = 0;
    for response in responses {
        assert_eq!(response.status(), 200);
        let body = json_body(response).await;
        accepted += statuses(&body).iter().filter(|s| **s == "accepted").count();
    }
    // One acceptance for each of the two ids, whoever won the race.
    assert_eq!(accepted, 2);
    let events = app.call_events("partner-a", "raced").await;
    assert_eq!(events.iter().filter(|e| e.0 == "CallAccepted").count(), 1);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.0 == "DuplicateSubmissionReceived")
            .count(),
        7
    );
    assert_eq!(app.count_events_of_type("BatchSubmitted").await, 8);
}

#[tokio::test]
async fn the_same_call_id_from_two_partners_is_two_calls() {
    let app = TestApp::spawn().await;
    let other = callingest::partners::create_partner(&app.pool, "partner-b", None, 600)
        .await
        .unwrap();
    let body = batch(vec![item_with_id("shared-id")]);

    let first = app.post_batch(&body).await;
    let second = app
        .batch_request_as(&other)
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(statuses(&json_body(first).await), vec!["accepted"]);
    assert_eq!(statuses(&json_body(second).await), vec!["accepted"]);
    assert_eq!(app.call_events("partner-a", "shared-id").await.len(), 1);
    assert_eq!(app.call_events("partner-b", "shared-id").await.len(), 1);
}
