//! The service's endpoints from a test: typed through the generated client (`client/`, built
//! from `openapi/openapi.json`), or as raw requests where a test checks statuses, headers or
//! malformed input.
//!
//! Typed helpers (`app.submit(..)`, `app.get_call(..)`, ...) panic on an error answer (with its
//! body): they are for the steps a test expects to succeed. Every other operation is one call
//! of the generated client with credentials, `app.partner_api()` / `app.admin_api()`, typed the
//! same way; add a helper here when several tests read the same endpoint. To assert on an error
//! answer, use the raw request or the client's `Error::ErrorResponse`.

use callingest::partners::PartnerCredentials;
use callingest_client::types;
use serde_json::Value;

use super::app::{TestApp, ADMIN_TOKEN};

pub const BATCH_PATH: &str = "/api/v1/partner/ingest/batch-call";

impl TestApp {
    /// The generated client with the test partner's credentials.
    pub fn partner_api(&self) -> callingest_client::Client {
        self.partner_api_as(&self.partner)
    }

    /// The generated client with `partner`'s credentials.
    pub fn partner_api_as(&self, partner: &PartnerCredentials) -> callingest_client::Client {
        callingest_client::partner_client(&self.address, &partner.partner_id, &partner.api_key)
            .expect("a client with the partner's credentials")
    }

    /// The generated client with the admin token, for the support operations.
    pub fn admin_api(&self) -> callingest_client::Client {
        callingest_client::admin_client(&self.address, ADMIN_TOKEN)
            .expect("a client with the admin token")
    }

    /// A batch request with every header right, ready to be altered by a test.
    pub fn batch_request(&self) -> reqwest::RequestBuilder {
        self.batch_request_as(&self.partner)
    }

    pub fn batch_request_as(&self, partner: &PartnerCredentials) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(BATCH_PATH))
            .header("x-partner-id", &partner.partner_id)
            .header("x-api-key", &partner.api_key)
            .header("x-tenant-id", "tenant1")
            .header("x-sub-tenant-id", "subtenant1")
    }

    /// `POST` the batch `body` (any JSON, valid or not) with every header right.
    pub async fn post_batch(&self, body: &Value) -> reqwest::Response {
        self.batch_request()
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Submits the batch `body` and returns the service's acceptance; panics on any other
    /// answer.
    pub async fn submit(&self, body: &Value) -> types::BatchAccepted {
        let response = self.post_batch(body).await;
        let status = response.status();
        let text = response.text().await.expect("a body");
        assert_eq!(status, 200, "the batch was not accepted: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a BatchAccepted ({e}): {text}"))
    }

    /// `GET /api/v1/partner/calls/{call_id}` as the test partner.
    pub async fn get_call(&self, call_id: &str) -> types::CallView {
        expect_ok(self.partner_api().get_call().call_id(call_id).send().await)
    }

    /// `GET /api/v1/partner/batches/{batch_id}` as the test partner.
    pub async fn get_batch(&self, batch_id: uuid::Uuid) -> types::BatchView {
        expect_ok(
            self.partner_api()
                .get_batch()
                .batch_id(batch_id)
                .send()
                .await,
        )
    }

    /// `GET /api/v1/partner/calls/{call_id}/events` as the test partner.
    pub async fn get_call_events(&self, call_id: &str) -> types::CallHistory {
        expect_ok(
            self.partner_api()
                .get_call_events()
                .call_id(call_id)
                .send()
                .await,
        )
    }
}

/// The body of a successful answer; panics with the error (and its body) otherwise.
fn expect_ok<T: std::fmt::Debug>(
    answer: Result<callingest_client::ResponseValue<T>, callingest_client::Error<types::ErrorBody>>,
) -> T {
    match answer {
        Ok(value) => value.into_inner(),
        Err(error) => panic!("the request failed: {error:?}"),
    }
}
