//! A partner's rate limit holds for the fleet: two API instances (the real binary) on one
//! database share one partner's requests-per-minute budget.

use std::time::Duration;

use callingest::partners::create_partner;
use serde_json::{json, Value};

use crate::helpers::instances::Instance;
use crate::helpers::{batch, item_with_id, TestApp, TestDatabase, BATCH_PATH};

#[tokio::test]
async fn two_api_instances_share_one_partners_limit_of_three_per_minute() {
    let database = TestDatabase::create().await;
    let first = Instance::start(&database.url, "api", &[]);
    let second = Instance::start(&database.url, "api", &[]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    first.wait_ready(&client).await;
    second.wait_ready(&client).await;
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let partner = create_partner(&pool, "partner-a", None, 3).await.unwrap();
    let post = |instance: &Instance, call_id: &str| {
        client
            .post(instance.url(BATCH_PATH))
            .header("x-partner-id", &partner.partner_id)
            .header("x-api-key", &partner.api_key)
            .header("x-tenant-id", "tenant1")
            .header("x-sub-tenant-id", "subtenant1")
            .json(&batch(vec![item_with_id(call_id)]))
            .send()
    };

    // Three requests spread over the two instances: all within the limit.
    for (instance, call_id) in [(&first, "c1"), (&second, "c2"), (&first, "c3")] {
        let response = post(instance, call_id).await.unwrap();
        assert_eq!(response.status(), 200, "{call_id} via {}", instance.address);
    }

    // The fourth is over it, whichever instance it reaches.
    for (instance, call_id) in [(&second, "c4"), (&first, "c5")] {
        let response = post(instance, call_id).await.unwrap();
        assert_eq!(response.status(), 429, "{call_id} via {}", instance.address);
        // Three a minute, three spent at once: the next one is allowed about 20 s later.
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (15..=20).contains(&retry_after),
            "Retry-After: {retry_after}"
        );
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"per-minute\";q=3;w=60"
        );
        assert_eq!(
            response.headers()["ratelimit"].to_str().unwrap(),
            format!("\"per-minute\";r=0;t={retry_after}")
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({
                "success": false,
                "message": format!("Rate limit exceeded. Try again in {retry_after} seconds.")
            })
        );
    }
    let accepted: i64 =
        sqlx::query_scalar("select count(*) from events where event_type = 'CallAccepted'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(accepted, 3, "the refused requests stored nothing");
}

#[tokio::test]
async fn one_partner_over_its_limit_does_not_hold_back_another() {
    let app = TestApp::builder().rate_limit(1).spawn().await;
    let other = create_partner(&app.pool, "partner-b", None, 1)
        .await
        .unwrap();
    let body = batch(vec![item_with_id("c1")]);
    assert_eq!(app.post_batch(&body).await.status(), 200);
    assert_eq!(app.post_batch(&body).await.status(), 429);

    let response = app
        .batch_request_as(&other)
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
}
