//! Transcription end to end: the service transcribes accepted calls with a real Whisper model
//! (in-process, and through the OpenAI-compatible API of `callingest transcribe-server`), stores
//! the transcript and serves it; failures are retried and end in a completed call without one.

use std::sync::atomic::Ordering;
use std::time::Duration;

use callingest::config::{Role, TranscriberKind, TranscriptionConfig};
use serde_json::Value;

use crate::helpers::recording_server::MemoryRecordings;
use crate::helpers::{batch, item, wait_until, TestApp};

/// A recording host on 127.0.0.1 serving `bytes` as `call.wav`, counting requests.
async fn one_file_server(bytes: Vec<u8>) -> (MemoryRecordings, String) {
    let server = MemoryRecordings::start([("call.wav".to_owned(), bytes)]).await;
    let url = server.url("call.wav");
    (server, url)
}

fn transcription(kind: TranscriberKind) -> TranscriptionConfig {
    TranscriptionConfig {
        transcriber: kind,
        max_attempts: 2,
        backoff_base: Duration::from_millis(100),
        spool_dir: Some(tempfile::tempdir().unwrap().keep()),
        ..TranscriptionConfig::default()
    }
}

async fn app_transcribing_with(config: TranscriptionConfig) -> TestApp {
    TestApp::builder()
        .role(Role::All)
        .rate_limit(1_000)
        .transcriber(config)
        .spawn()
        .await
}

async fn transcript_response(app: &TestApp, call_id: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/api/v1/partner/calls/{call_id}/transcript")))
        .header("x-partner-id", &app.partner.partner_id)
        .header("x-api-key", &app.partner.api_key)
        .send()
        .await
        .unwrap()
}

/// The call's events as `(type, payload)`, payloads unwrapped from `{"Type": {...}}`.
async fn events(app: &TestApp, call_id: &str) -> Vec<(String, Value)> {
    app.call_events("partner-a", call_id)
        .await
        .into_iter()
        .map(|(event_type, payload)| {
            let inner = payload[&event_type].clone();
            (event_type, inner)
        })
        .collect()
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn an_unreachable_transcription_service_is_retried_then_the_call_completes_without_transcript(
) {
    let port = closed_port().await;
    let mut config = transcription(TranscriberKind::Openai);
    config.url = Some(format!("http://127.0.0.1:{port}"));
    let spool = config.spool_dir.clone().unwrap();
    let app = app_transcribing_with(config).await;
    let recording = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/audio/tests/fixtures/overlap.wav"
    ))
    .unwrap();
    let (host, host_url) = one_file_server(recording).await;
    let response = app
        .post_batch(&batch(vec![item("unheard", &host_url)]))
        .await;
    assert_eq!(response.status(), 200);

    let call = app
        .final_row_within("unheard", Duration::from_secs(30))
        .await;
    assert_eq!(call["status"], "completed", "{call}");
    assert_eq!(call["transcription_status"], "unavailable");
    assert_eq!(call["transcription_attempts"], 2);
    assert!(
        call["agent_talk_ms"].as_i64().is_some(),
        "analytics kept: {call}"
    );
    assert_eq!(
        app.event_types("unheard").await[3..],
        [
            "RecordingAnalyzed",
            "TranscriptionStarted",
            "TranscriptionFailed",
            "TranscriptionStarted",
            "TranscriptionFailed",
            "ProcessingCompleted"
        ]
    );
    let events = events(&app, "unheard").await;
    let (_, completed) = events.last().unwrap();
    assert_eq!(completed["results"]["transcription_available"], false);
    let (_, failed) = &events[5];
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("transcription service unreachable"),
        "{failed}"
    );
    assert_eq!(failed["retryable"], true);

    let response = transcript_response(&app, "unheard").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("transcription failed"),
        "{body}"
    );
    // The spooled recording was used by both attempts: downloaded once, then let go.
    assert_eq!(host.hits.load(Ordering::SeqCst), 1);
    // (The worker removes it just after recording the outcome: allow it a moment.)
    let spool = &spool;
    wait_until(
        "the spooled recording to be removed",
        Duration::from_secs(5),
        || async move { std::fs::read_dir(spool).unwrap().count() == 0 },
    )
    .await;
}

#[tokio::test]
async fn without_an_engine_calls_complete_after_analysis_and_have_no_transcript() {
    let app = app_transcribing_with(transcription(TranscriberKind::None)).await;
    let recording = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/audio/tests/fixtures/overlap.wav"
    ))
    .unwrap();
    let (_host, host_url) = one_file_server(recording).await;
    app.post_batch(&batch(vec![item("plain", &host_url)])).await;
    let call = app.final_row_within("plain", Duration::from_secs(30)).await;
    assert_eq!(call["status"], "completed");
    assert_eq!(call["transcription_status"], Value::Null);
    assert!(!app
        .event_types("plain")
        .await
        .iter()
        .any(|t| t.starts_with("Transcri")));
    let response = transcript_response(&app, "plain").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("none was made"),
        "{body}"
    );
    assert_eq!(transcript_response(&app, "nope").await.status(), 404);
}

/// Runs one step on the call as a worker would.
async fn step(app: &TestApp, call_id: &str, command: callingest_domain::call::CallCommand) {
    let store = callingest::event_store::store::<callingest_domain::call::Call>(
        app.pool.clone(),
        &app.privacy,
    );
    callingest::event_store::execute(
        &store,
        &format!("partner-a:{call_id}"),
        command,
        &Default::default(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_transcript_is_served_from_its_event_before_the_projection_has_it() {
    use callingest_domain::call::{
        AudioAnalytics, CallCommand, FetchSuccess, Speaker, TranscriptDone, TranscriptSegment,
    };
    // The API alone: no projector runs, so the `transcript` table stays empty.
    let app = TestApp::spawn().await;
    app.post_batch(&batch(vec![item("fresh", "https://example.com/a.wav")]))
        .await;
    let now = chrono::Utc::now;
    step(
        &app,
        "fresh",
        CallCommand::StartFetch {
            max_attempts: 5,
            at: now(),
        },
    )
    .await;
    let fetched = FetchSuccess {
        bytes: 10,
        sha256: "ab".repeat(32),
        content_type: None,
        format: Some("wav".into()),
        at: now(),
    };
    step(&app, "fresh", CallCommand::RecordFetchSuccess(fetched)).await;
    let analytics = AudioAnalytics {
        duration_ms: 3_000,
        sample_rate: 16_000,
        channels: 2,
        codec: "pcm_s16le".into(),
        agent_talk_ms: 1_000,
        customer_talk_ms: Some(1_000),
        silence_ratio: 0.3,
        longest_silence_ms: 500,
        overlap_ms: 0,
        mean_dbfs: Some(-20.0),
        peak_dbfs: Some(-3.0),
        clipping_ratio: 0.0,
        detector_version: Some(2),
        interaction: Default::default(),
    };
    let analysed = CallCommand::RecordAnalysis {
        analytics,
        transcribe: true,
        at: now(),
    };
    step(&app, "fresh", analysed).await;
    let start = CallCommand::StartTranscription {
        engine: "whisper".into(),
        max_attempts: 3,
        at: now(),
    };
    step(&app, "fresh", start).await;
    let done = TranscriptDone {
        engine: "whisper".into(),
        model: "ggml-tiny.en".into(),
        language: "en".into(),
        segments: vec![
            TranscriptSegment {
                channel: Speaker::Agent,
                start_ms: 0,
                end_ms: 900,
                text: " How can I help? ".into(),
            },
            TranscriptSegment {
                channel: Speaker::Customer,
                start_ms: 1_000,
                end_ms: 2_000,
                text: "My parcel is late.".into(),
            },
        ],
        at: now(),
    };
    step(&app, "fresh", CallCommand::RecordTranscript(done)).await;

    let rows: i64 = sqlx::query_scalar("select count(*) from transcript")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "no projector ran");
    let response = transcript_response(&app, "fresh").await;
    assert_eq!(response.status(), 200);
    let transcript: Value = response.json().await.unwrap();
    assert_eq!(transcript["text"], "How can I help? My parcel is late.");
    assert_eq!(transcript["word_count"], 8);
    assert_eq!(transcript["segments"][0]["channel"], "agent");
    assert_eq!(transcript["segments"][0]["text"], "How can I help?");
    assert_eq!(transcript["segments"][1]["channel"], "customer");
    assert_eq!(transcript["segments"][1]["start_ms"], 1_000);
    // Another partner asking for the same call id gets nothing.
    let other = callingest::partners::create_partner(&app.pool, "partner-b", None, 100)
        .await
        .unwrap();
    let response = app
        .client
        .get(app.url("/api/v1/partner/calls/fresh/transcript"))
        .header("x-partner-id", &other.partner_id)
        .header("x-api-key", &other.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[cfg(feature = "whisper")]
mod with_whisper {
    use super::*;
    use callingest::config::Secret;
    use callingest_transcribe::word_error_rate;
    use poem::listener::{Acceptor, Listener, TcpListener};
    use poem::Server;

    use crate::helpers::speech_clips as speech;

    const AGENT: &str =
        "Thank you for calling the support line, my name is Sarah. How can I help you today?";
    const CUSTOMER: &str = "Hello, my package was supposed to arrive on Monday but it never came.";

    /// A stereo WAV: the agent speaks on the left, then the customer on the right.
    fn two_sided_call() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let agent = speech::speak(AGENT, dir.path());
        let customer = speech::speak(CUSTOMER, dir.path());
        let gap = speech::samples(1.0);
        let len = gap + agent.len() + gap + customer.len() + gap;
        let mut left = speech::noise(len, 0.002, 1);
        let mut right = speech::noise(len, 0.002, 2);
        speech::place(&mut left, gap, &agent);
        speech::place(&mut right, gap + agent.len() + gap, &customer);
        let path = dir.path().join("call.wav");
        speech::write_wav(&path, &[left, right]);
        std::fs::read(path).unwrap()
    }

    fn whisper_config() -> TranscriptionConfig {
        TranscriptionConfig {
            whisper_model: Some(speech::model_path()),
            ..transcription(TranscriberKind::Whisper)
        }
    }

    /// The words of one side's segments.
    fn side(transcript: &Value, channel: &str) -> String {
        let texts: Vec<&str> = transcript["segments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["channel"] == channel)
            .map(|s| s["text"].as_str().unwrap())
            .collect();
        texts.join(" ")
    }

    /// Both sides are heard and attributed, in time order, with a bounded word error rate.
    fn assert_two_sided_transcript(transcript: &Value) {
        let agent = side(transcript, "agent");
        let customer = side(transcript, "customer");
        let agent_wer = word_error_rate(AGENT, &agent);
        let customer_wer = word_error_rate(CUSTOMER, &customer);
        assert!(agent_wer <= 0.35, "agent WER {agent_wer}: {agent:?}");
        assert!(
            customer_wer <= 0.35,
            "customer WER {customer_wer}: {customer:?}"
        );
        let starts: Vec<i64> = transcript["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["start_ms"].as_i64().unwrap())
            .collect();
        assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
        let first_customer = transcript["segments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["channel"] == "customer")
            .unwrap();
        assert!(
            first_customer["start_ms"].as_i64().unwrap() > 4_000,
            "the customer speaks after the agent: {first_customer}"
        );
        let words = transcript["word_count"].as_i64().unwrap();
        assert!(words >= 20, "{words} words");
    }

    #[tokio::test]
    async fn whisper_transcribes_each_side_of_a_stereo_call() {
        let app = app_transcribing_with(whisper_config()).await;
        let (host, host_url) = one_file_server(two_sided_call()).await;
        app.post_batch(&batch(vec![item("spoken", &host_url)]))
            .await;

        let call = app
            .final_row_within("spoken", Duration::from_secs(120))
            .await;
        assert_eq!(call["status"], "completed", "{call}");
        assert_eq!(call["transcription_status"], "available");
        let response = transcript_response(&app, "spoken").await;
        assert_eq!(response.status(), 200);
        let transcript: Value = response.json().await.unwrap();
        assert_eq!(transcript["engine"], "whisper");
        // The model is named after its file: ggml-tiny.en-q8_0 by default.
        let model = speech::model_path();
        assert_eq!(
            transcript["model"].as_str(),
            model.file_stem().and_then(|s| s.to_str())
        );
        assert_eq!(transcript["language"], "en");
        assert_two_sided_transcript(&transcript);
        assert_eq!(call["transcript_word_count"], transcript["word_count"]);

        let events = events(&app, "spoken").await;
        let (_, produced) = events
            .iter()
            .find(|(t, _)| t == "TranscriptProduced")
            .expect("TranscriptProduced recorded");
        assert_eq!(
            produced["segment_count"],
            transcript["segments"].as_array().unwrap().len()
        );
        let (last, completed) = events.last().unwrap();
        assert_eq!(last, "ProcessingCompleted");
        assert_eq!(completed["results"]["transcription_available"], true);
        // Handed over through the spool: one download for analysis and transcription.
        assert_eq!(host.hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_service_killed_mid_transcription_transcribes_the_call_after_restart() {
        // With the default lease (30 s): the killed service's claim runs out, then the new one
        // takes the call over.
        let app = app_transcribing_with(whisper_config()).await;
        let (_host, host_url) = one_file_server(two_sided_call()).await;
        app.post_batch(&batch(vec![item("interrupted", &host_url)]))
            .await;

        // Kill the service as soon as the first attempt has started.
        let started = &app;
        wait_until(
            "the transcription to start",
            Duration::from_secs(30),
            || async move {
                started
                    .event_types("interrupted")
                    .await
                    .iter()
                    .any(|t| t == "TranscriptionStarted")
            },
        )
        .await;
        let app = app.restart().await;

        let call = app
            .final_row_within("interrupted", Duration::from_secs(120))
            .await;
        assert_eq!(call["transcription_status"], "available", "{call}");
        let types = app.event_types("interrupted").await;
        let count = |name: &str| types.iter().filter(|t| *t == name).count();
        assert_eq!(count("TranscriptionStarted"), 2, "{types:?}");
        assert_eq!(count("TranscriptProduced"), 1, "{types:?}");
        assert_eq!(count("ProcessingCompleted"), 1, "{types:?}");
        let transcript: Value = transcript_response(&app, "interrupted")
            .await
            .json()
            .await
            .unwrap();
        assert_two_sided_transcript(&transcript);
    }

    async fn transcription_server(api_key: &str) -> String {
        let engine = callingest::transcription::build_engine(&whisper_config())
            .unwrap()
            .unwrap();
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
        let routes = callingest::transcription::server::routes(engine, Some(Secret::new(api_key)));
        tokio::spawn(Server::new_with_acceptor(acceptor).run(routes));
        format!("http://127.0.0.1:{port}")
    }

    #[tokio::test]
    async fn the_openai_engine_transcribes_through_the_transcription_server() {
        let base = transcription_server("stt-key").await;
        let mut config = transcription(TranscriberKind::Openai);
        config.url = Some(base.clone());
        config.api_key = Some(Secret::new("stt-key"));
        config.model = "tiny.en".into();
        let app = app_transcribing_with(config).await;
        let (_host, host_url) = one_file_server(two_sided_call()).await;
        app.post_batch(&batch(vec![item("remote", &host_url)]))
            .await;

        let call = app
            .final_row_within("remote", Duration::from_secs(120))
            .await;
        assert_eq!(call["transcription_status"], "available", "{call}");
        let transcript: Value = transcript_response(&app, "remote")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(transcript["engine"], "openai");
        assert_eq!(transcript["model"], "tiny.en");
        assert_two_sided_transcript(&transcript);

        // A wrong key is refused (401), a permanent failure: no second attempt.
        let mut wrong = transcription(TranscriberKind::Openai);
        wrong.url = Some(base);
        wrong.api_key = Some(Secret::new("not-the-key"));
        let app = app_transcribing_with(wrong).await;
        app.post_batch(&batch(vec![item("refused", &host_url)]))
            .await;
        let call = app
            .final_row_within("refused", Duration::from_secs(60))
            .await;
        assert_eq!(call["transcription_status"], "unavailable");
        assert_eq!(call["transcription_attempts"], 1);
        let events = events(&app, "refused").await;
        let (_, failed) = events
            .iter()
            .find(|(t, _)| t == "TranscriptionFailed")
            .unwrap();
        assert!(
            failed["error"].as_str().unwrap().contains("401"),
            "{failed}"
        );
        assert_eq!(failed["retryable"], false);
    }

    /// The server streams an upload through the engine; the `duration` it answers is still
    /// the decoded audio's.
    #[tokio::test]
    async fn the_transcription_server_answers_segments_within_the_decoded_duration() {
        let base = transcription_server("stt-key").await;
        let wav = two_sided_call();
        // 16 kHz, 2 channels, 2 bytes a sample after the 44-byte header.
        let seconds = (wav.len() - 44) as f64 / (16_000.0 * 4.0);
        let boundary = "callingest-test-boundary";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\n\
             verbose_json\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"call.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&wav);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let answer: Value = reqwest::Client::new()
            .post(format!("{base}/v1/audio/transcriptions"))
            .bearer_auth("stt-key")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let duration = answer["duration"].as_f64().unwrap();
        assert!(
            (duration - seconds).abs() < 0.01,
            "{duration} s answered for {seconds} s: {answer}"
        );
        let segments = answer["segments"].as_array().unwrap();
        assert!(segments.len() >= 2, "{answer}");
        for segment in segments {
            assert!(segment["end"].as_f64().unwrap() <= duration, "{answer}");
        }
        let text = answer["text"].as_str().unwrap();
        assert!(
            word_error_rate(&format!("{AGENT} {CUSTOMER}"), text) < 0.5,
            "{text}"
        );
    }
}
