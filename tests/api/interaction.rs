//! Interaction analytics end to end: a synthesised stereo call with a known script of turns is
//! submitted, fetched from a recording host on 127.0.0.1, analysed, and reported — in the
//! callback's `results`, in `GET /calls/{id}`, per agent and day in `agent_daily_stats` and
//! `GET /agents/{id}/stats` — within the script's tolerances; its mono mix shows no two-sided
//! figures and does not count in the analysts' talk ratio.

use std::time::Duration;

use callingest::config::Role;
use callingest_domain::interaction::Interaction;
use serde_json::{json, Value};

use crate::helpers::callback_receiver::{Receiver, Reply, TestCa};
use crate::helpers::recording_server::MemoryRecordings;
use crate::helpers::scripted_call::{assert_close, render, support_call, wav_bytes, ScriptedCall};
use crate::helpers::{as_analyst, batch, item_with_id, test_workers, TestApp};

const WAIT: Duration = Duration::from_secs(30);

/// Serves the call's stereo WAV and its mono mix on 127.0.0.1.
async fn serve(call: &ScriptedCall) -> MemoryRecordings {
    MemoryRecordings::start([
        (
            "stereo.wav".to_owned(),
            wav_bytes(&[&call.planes[0], &call.planes[1]]),
        ),
        ("mono.wav".to_owned(), wav_bytes(&[&call.mono()])),
    ])
    .await
}

/// The interaction figures of a JSON object that carries them at its top level.
fn figures(v: &Value) -> Interaction {
    serde_json::from_value(v.clone()).expect("interaction figures")
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = app
        .client
        .get(app.url(path))
        .header("x-partner-id", &app.partner.partner_id)
        .header("x-api-key", &app.partner.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_scripted_call_reports_its_turns_in_the_callback_the_call_and_the_agents_days() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_owned();
    let call = tokio::task::spawn_blocking(move || render(&support_call(), 1_000, &dir_path))
        .await
        .unwrap();
    let truth = call.truth();
    let host = serve(&call).await;
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, vec![Reply::Status(204)]).await;
    let mut processing = test_workers();
    processing.outbound.extra_ca_file = Some(ca.ca_file().to_owned());
    let app = TestApp::builder()
        .role(Role::All)
        .workers(processing)
        .spawn()
        .await;

    let mut stereo = item_with_id("stereo");
    stereo["call"]["recording_url"] = json!(host.url("stereo.wav"));
    stereo["callback_url"] = json!(receiver.url());
    let mut mono = item_with_id("mono");
    mono["call"]["recording_url"] = json!(host.url("mono.wav"));
    mono.as_object_mut().unwrap().remove("callback_url");
    app.post_batch(&batch(vec![stereo, mono])).await;

    // The callback.
    let requests = receiver.wait_for_requests(1, WAIT).await;
    let body = requests[0].json();
    assert_eq!(body["status"], "completed");
    let results = &body["results"];
    assert_eq!(results["detector_version"], 2);
    let reported = figures(results);
    assert_close(&reported, &truth);
    // No transcription engine: no transcript figures, and none invented.
    assert!(
        results.get("agent_words_per_minute").is_none()
            || results["agent_words_per_minute"].is_null()
    );

    // The call as the partner reads it: the same figures.
    app.final_row("stereo").await;
    let view = get_json(&app, "/api/v1/partner/calls/stereo").await;
    assert_eq!(figures(&view), reported);
    assert_eq!(view["detector_version"], 2);

    // The mono mix: analysed, but no figure that needs two sides.
    let mono_row = app.final_row("mono").await;
    assert_eq!(mono_row["status"], "completed");
    let mono_view = get_json(&app, "/api/v1/partner/calls/mono").await;
    assert_eq!(figures(&mono_view), Interaction::default());
    assert!(mono_view["agent_talk_ms"].as_i64().unwrap() > 0);

    // The agent's day: both calls counted, the means over the stereo call alone.
    let stats = get_json(
        &app,
        "/api/v1/partner/agents/agent123/stats?from=2023-01-01&to=2023-01-31",
    )
    .await;
    let days = stats["days"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{stats}");
    let day = &days[0];
    assert_eq!(day["day"], "2023-01-01");
    assert_eq!(
        (day["calls"].clone(), day["completed_calls"].clone()),
        (json!(2), json!(2))
    );
    let close = |a: &Value, b: Option<f64>| (a.as_f64().unwrap() - b.unwrap()).abs() < 1e-9;
    assert!(close(&day["mean_talk_ratio"], reported.talk_ratio), "{day}");
    assert!(
        close(&day["mean_interactivity"], reported.interactivity),
        "{day}"
    );
    assert_eq!(
        day["longest_monologue_ms"],
        json!(reported.longest_monologue_ms)
    );
    assert!(
        day["agent_words_per_minute"].is_null(),
        "no transcript: {day}"
    );
    // Another agent, or a tenant the calls are not in, has nothing.
    let other = get_json(
        &app,
        "/api/v1/partner/agents/agent999/stats?from=2023-01-01&to=2023-01-01",
    )
    .await;
    assert_eq!(other["days"], json!([]));
    let tenant = get_json(
        &app,
        "/api/v1/partner/agents/agent123/stats?from=2023-01-01&to=2023-01-01&tenant_id=nobody",
    )
    .await;
    assert_eq!(tenant["days"], json!([]));

    // Analysts: the talk ratio example leaves the mono call out instead of scoring it 1.0.
    let talk = as_analyst(
        &app,
        include_str!("../../projections/queries/2_mean_talk_ratio_per_agent.sql"),
    )
    .await
    .unwrap();
    assert_eq!(talk[0]["calls"], 1);
    let expected = (reported.talk_ratio.unwrap() * 1000.0).round() / 1000.0;
    assert_eq!(talk[0]["mean_agent_talk_ratio"].as_f64(), Some(expected));
    let weekly = as_analyst(
        &app,
        include_str!("../../projections/queries/6_agent_coaching_per_week.sql"),
    )
    .await
    .unwrap();
    assert_eq!(weekly.len(), 1);
    assert_eq!(weekly[0]["completed_calls"], 2);
    assert_eq!(weekly[0]["mean_talk_ratio"].as_f64(), Some(expected));
    assert_eq!(
        weekly[0]["longest_monologue_ms"],
        json!(reported.longest_monologue_ms)
    );
}

#[tokio::test]
async fn agent_stats_refuse_a_reversed_range() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/api/v1/partner/agents/a1/stats?from=2024-02-01&to=2024-01-01"))
        .header("x-partner-id", &app.partner.partner_id)
        .header("x-api-key", &app.partner.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "from must not be after to");
    let unauthenticated = app
        .client
        .get(app.url("/api/v1/partner/agents/a1/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 403);
}
