//! Every error answer of the published contract, with its exact status and body, and nothing
//! stored after any of them.

use callingest::partners::PartnerCredentials;
use serde_json::{json, Value};

use crate::helpers::{batch, item_with_id, json_body, published_item, TestApp, BATCH_PATH};

async fn assert_answer(response: reqwest::Response, status: u16, body: Value) {
    assert_eq!(response.status(), status);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(json_body(response).await, body);
}

async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(
        app.event_count().await,
        0,
        "a refused request stored events"
    );
}

fn forbidden() -> Value {
    json!({"success": false, "message": "Forbidden"})
}

#[tokio::test]
async fn requests_without_valid_credentials_are_forbidden() {
    let app = TestApp::spawn().await;
    let body = batch(vec![published_item()]);
    let url = app.url(BATCH_PATH);
    let tenant_headers = |r: reqwest::RequestBuilder| {
        r.header("x-tenant-id", "t")
            .header("x-sub-tenant-id", "s")
            .json(&body)
    };

    let no_key = tenant_headers(app.client.post(&url).header("x-partner-id", "partner-a"));
    let wrong_key = tenant_headers(
        app.client
            .post(&url)
            .header("x-partner-id", "partner-a")
            .header("x-api-key", "cik_wrong"),
    );
    let no_partner = tenant_headers(
        app.client
            .post(&url)
            .header("x-api-key", &app.partner.api_key),
    );
    let unknown_partner = tenant_headers(
        app.client
            .post(&url)
            .header("x-partner-id", "nobody")
            .header("x-api-key", &app.partner.api_key),
    );
    for request in [no_key, wrong_key, no_partner, unknown_partner] {
        assert_answer(request.send().await.unwrap(), 403, forbidden()).await;
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn the_key_may_also_be_sent_as_a_bearer_token() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(app.url(BATCH_PATH))
        .header("x-partner-id", "partner-a")
        .header("authorization", format!("Bearer {}", app.partner.api_key))
        .header("x-tenant-id", "t")
        .header("x-sub-tenant-id", "s")
        .json(&batch(vec![published_item()]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn partner_b_cannot_authenticate_with_partner_a_key() {
    let app = TestApp::spawn().await;
    callingest::partners::create_partner(&app.pool, "partner-b", None, 600)
        .await
        .unwrap();

    let b_with_a_key = PartnerCredentials {
        partner_id: "partner-b".into(),
        api_key: app.partner.api_key.clone(),
        signing_secret: String::new(),
    };

    let response = app
        .batch_request_as(&b_with_a_key)
        .json(&batch(vec![published_item()]))
        .send()
        .await
        .unwrap();

    assert_answer(response, 403, forbidden()).await;
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn missing_or_blank_tenant_headers_are_bad_requests_with_the_published_messages() {
    let app = TestApp::spawn().await;
    let body = batch(vec![published_item()]);
    let base = || {
        app.client
            .post(app.url(BATCH_PATH))
            .header("x-partner-id", "partner-a")
            .header("x-api-key", &app.partner.api_key)
            .json(&body)
    };
    let tenant = json!({"success": false, "message": "Tenant ID is required"});
    let sub_tenant = json!({"success": false, "message": "Sub-Tenant ID is required"});

    assert_answer(
        base().header("x-sub-tenant-id", "s").send().await.unwrap(),
        400,
        tenant.clone(),
    )
    .await;
    assert_answer(
        base()
            .header("x-tenant-id", "  ")
            .header("x-sub-tenant-id", "s")
            .send()
            .await
            .unwrap(),
        400,
        tenant,
    )
    .await;
    assert_answer(
        base().header("x-tenant-id", "t").send().await.unwrap(),
        400,
        sub_tenant.clone(),
    )
    .await;
    assert_answer(
        base()
            .header("x-tenant-id", "t")
            .header("x-sub-tenant-id", "")
            .send()
            .await
            .unwrap(),
        400,
        sub_tenant,
    )
    .await;
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn authentication_is_checked_before_tenant_headers() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(app.url(BATCH_PATH))
        .header("x-partner-id", "partner-a")
        .header("x-api-key", "wrong")
        .json(&batch(vec![published_item()]))
        .send()
        .await
        .unwrap();
    assert_answer(response, 403, forbidden()).await;
}

#[tokio::test]
async fn a_partner_over_its_rate_limit_is_told_when_to_retry() {
    let app = TestApp::builder().rate_limit(2).spawn().await;
    let body = batch(vec![item_with_id("c1")]);
    assert_eq!(app.post_batch(&body).await.status(), 200);
    assert_eq!(app.post_batch(&body).await.status(), 200);
    let events_before = app.event_count().await;

    let response = app.post_batch(&body).await;

    assert_eq!(response.status(), 429);
    // Two requests a minute: the next one is allowed about 30 seconds later.
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (29..=30).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    assert_eq!(
        response.headers()["ratelimit-policy"],
        "\"per-minute\";q=2;w=60"
    );
    assert_eq!(
        response.headers()["ratelimit"].to_str().unwrap(),
        format!("\"per-minute\";r=0;t={retry_after}")
    );
    assert_eq!(
        json_body(response).await,
        json!({
            "success": false,
            "message": format!("Rate limit exceeded. Try again in {retry_after} seconds.")
        })
    );
    assert_eq!(app.event_count().await, events_before);
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_unsupported() {
    let app = TestApp::spawn().await;
    let response = app
        .batch_request()
        .header("content-type", "text/plain")
        .body(batch(vec![published_item()]).to_string())
        .send()
        .await
        .unwrap();
    assert_answer(
        response,
        415,
        json!({"success": false, "message": "Content-Type must be application/json"}),
    )
    .await;
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn malformed_json_is_a_bad_request() {
    let app = TestApp::spawn().await;
    for raw in [
        &b"{\"data\": ["[..],
        b"not json at all",
        b"{\"data\": \"\xff\xfe\"}",
    ] {
        let response = app
            .batch_request()
            .header("content-type", "application/json")
            .body(raw.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body = json_body(response).await;
        assert_eq!(body["success"], false);
        assert!(body["message"]
            .as_str()
            .unwrap()
            .starts_with("Request body is not valid JSON"));
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn deeply_nested_json_is_refused_cleanly() {
    let app = TestApp::spawn().await;
    let nested = format!(
        "{{\"data\": {}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let response = app
        .batch_request()
        .header("content-type", "application/json")
        .body(nested)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_nothing_stored(&app).await;
}

/// A body of `size` bytes that is otherwise a valid batch (padding in an extra field).
fn body_of_size(size: usize) -> Vec<u8> {
    let mut item = published_item();
    item["padding"] = json!("");
    let base = batch(vec![item]).to_string().into_bytes();
    let padding = "x".repeat(size - base.len());
    let mut item = published_item();
    item["padding"] = json!(padding);
    let body = batch(vec![item]).to_string().into_bytes();
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn a_body_of_exactly_five_mib_is_accepted() {
    let app = TestApp::spawn().await;
    let response = app
        .batch_request()
        .header("content-type", "application/json")
        .body(body_of_size(callingest::http::MAX_BODY_BYTES))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_body_over_five_mib_is_too_large_also_when_chunked() {
    let app = TestApp::spawn().await;
    let too_big = body_of_size(callingest::http::MAX_BODY_BYTES + 1);
    let expected =
        json!({"success": false, "message": "Request body is larger than 5242880 bytes"});

    let sized = app
        .batch_request()
        .header("content-type", "application/json")
        .body(too_big.clone())
        .send()
        .await
        .unwrap();
    assert_answer(sized, 413, expected.clone()).await;

    // A stream has no Content-Length: reqwest sends it with chunked transfer encoding.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        too_big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let chunked = app
        .batch_request()
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_answer(chunked, 413, expected).await;
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_batch_with_several_broken_items_lists_every_error_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let mut first = published_item();
    first["call"]["id"] = json!("");
    first["call"]["contact_number"] = json!("12345");
    let valid = item_with_id("valid-one");
    let mut third = item_with_id("third");
    third["agent"]["email"] = json!("not-an-email");
    third["call"]["start_time"] = json!("2023-01-01T10:00:00+05:30");
    third["metadata"] = json!({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6});

    let response = app.post_batch(&batch(vec![first, valid, third])).await;

    assert_eq!(response.status(), 422);
    let body = json_body(response).await;
    assert_eq!(body["success"], false);
    assert_eq!(body["message"], "Validation failed");
    let errors = body["errors"].as_array().unwrap();
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec![
            "data[0].call.id",
            "data[0].call.contact_number",
            "data[2].call.start_time",
            "data[2].agent.email",
            "data[2].metadata",
        ]
    );
    assert_eq!(
        errors[0],
        json!({"field": "data[0].call.id", "message": "id should not be empty"})
    );
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn missing_and_mistyped_fields_are_validation_errors_with_their_paths() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({}), "data", "data is required"),
        (json!({"data": "nope"}), "data", "data must be an array"),
        (
            json!({"data": []}),
            "data",
            "data must contain at least 1 call",
        ),
        (
            json!({"data": [42]}),
            "data[0]",
            "data[0] must be an object",
        ),
        (
            json!({"data": [{"call": {"id": 7}}]}),
            "data[0].call.id",
            "id must be a string",
        ),
    ];
    for (body, field, message) in cases {
        let response = app.post_batch(&body).await;
        assert_eq!(response.status(), 422, "{body}");
        let errors = json_body(response).await["errors"].clone();
        assert_eq!(
            errors[0],
            json!({"field": field, "message": message}),
            "{body}"
        );
    }
    let fifty_one: Vec<Value> = (0..51).map(|i| item_with_id(&format!("c{i}"))).collect();
    let response = app.post_batch(&batch(fifty_one)).await;
    assert_eq!(response.status(), 422);
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_ten_kilobyte_call_id_is_a_validation_error_not_a_crash() {
    let app = TestApp::spawn().await;
    let response = app
        .post_batch(&batch(vec![item_with_id(&"x".repeat(10 * 1024))]))
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        json_body(response).await["errors"],
        json!([{"field": "data[0].call.id", "message": "id must be at most 255 characters"}])
    );

    let mut long_name = published_item();
    long_name["agent"]["name"] = json!("n".repeat(256));
    long_name["customer"]["disposition_status"] = json!("d".repeat(256));
    long_name["call"]["recording_url"] = json!(format!("https://r.invalid/{}", "a".repeat(2048)));
    let response = app.post_batch(&batch(vec![long_name])).await;
    assert_eq!(response.status(), 422);
    let errors = json_body(response).await["errors"].clone();
    let fields: Vec<&str> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec![
            "data[0].call.recording_url",
            "data[0].agent.name",
            "data[0].customer.disposition_status"
        ]
    );
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_failure_inside_the_service_answers_500_without_detail() {
    let app = TestApp::spawn().await;
    // Break the event store underneath the running service.
    sqlx::query("alter table events rename to events_gone")
        .execute(&app.pool)
        .await
        .unwrap();

    let response = app.post_batch(&batch(vec![published_item()])).await;

    assert_answer(
        response,
        500,
        json!({"success": false, "message": "Internal server error"}),
    )
    .await;
}

#[tokio::test]
async fn unknown_paths_answer_json_too() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/api/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_answer(
        response,
        404,
        json!({"success": false, "message": "Not found"}),
    )
    .await;
}

#[tokio::test]
async fn a_nul_character_is_a_validation_error_not_a_server_error() {
    let app = TestApp::spawn().await;
    let mut item = published_item();
    item["customer"]["name"] = json!("Jane\u{0}Smith");

    let response = app.post_batch(&batch(vec![item])).await;

    assert_eq!(response.status(), 422);
    assert_eq!(
        json_body(response).await["errors"],
        json!([{"field": "data[0].customer.name", "message": "must not contain the NUL character (\\u0000)"}])
    );
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_nul_character_in_the_url_is_a_bad_request() {
    let app = TestApp::spawn().await;
    for path in [
        "/api/v1/partner/calls/a%00b",
        "/api/v1/partner/calls?tenant_id=x%00",
    ] {
        let response = app
            .client
            .get(app.url(path))
            .header("x-partner-id", "partner-a")
            .header("x-api-key", &app.partner.api_key)
            .send()
            .await
            .unwrap();
        assert_answer(
            response,
            400,
            json!({"success": false, "message": "the URL must not contain the NUL character (%00)"}),
        )
        .await;
    }
}

#[tokio::test]
async fn ten_thousand_metadata_keys_are_one_validation_error() {
    let app = TestApp::spawn().await;
    let mut item = published_item();
    let keys: serde_json::Map<String, Value> =
        (0..10_000).map(|i| (format!("k{i}"), json!(i))).collect();
    item["metadata"] = Value::Object(keys);

    let response = app.post_batch(&batch(vec![item])).await;

    assert_eq!(response.status(), 422);
    assert_eq!(
        json_body(response).await["errors"],
        json!([{"field": "data[0].metadata", "message": "metadata must have at most 5 pairs, got 10000"}])
    );
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn header_injection_in_ids_is_refused() {
    let app = TestApp::spawn().await;
    let mut item = item_with_id("c1\r\nSet-Cookie: stolen=1");
    item["agent"]["id"] = json!("agent\nX-Injected: 1");

    let response = app.post_batch(&batch(vec![item])).await;

    assert_eq!(response.status(), 422);
    let errors = json_body(response).await["errors"].clone();
    assert_eq!(
        errors[0],
        json!({"field": "data[0].call.id", "message": "id must not contain control characters"})
    );
    assert_eq!(errors[1]["field"], "data[0].agent.id");
    assert_nothing_stored(&app).await;
}
