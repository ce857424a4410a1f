use super::*;
use crate::submission::{validate_batch, RawJson};
use cqrs_es::test::TestFramework;
use cqrs_es::DomainEvent;
use serde_json::json;
use uuid::Uuid;

type CallTest = TestFramework<Call>;

fn new_call(id: &str) -> NewCall {
    let body = json!({"data": [{
        "call": {
            "id": id,
            "recording_url": "https://recordings.invalid/a.mp3",
            "start_time": "2023-01-01T10:00:00Z",
            "end_time": "2023-01-01T10:30:00Z",
            "contact_number": "+1234567890"
        },
        "agent": {"id": "agent-1"},
        "customer": {"id": "customer-1"}
    }]});
    validate_batch(&body).unwrap().remove(0)
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn accept(partner: &str, tenant: &str, call: NewCall, batch: u128) -> AcceptCall {
    AcceptCall {
        partner_id: PartnerId::parse(partner).unwrap(),
        tenant_id: TenantId::parse(tenant).unwrap(),
        sub_tenant_id: TenantId::parse("sub").unwrap(),
        batch_id: Uuid::from_u128(batch),
        call,
        received_at: at("2024-05-01T12:00:00Z"),
    }
}

fn accepted(cmd: &AcceptCall) -> CallEvent {
    CallEvent::CallAccepted(CallAccepted {
        partner_id: cmd.partner_id.clone(),
        tenant_id: cmd.tenant_id.clone(),
        sub_tenant_id: cmd.sub_tenant_id.clone(),
        batch_id: cmd.batch_id,
        accepted_at: cmd.received_at,
        call: Box::new(cmd.call.clone()),
        sealed: None,
    })
}

#[test]
fn a_new_call_is_accepted_with_everything_submitted() {
    let cmd = accept("p1", "t1", new_call("c1"), 1);
    CallTest::with(())
        .given_no_previous_events()
        .when(CallCommand::AcceptCall(Box::new(cmd.clone())))
        .then_expect_events(vec![accepted(&cmd)]);
}

#[test]
fn the_same_call_again_is_a_duplicate_not_a_second_acceptance() {
    let first = accept("p1", "t1", new_call("c1"), 1);
    let again = accept("p1", "t1", new_call("c1"), 2);
    CallTest::with(())
        .given(vec![accepted(&first)])
        .when(CallCommand::AcceptCall(Box::new(again.clone())))
        .then_expect_events(vec![CallEvent::DuplicateSubmissionReceived(
            DuplicateSubmissionReceived {
                batch_id: again.batch_id,
                tenant_id: again.tenant_id,
                sub_tenant_id: again.sub_tenant_id,
                received_at: again.received_at,
                payload_differs: false,
            },
        )]);
}

#[test]
fn a_duplicate_records_that_its_payload_differed() {
    let first = accept("p1", "t1", new_call("c1"), 1);
    let mut changed = new_call("c1");
    changed
        .agent
        .extra
        .insert("team".into(), RawJson::from_value(&json!("red")));
    for again in [
        accept("p1", "t1", changed, 2),
        accept("p1", "other-tenant", new_call("c1"), 2),
    ] {
        let events = CallTest::with(())
            .given(vec![accepted(&first)])
            .when(CallCommand::AcceptCall(Box::new(again)))
            .inspect_result()
            .unwrap();
        let [CallEvent::DuplicateSubmissionReceived(dup)] = events.as_slice() else {
            panic!("expected one duplicate, got {events:?}");
        };
        assert!(dup.payload_differs);
    }
}

#[test]
fn a_call_cannot_be_taken_over_by_another_partner() {
    let first = accept("p1", "t1", new_call("c1"), 1);
    CallTest::with(())
        .given(vec![accepted(&first)])
        .when(CallCommand::AcceptCall(Box::new(accept(
            "p2",
            "t1",
            new_call("c1"),
            2,
        ))))
        .then_expect_error(CallError::OtherPartnersCall {
            owner: "p1".into(),
            requester: "p2".into(),
        });
}

#[test]
fn aggregate_ids_split_at_the_first_colon() {
    let partner = PartnerId::parse("acme").unwrap();
    let call = CallId::parse("a:b:c").unwrap();
    let id = call_aggregate_id(&partner, &call);
    assert_eq!(id, "acme:a:b:c");
    assert_eq!(split_call_aggregate_id(&id), Some(("acme", "a:b:c")));
}

#[test]
fn event_types_are_the_variant_names() {
    let cmd = accept("p1", "t1", new_call("c1"), 1);
    assert_eq!(accepted(&cmd).event_type(), "CallAccepted");
    let json = serde_json::to_value(accepted(&cmd)).unwrap();
    assert!(json.get("CallAccepted").is_some());
}

// ---------------------------------------------------------------- processing

fn accepted_call() -> CallEvent {
    accepted(&accept("p1", "t1", new_call("c1"), 1))
}

fn started(attempt: u32) -> CallEvent {
    CallEvent::RecordingFetchStarted(RecordingFetchStarted {
        attempt,
        started_at: at("2024-05-01T12:00:01Z"),
    })
}

const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    backoff_base_ms: 1_000,
};

fn failure(retryable: bool, retry_after_ms: Option<u64>) -> CallCommand {
    CallCommand::RecordFetchFailure(FetchFailure {
        error: "recording URL answered 503 Service Unavailable".into(),
        retryable,
        retry_after_ms,
        policy: POLICY,
        at: at("2024-05-01T12:00:02Z"),
    })
}

fn analytics() -> AudioAnalytics {
    AudioAnalytics {
        duration_ms: 4_000,
        sample_rate: 8_000,
        channels: 2,
        codec: "pcm_s16le".into(),
        agent_talk_ms: 2_000,
        customer_talk_ms: Some(0),
        silence_ratio: 0.5,
        longest_silence_ms: 1_500,
        overlap_ms: 0,
        mean_dbfs: Some(-20.0),
        peak_dbfs: Some(-12.0),
        clipping_ratio: 0.0,
        detector_version: Some(2),
        interaction: Default::default(),
    }
}

fn fetched(format: Option<&str>) -> CallCommand {
    CallCommand::RecordFetchSuccess(FetchSuccess {
        bytes: 64_000,
        sha256: "ab".repeat(32),
        content_type: Some("audio/wav".into()),
        format: format.map(str::to_owned),
        at: at("2024-05-01T12:00:03Z"),
    })
}

fn fetched_event() -> CallEvent {
    CallEvent::RecordingFetched(RecordingFetched {
        attempt: 1,
        bytes: 64_000,
        sha256: "ab".repeat(32),
        content_type: Some("audio/wav".into()),
        format: Some("wav".into()),
        fetched_at: at("2024-05-01T12:00:03Z"),
    })
}

#[test]
fn a_fetch_starts_with_attempt_one_then_counts_up() {
    CallTest::with(())
        .given(vec![accepted_call()])
        .when(CallCommand::StartFetch {
            max_attempts: 3,
            at: at("2024-05-01T12:00:01Z"),
        })
        .then_expect_events(vec![started(1)]);
    let failed_once = CallEvent::RecordingFetchFailed(RecordingFetchFailed {
        attempt: 1,
        error: "x".into(),
        retryable: true,
        next_attempt_at: Some(at("2024-05-01T12:00:03Z")),
        failed_at: at("2024-05-01T12:00:02Z"),
    });
    CallTest::with(())
        .given(vec![accepted_call(), started(1), failed_once])
        .when(CallCommand::StartFetch {
            max_attempts: 3,
            at: at("2024-05-01T12:00:01Z"),
        })
        .then_expect_events(vec![started(2)]);
}

#[test]
fn nothing_can_be_processed_for_an_unknown_call() {
    CallTest::with(())
        .given_no_previous_events()
        .when(CallCommand::StartFetch {
            max_attempts: 3,
            at: at("2024-05-01T12:00:01Z"),
        })
        .then_expect_error(CallError::NotAccepted);
}

#[test]
fn a_transient_failure_schedules_the_next_attempt_with_backoff() {
    CallTest::with(())
        .given(vec![accepted_call(), started(1)])
        .when(failure(true, None))
        .then_expect_events(vec![CallEvent::RecordingFetchFailed(
            RecordingFetchFailed {
                attempt: 1,
                error: "recording URL answered 503 Service Unavailable".into(),
                retryable: true,
                next_attempt_at: Some(at("2024-05-01T12:00:03Z")),
                failed_at: at("2024-05-01T12:00:02Z"),
            },
        )]);
}

#[test]
fn a_longer_retry_after_is_honoured() {
    let events = CallTest::with(())
        .given(vec![accepted_call(), started(1)])
        .when(failure(true, Some(10_000)))
        .inspect_result()
        .unwrap();
    let CallEvent::RecordingFetchFailed(failed) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(failed.next_attempt_at, Some(at("2024-05-01T12:00:12Z")));
}

#[test]
fn backoff_doubles_per_attempt() {
    assert_eq!(POLICY.delay_ms(1, None, 0.0), 1_000);
    assert_eq!(POLICY.delay_ms(2, None, 0.0), 2_000);
    assert_eq!(POLICY.delay_ms(3, None, 0.0), 4_000);
    assert_eq!(POLICY.delay_ms(40, None, 0.0), 3_600_000);
}

#[test]
fn the_last_allowed_attempt_failing_fails_the_call() {
    let events = CallTest::with(())
        .given(vec![accepted_call(), started(3)])
        .when(failure(true, None))
        .inspect_result()
        .unwrap();
    let types: Vec<String> = events
        .iter()
        .map(cqrs_es::DomainEvent::event_type)
        .collect();
    assert_eq!(types, vec!["RecordingFetchFailed", "ProcessingFailed"]);
    let CallEvent::ProcessingFailed(failed) = &events[1] else {
        panic!()
    };
    assert_eq!(
        failed.reason,
        "recording URL answered 503 Service Unavailable"
    );
    assert_eq!(failed.processing_time_ms, 2_000);
}

#[test]
fn a_permanent_failure_fails_the_call_at_once() {
    let events = CallTest::with(())
        .given(vec![accepted_call(), started(1)])
        .when(failure(false, None))
        .inspect_result()
        .unwrap();
    assert!(
        matches!(&events[0], CallEvent::RecordingFetchFailed(f) if f.next_attempt_at.is_none())
    );
    assert!(matches!(&events[1], CallEvent::ProcessingFailed(_)));
}

#[test]
fn a_fetch_result_needs_a_fetch_in_progress() {
    CallTest::with(())
        .given(vec![accepted_call()])
        .when(fetched(Some("wav")))
        .then_expect_error(CallError::NoFetchInProgress);
    CallTest::with(())
        .given(vec![accepted_call()])
        .when(failure(true, None))
        .then_expect_error(CallError::NoFetchInProgress);
}

#[test]
fn a_fetched_recording_is_recorded_with_its_format() {
    CallTest::with(())
        .given(vec![accepted_call(), started(1)])
        .when(fetched(Some("wav")))
        .then_expect_events(vec![fetched_event()]);
}

#[test]
fn bytes_of_no_known_format_fail_the_call() {
    let events = CallTest::with(())
        .given(vec![accepted_call(), started(1)])
        .when(fetched(None))
        .inspect_result()
        .unwrap();
    let CallEvent::ProcessingFailed(failed) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(failed.reason, UNSUPPORTED_FORMAT);
}

#[test]
fn an_analysis_completes_the_call_with_a_summary() {
    let when = at("2024-05-01T12:00:04Z");
    CallTest::with(())
        .given(vec![accepted_call(), started(1), fetched_event()])
        .when(CallCommand::RecordAnalysis {
            analytics: analytics(),
            transcribe: false,
            at: when,
        })
        .then_expect_events(vec![
            CallEvent::RecordingAnalyzed(RecordingAnalyzed {
                analytics: analytics(),
                analyzed_at: when,
                transcription_due: false,
            }),
            CallEvent::ProcessingCompleted(ProcessingCompleted {
                completed_at: when,
                callback_due: false,
                processing_time_ms: 4_000,
                results: ResultsSummary {
                    transcription_available: false,
                    analytics_available: true,
                    duration_ms: 4_000,
                    agent_talk_ms: 2_000,
                    customer_talk_ms: Some(0),
                    silence_ratio: 0.5,
                },
            }),
        ]);
}

#[test]
fn an_analysis_needs_a_fetched_recording() {
    CallTest::with(())
        .given(vec![accepted_call(), started(1)])
        .when(CallCommand::RecordAnalysis {
            analytics: analytics(),
            transcribe: false,
            at: at("2024-05-01T12:00:04Z"),
        })
        .then_expect_error(CallError::NotFetched);
}

#[test]
fn an_analysis_with_a_figure_that_is_not_a_finite_number_is_refused() {
    type Spoil = fn(&mut AudioAnalytics);
    let cases: [(&str, Spoil); 8] = [
        ("talk_ratio", |a| a.interaction.talk_ratio = Some(f64::NAN)),
        ("interactivity", |a| {
            a.interaction.interactivity = Some(f64::INFINITY)
        }),
        ("mean_dbfs", |a| a.mean_dbfs = Some(f64::INFINITY)),
        ("mean_dbfs", |a| a.mean_dbfs = Some(f64::NAN)),
        ("peak_dbfs", |a| a.peak_dbfs = Some(f64::NEG_INFINITY)),
        ("silence_ratio", |a| a.silence_ratio = f64::NAN),
        ("clipping_ratio", |a| a.clipping_ratio = f64::INFINITY),
        ("silence_ratio", |a| {
            a.silence_ratio = f64::INFINITY;
            a.peak_dbfs = Some(f64::NAN);
        }),
    ];
    for (figure, spoil) in cases {
        let mut analytics = analytics();
        spoil(&mut analytics);
        CallTest::with(())
            .given(vec![accepted_call(), started(1), fetched_event()])
            .when(CallCommand::RecordAnalysis {
                analytics,
                transcribe: false,
                at: at("2024-05-01T12:00:04Z"),
            })
            .then_expect_error(CallError::NonFiniteAnalytics {
                figure: figure.into(),
            });
    }
}

#[test]
fn unknown_levels_are_not_refused() {
    let mut analytics = analytics();
    analytics.mean_dbfs = None;
    analytics.peak_dbfs = None;
    let events = CallTest::with(())
        .given(vec![accepted_call(), started(1), fetched_event()])
        .when(CallCommand::RecordAnalysis {
            analytics,
            transcribe: false,
            at: at("2024-05-01T12:00:04Z"),
        })
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 2);
}

/// What the code before finite analytics wrote for a +inf recording: serde_json turned the
/// infinite levels into `null`. Such an event must load, and the call with it.
fn stored_analysis_with_null_levels() -> serde_json::Value {
    let mut value = serde_json::to_value(CallEvent::RecordingAnalyzed(RecordingAnalyzed {
        analytics: analytics(),
        analyzed_at: at("2024-05-01T12:00:04Z"),
        transcription_due: false,
    }))
    .unwrap();
    value["RecordingAnalyzed"]["mean_dbfs"] = serde_json::Value::Null;
    value["RecordingAnalyzed"]["peak_dbfs"] = serde_json::Value::Null;
    assert_eq!(
        value["RecordingAnalyzed"]["mean_dbfs"],
        serde_json::to_value(f64::INFINITY).unwrap(),
        "serde_json writes infinity as null"
    );
    value
}

#[test]
fn an_analysis_event_stored_with_null_levels_loads_with_unknown_levels() {
    let event: CallEvent = serde_json::from_value(stored_analysis_with_null_levels()).unwrap();
    let CallEvent::RecordingAnalyzed(analyzed) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(
        (analyzed.analytics.mean_dbfs, analyzed.analytics.peak_dbfs),
        (None, None)
    );
    // Absent altogether (never written, but harmless) reads the same.
    let mut value = stored_analysis_with_null_levels();
    let fields = value["RecordingAnalyzed"].as_object_mut().unwrap();
    fields.remove("mean_dbfs");
    fields.remove("peak_dbfs");
    assert_eq!(serde_json::from_value::<CallEvent>(value).unwrap(), event);
}

#[test]
fn a_call_holding_null_levels_loads_and_reports_them_as_null_in_its_callback() {
    let mut history = completed_with_callback();
    history[3] = serde_json::from_value(stored_analysis_with_null_levels()).unwrap();
    let call = replay(history.clone());
    assert_eq!(call.stage(), Stage::Completed);
    let payload = call.callback_payload().unwrap();
    assert_eq!(payload["results"]["mean_dbfs"], serde_json::Value::Null);
    assert_eq!(payload["results"]["peak_dbfs"], serde_json::Value::Null);
    assert_eq!(payload["results"]["silence_ratio"], 0.5);
    // A resubmission of the call is a duplicate, not an error.
    let events = CallTest::with(())
        .given(history)
        .when(CallCommand::AcceptCall(Box::new(accept(
            "p1",
            "t1",
            {
                let mut call = new_call("c1");
                call.callback_url =
                    Some(crate::values::HttpsUrl::parse("https://partner.invalid/hook").unwrap());
                call
            },
            2,
        ))))
        .inspect_result()
        .unwrap();
    assert!(
        matches!(&events[..], [CallEvent::DuplicateSubmissionReceived(_)]),
        "{events:?}"
    );
}

#[test]
fn a_finished_call_is_never_processed_again() {
    let completed = CallEvent::ProcessingCompleted(ProcessingCompleted {
        completed_at: at("2024-05-01T12:00:04Z"),
        callback_due: false,
        processing_time_ms: 4_000,
        results: ResultsSummary {
            transcription_available: false,
            analytics_available: true,
            duration_ms: 1,
            agent_talk_ms: 1,
            customer_talk_ms: None,
            silence_ratio: 0.0,
        },
    });
    let history = vec![accepted_call(), started(1), fetched_event(), completed];
    for command in [
        CallCommand::StartFetch {
            max_attempts: 3,
            at: at("2024-05-01T12:00:05Z"),
        },
        CallCommand::RecordAnalysis {
            analytics: analytics(),
            transcribe: false,
            at: at("2024-05-01T12:00:05Z"),
        },
        CallCommand::FailProcessing {
            reason: "x".into(),
            at: at("2024-05-01T12:00:05Z"),
        },
    ] {
        CallTest::with(())
            .given(history.clone())
            .when(command)
            .then_expect_error(CallError::AlreadyFinished);
    }
}

#[test]
fn processing_can_be_failed_with_a_reason() {
    let events = CallTest::with(())
        .given(vec![accepted_call(), started(1), fetched_event()])
        .when(CallCommand::FailProcessing {
            reason: "recording could not be decoded".into(),
            at: at("2024-05-01T12:00:04Z"),
        })
        .inspect_result()
        .unwrap();
    assert!(
        matches!(&events[0], CallEvent::ProcessingFailed(f) if f.reason == "recording could not be decoded")
    );
}

// ---------------------------------------------------------------- transcription

fn analyzed_for_transcript() -> Vec<CallEvent> {
    vec![
        call_with_callback(),
        started(1),
        fetched_event(),
        CallEvent::RecordingAnalyzed(RecordingAnalyzed {
            analytics: analytics(),
            analyzed_at: at("2024-05-01T12:00:04Z"),
            transcription_due: true,
        }),
    ]
}

fn transcription_started(attempt: u32) -> CallEvent {
    CallEvent::TranscriptionStarted(TranscriptionStarted {
        attempt,
        engine: "whisper".into(),
        started_at: at("2024-05-01T12:00:05Z"),
    })
}

fn segments() -> Vec<TranscriptSegment> {
    vec![
        TranscriptSegment {
            channel: Speaker::Agent,
            start_ms: 0,
            end_ms: 1_500,
            text: "Hello, how can I help?".into(),
        },
        TranscriptSegment {
            channel: Speaker::Customer,
            start_ms: 1_600,
            end_ms: 3_000,
            text: "My order is late.".into(),
        },
    ]
}

const TRANSCRIBE_POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    backoff_base_ms: 1_000,
};

fn transcription_failure(retryable: bool, at_text: &str) -> CallCommand {
    CallCommand::RecordTranscriptionFailure(TranscriptionFailure {
        error: "engine unreachable".into(),
        retryable,
        policy: TRANSCRIBE_POLICY,
        at: at(at_text),
    })
}

#[test]
fn an_analysis_that_needs_a_transcript_does_not_complete_the_call() {
    let when = at("2024-05-01T12:00:04Z");
    let events = CallTest::with(())
        .given(vec![accepted_call(), started(1), fetched_event()])
        .when(CallCommand::RecordAnalysis {
            analytics: analytics(),
            transcribe: true,
            at: when,
        })
        .inspect_result()
        .unwrap();
    assert_eq!(
        events,
        vec![CallEvent::RecordingAnalyzed(RecordingAnalyzed {
            analytics: analytics(),
            analyzed_at: when,
            transcription_due: true,
        })]
    );
    let call = replay(analyzed_for_transcript());
    assert_eq!(call.stage(), Stage::Analyzed);
    assert!(!call.is_finished());
    assert!(
        !call.callback_pending(),
        "no callback before the transcript"
    );
}

#[test]
fn a_transcript_completes_the_call_with_counts_and_segments() {
    let mut history = analyzed_for_transcript();
    history.push(transcription_started(1));
    let done = at("2024-05-01T12:00:09Z");
    let events = CallTest::with(())
        .given(history.clone())
        .when(CallCommand::RecordTranscript(TranscriptDone {
            engine: "whisper".into(),
            model: "ggml-tiny.en".into(),
            language: "en".into(),
            segments: segments(),
            at: done,
        }))
        .inspect_result()
        .unwrap();
    let CallEvent::TranscriptProduced(produced) = &events[0] else {
        panic!("expected TranscriptProduced, got {events:?}");
    };
    assert_eq!(produced.attempt, 1);
    assert_eq!(produced.segment_count, 2);
    assert_eq!(produced.word_count, 9);
    assert_eq!(produced.segments.clear(), Some(&segments()));
    // Pace against the analysed talk times (agent 2 s, customer 0: no pace), questions per side.
    assert_eq!(produced.figures.agent_words, Some(5));
    assert_eq!(produced.figures.customer_words, Some(4));
    assert_eq!(produced.figures.agent_words_per_minute, Some(150.0));
    assert_eq!(produced.figures.customer_words_per_minute, None);
    assert_eq!(produced.figures.agent_questions, Some(1));
    assert_eq!(produced.figures.customer_questions, Some(0));
    assert_eq!(produced.figures.agent_word_share, Some(5.0 / 9.0));
    let mut finished = history.clone();
    finished.extend(events.clone());
    let results = &replay(finished).callback_payload().unwrap()["results"];
    assert_eq!(results["agent_words_per_minute"], 150.0);
    assert_eq!(results["agent_questions"], 1);
    assert!(results["customer_words_per_minute"].is_null());
    let CallEvent::ProcessingCompleted(completed) = &events[1] else {
        panic!("expected ProcessingCompleted, got {events:?}");
    };
    assert!(completed.results.transcription_available);
    assert!(completed.results.analytics_available);
    assert_eq!(completed.results.duration_ms, 4_000);
    assert_eq!(completed.processing_time_ms, 9_000);
    assert!(completed.callback_due);

    history.extend(events);
    let call = replay(history);
    assert_eq!(call.stage(), Stage::Completed);
    let payload = call.callback_payload().unwrap();
    assert_eq!(payload["results"]["transcription_available"], json!(true));
    assert_eq!(payload["results"]["duration_ms"], json!(4_000));
}

#[test]
fn a_transcript_needs_a_transcription_in_progress() {
    CallTest::with(())
        .given(analyzed_for_transcript())
        .when(CallCommand::RecordTranscript(TranscriptDone {
            engine: "whisper".into(),
            model: "m".into(),
            language: "en".into(),
            segments: vec![],
            at: at("2024-05-01T12:00:09Z"),
        }))
        .then_expect_error(CallError::NoTranscriptionInProgress);
    CallTest::with(())
        .given(vec![accepted_call(), started(1), fetched_event()])
        .when(CallCommand::StartTranscription {
            engine: "whisper".into(),
            max_attempts: 3,
            at: at("2024-05-01T12:00:09Z"),
        })
        .then_expect_error(CallError::NotAwaitingTranscript);
}

#[test]
fn an_abandoned_transcription_attempt_is_followed_by_a_new_one() {
    let mut history = analyzed_for_transcript();
    history.push(transcription_started(1));
    CallTest::with(())
        .given(history)
        .when(CallCommand::StartTranscription {
            engine: "whisper".into(),
            max_attempts: 3,
            at: at("2024-05-01T12:01:00Z"),
        })
        .then_expect_events(vec![CallEvent::TranscriptionStarted(
            TranscriptionStarted {
                attempt: 2,
                engine: "whisper".into(),
                started_at: at("2024-05-01T12:01:00Z"),
            },
        )]);
}

#[test]
fn a_fetched_but_unanalysed_call_is_fetched_again_after_a_crash() {
    CallTest::with(())
        .given(vec![accepted_call(), started(1), fetched_event()])
        .when(CallCommand::StartFetch {
            max_attempts: 3,
            at: at("2024-05-01T12:00:01Z"),
        })
        .then_expect_events(vec![started(2)]);
}

#[test]
fn attempts_that_never_reported_count_towards_the_limit() {
    // Three attempts started and none came back (each time the process died).
    let mut history = analyzed_for_transcript();
    history.extend([
        transcription_started(1),
        transcription_started(2),
        transcription_started(3),
    ]);
    let events = CallTest::with(())
        .given(history)
        .when(CallCommand::StartTranscription {
            engine: "whisper".into(),
            max_attempts: 3,
            at: at("2024-05-01T15:00:00Z"),
        })
        .inspect_result()
        .unwrap();
    assert!(
        matches!(&events[0], CallEvent::TranscriptionFailed(f) if f.attempt == 3 && !f.retryable && f.next_attempt_at.is_none()),
        "{events:?}"
    );
    assert!(
        matches!(&events[1], CallEvent::ProcessingCompleted(c) if !c.results.transcription_available && c.results.analytics_available),
        "{events:?}"
    );
}

#[test]
fn an_analysed_call_is_never_fetched_again() {
    for history in [
        analyzed_for_transcript(),
        [analyzed_for_transcript(), vec![transcription_started(1)]].concat(),
    ] {
        CallTest::with(())
            .given(history)
            .when(CallCommand::StartFetch {
                max_attempts: 3,
                at: at("2024-05-01T12:30:00Z"),
            })
            .then_expect_error(CallError::AlreadyFetched);
    }
}

#[test]
fn a_transient_transcription_failure_is_retried_with_backoff_then_completes_without_transcript() {
    let mut history = analyzed_for_transcript();
    history.push(transcription_started(1));
    let events = CallTest::with(())
        .given(history.clone())
        .when(transcription_failure(true, "2024-05-01T12:00:06Z"))
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 1);
    let CallEvent::TranscriptionFailed(failed) = &events[0] else {
        panic!("expected TranscriptionFailed");
    };
    assert_eq!(failed.attempt, 1);
    assert_eq!(failed.next_attempt_at, Some(at("2024-05-01T12:00:07Z")));
    history.extend(events);
    assert_eq!(replay(history.clone()).stage(), Stage::Analyzed);

    history.extend([
        transcription_started(2),
        CallEvent::TranscriptionFailed(TranscriptionFailed {
            attempt: 2,
            error: "engine unreachable".into(),
            retryable: true,
            next_attempt_at: Some(at("2024-05-01T12:00:09Z")),
            failed_at: at("2024-05-01T12:00:07Z"),
        }),
        transcription_started(3),
    ]);
    let events = CallTest::with(())
        .given(history)
        .when(transcription_failure(true, "2024-05-01T12:00:10Z"))
        .inspect_result()
        .unwrap();
    assert!(
        matches!(&events[0], CallEvent::TranscriptionFailed(f) if f.attempt == 3 && f.next_attempt_at.is_none())
    );
    let CallEvent::ProcessingCompleted(completed) = &events[1] else {
        panic!("the last failure completes the call: {events:?}");
    };
    assert!(!completed.results.transcription_available);
    assert!(completed.results.analytics_available);
}

#[test]
fn a_permanent_transcription_failure_completes_at_once_without_transcript() {
    let mut history = analyzed_for_transcript();
    history.push(transcription_started(1));
    let events = CallTest::with(())
        .given(history)
        .when(transcription_failure(false, "2024-05-01T12:00:06Z"))
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 2);
    assert!(
        matches!(&events[1], CallEvent::ProcessingCompleted(c) if !c.results.transcription_available)
    );
}

#[test]
fn old_analysis_events_without_the_transcription_flag_still_load() {
    let mut value = serde_json::to_value(&analyzed_for_transcript()[3]).unwrap();
    value["RecordingAnalyzed"]
        .as_object_mut()
        .unwrap()
        .remove("transcription_due");
    let event: CallEvent = serde_json::from_value(value).unwrap();
    assert!(matches!(event, CallEvent::RecordingAnalyzed(a) if !a.transcription_due));
}

// ---------------------------------------------------------------- callbacks

fn call_with_callback() -> CallEvent {
    let mut call = new_call("c1");
    call.callback_url =
        Some(crate::values::HttpsUrl::parse("https://partner.invalid/hook").unwrap());
    call.metadata.insert("campaign".into(), json!("Q1"));
    call.metadata.insert("score".into(), json!(7));
    accepted(&accept("p1", "t1", call, 1))
}

fn completed_with_callback() -> Vec<CallEvent> {
    vec![
        call_with_callback(),
        started(1),
        fetched_event(),
        CallEvent::RecordingAnalyzed(RecordingAnalyzed {
            analytics: analytics(),
            analyzed_at: at("2024-05-01T12:00:04Z"),
            transcription_due: false,
        }),
        CallEvent::ProcessingCompleted(ProcessingCompleted {
            completed_at: at("2024-05-01T12:00:04Z"),
            callback_due: true,
            processing_time_ms: 4_000,
            results: ResultsSummary {
                transcription_available: false,
                analytics_available: true,
                duration_ms: 4_000,
                agent_talk_ms: 2_000,
                customer_talk_ms: Some(0),
                silence_ratio: 0.5,
            },
        }),
    ]
}

const CALLBACK_POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    backoff_base_ms: 30_000,
};

fn callback_failure(status: u16, retry_after_ms: Option<u64>) -> CallCommand {
    CallCommand::RecordCallbackFailure(CallbackFailure {
        status_code: Some(status),
        error: format!("status {status}"),
        response_time_ms: 12,
        retry_after_ms,
        policy: CALLBACK_POLICY,
        jitter_ratio: 0.0,
        at: at("2024-05-01T12:01:00Z"),
    })
}

fn replay(events: Vec<CallEvent>) -> Call {
    let mut call = Call::default();
    for event in events {
        call.apply(event);
    }
    call
}

#[test]
fn a_call_with_a_callback_url_is_due_a_callback_when_processing_ends() {
    let events = CallTest::with(())
        .given(vec![call_with_callback(), started(1)])
        .when(failure(false, None))
        .inspect_result()
        .unwrap();
    assert!(matches!(&events[1], CallEvent::ProcessingFailed(f) if f.callback_due));
    assert!(replay(completed_with_callback()).callback_pending());
}

#[test]
fn the_callback_payload_echoes_the_metadata_and_carries_the_analytics() {
    let payload = replay(completed_with_callback())
        .callback_payload()
        .unwrap();
    assert_eq!(payload["call_id"], "c1");
    assert_eq!(payload["status"], "completed");
    assert_eq!(payload["processing_time"], 4.0);
    assert!(payload["error"].is_null());
    assert_eq!(payload["metadata"], json!({"campaign": "Q1", "score": 7}));
    assert_eq!(payload["results"]["analytics_available"], true);
    assert_eq!(payload["results"]["transcription_available"], false);
    assert_eq!(payload["results"]["agent_talk_ms"], 2_000);
    assert_eq!(payload["results"]["customer_talk_ms"], 0);
}

#[test]
fn a_failed_call_reports_its_reason_and_no_results() {
    let mut history = vec![call_with_callback(), started(1)];
    history.push(CallEvent::ProcessingFailed(ProcessingFailed {
        failed_at: at("2024-05-01T12:00:02Z"),
        callback_due: true,
        processing_time_ms: 2_000,
        reason: "recording URL answered 404 Not Found".into(),
    }));
    let payload = replay(history).callback_payload().unwrap();
    assert_eq!(payload["status"], "failed");
    assert_eq!(payload["error"], "recording URL answered 404 Not Found");
    assert!(payload["results"].is_null());
}

#[test]
fn a_delivered_callback_counts_its_attempt() {
    CallTest::with(())
        .given(completed_with_callback())
        .when(CallCommand::RecordCallbackSuccess(CallbackSuccess {
            status_code: 204,
            response_time_ms: 15,
            at: at("2024-05-01T12:01:00Z"),
        }))
        .then_expect_events(vec![CallEvent::CallbackDelivered(CallbackDelivered {
            attempt: 1,
            status_code: 204,
            response_time_ms: 15,
            delivered_at: at("2024-05-01T12:01:00Z"),
        })]);
}

#[test]
fn failed_callbacks_back_off_exponentially_then_are_abandoned_after_four_attempts() {
    let mut history = completed_with_callback();
    let mut waits = Vec::new();
    for attempt in 1..=4 {
        let events = CallTest::with(())
            .given(history.clone())
            .when(callback_failure(500, None))
            .inspect_result()
            .unwrap();
        let CallEvent::CallbackAttemptFailed(failed) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(failed.attempt, attempt);
        if attempt < 4 {
            assert_eq!(events.len(), 1);
            waits.push((failed.next_attempt_at.unwrap() - failed.failed_at).num_milliseconds());
        } else {
            assert!(failed.next_attempt_at.is_none());
            assert!(matches!(&events[1], CallEvent::CallbackAbandoned(a) if a.attempts == 4));
        }
        history.extend(events);
    }
    assert_eq!(waits, vec![30_000, 60_000, 120_000]);
    // Nothing is pending any more: a fifth attempt is refused.
    CallTest::with(())
        .given(history)
        .when(callback_failure(500, None))
        .then_expect_error(CallError::CallbackNotPending);
}

#[test]
fn jitter_spreads_the_wait_by_at_most_ten_percent() {
    assert_eq!(CALLBACK_POLICY.delay_ms(1, None, 0.1), 33_000);
    assert_eq!(CALLBACK_POLICY.delay_ms(1, None, -0.1), 27_000);
    assert_eq!(CALLBACK_POLICY.delay_ms(1, None, 0.5), 33_000);
}

#[test]
fn a_longer_retry_after_wins_up_to_an_hour() {
    assert_eq!(CALLBACK_POLICY.delay_ms(1, Some(45_000), 0.0), 45_000);
    assert_eq!(CALLBACK_POLICY.delay_ms(1, Some(10_000), 0.0), 30_000);
    assert_eq!(CALLBACK_POLICY.delay_ms(1, Some(7_200_000), 0.0), 3_600_000);
}

#[test]
fn no_callback_is_recorded_for_a_call_without_callback_url() {
    let mut history = vec![accepted_call(), started(1)];
    history.push(CallEvent::ProcessingFailed(ProcessingFailed {
        failed_at: at("2024-05-01T12:00:02Z"),
        callback_due: false,
        processing_time_ms: 2_000,
        reason: "x".into(),
    }));
    CallTest::with(())
        .given(history.clone())
        .when(callback_failure(500, None))
        .then_expect_error(CallError::CallbackNotPending);
    CallTest::with(())
        .given(history)
        .when(CallCommand::RequestCallbackRedelivery {
            requested_by: "support".into(),
            at: at("2024-05-01T13:00:00Z"),
        })
        .then_expect_error(CallError::NoCallbackUrl);
}

#[test]
fn a_redelivery_starts_a_fresh_series_once_the_last_one_ended() {
    let mut history = completed_with_callback();
    let redeliver = || CallCommand::RequestCallbackRedelivery {
        requested_by: "support".into(),
        at: at("2024-05-01T13:00:00Z"),
    };
    CallTest::with(())
        .given(history.clone())
        .when(redeliver())
        .then_expect_error(CallError::CallbackAlreadyPending);
    history.push(CallEvent::CallbackDelivered(CallbackDelivered {
        attempt: 1,
        status_code: 200,
        response_time_ms: 5,
        delivered_at: at("2024-05-01T12:01:00Z"),
    }));
    CallTest::with(())
        .given(history.clone())
        .when(redeliver())
        .then_expect_events(vec![CallEvent::CallbackRedeliveryRequested(
            CallbackRedeliveryRequested {
                requested_by: "support".into(),
                requested_at: at("2024-05-01T13:00:00Z"),
            },
        )]);
    history.push(CallEvent::CallbackRedeliveryRequested(
        CallbackRedeliveryRequested {
            requested_by: "support".into(),
            requested_at: at("2024-05-01T13:00:00Z"),
        },
    ));
    let call = replay(history.clone());
    assert!(call.callback_pending());
    let events = CallTest::with(())
        .given(history)
        .when(callback_failure(503, None))
        .inspect_result()
        .unwrap();
    assert!(matches!(&events[0], CallEvent::CallbackAttemptFailed(f) if f.attempt == 1));
}

#[test]
fn a_redelivery_needs_a_finished_call() {
    CallTest::with(())
        .given(vec![call_with_callback()])
        .when(CallCommand::RequestCallbackRedelivery {
            requested_by: "support".into(),
            at: at("2024-05-01T13:00:00Z"),
        })
        .then_expect_error(CallError::NotFinished);
}

// ------------------------------------------------ interrupted attempts and the attempt limit

fn fetch_interrupted(attempt: u32) -> CallEvent {
    CallEvent::RecordingFetchInterrupted(RecordingFetchInterrupted {
        attempt,
        reason: "the worker shut down".into(),
        interrupted_at: at("2024-05-01T12:00:02Z"),
    })
}

fn start_fetch(max_attempts: u32) -> CallCommand {
    CallCommand::StartFetch {
        max_attempts,
        at: at("2024-05-01T12:10:00Z"),
    }
}

#[test]
fn fetch_attempts_that_never_reported_fail_the_call_once_used_up() {
    // Three attempts started and none came back (each time the worker was killed).
    let events = CallTest::with(())
        .given(vec![accepted_call(), started(1), started(2), started(3)])
        .when(start_fetch(3))
        .inspect_result()
        .unwrap();
    assert_eq!(
        events,
        vec![
            CallEvent::RecordingFetchFailed(RecordingFetchFailed {
                attempt: 3,
                error: "recording fetch and analysis did not finish in 3 attempts".into(),
                retryable: false,
                next_attempt_at: None,
                failed_at: at("2024-05-01T12:10:00Z"),
            }),
            CallEvent::ProcessingFailed(ProcessingFailed {
                failed_at: at("2024-05-01T12:10:00Z"),
                callback_due: false,
                processing_time_ms: (at("2024-05-01T12:10:00Z") - at("2024-05-01T12:00:00Z"))
                    .num_milliseconds() as u64,
                reason: "recording fetch and analysis did not finish in 3 attempts".into(),
            }),
        ]
    );
}

#[test]
fn a_crash_after_the_download_counts_towards_the_limit_too() {
    CallTest::with(())
        .given(vec![accepted_call(), started(1), fetched_event()])
        .when(CallCommand::StartFetch {
            max_attempts: 2,
            at: at("2024-05-01T12:00:01Z"),
        })
        .then_expect_events(vec![started(2)]);
    let events = CallTest::with(())
        .given(vec![
            accepted_call(),
            started(1),
            fetched_event(),
            started(2),
            fetched_event(),
        ])
        .when(start_fetch(2))
        .inspect_result()
        .unwrap();
    assert!(
        matches!(events.last(), Some(CallEvent::ProcessingFailed(f)) if f.reason.contains("2 attempts")),
        "{events:?}"
    );
}

#[test]
fn an_interrupted_fetch_gives_its_attempt_back() {
    CallTest::with(())
        .given(vec![accepted_call(), started(1)])
        .when(CallCommand::InterruptFetch {
            reason: "the worker shut down".into(),
            at: at("2024-05-01T12:00:02Z"),
        })
        .then_expect_events(vec![fetch_interrupted(1)]);
    // Interrupted during the analysis (after the download) alike.
    CallTest::with(())
        .given(vec![accepted_call(), started(1), fetched_event()])
        .when(CallCommand::InterruptFetch {
            reason: "the worker shut down".into(),
            at: at("2024-05-01T12:00:02Z"),
        })
        .then_expect_events(vec![fetch_interrupted(1)]);
    // The next attempt takes the same number...
    CallTest::with(())
        .given(vec![accepted_call(), started(1), fetch_interrupted(1)])
        .when(start_fetch(3))
        .then_expect_events(vec![CallEvent::RecordingFetchStarted(
            RecordingFetchStarted {
                attempt: 1,
                started_at: at("2024-05-01T12:10:00Z"),
            },
        )]);
    // ...and however many drains interrupt it, the call is never failed for them.
    let mut history = vec![accepted_call()];
    for _ in 0..10 {
        history.extend([started(1), fetch_interrupted(1)]);
    }
    CallTest::with(())
        .given(history)
        .when(start_fetch(1))
        .then_expect_events(vec![CallEvent::RecordingFetchStarted(
            RecordingFetchStarted {
                attempt: 1,
                started_at: at("2024-05-01T12:10:00Z"),
            },
        )]);
}

#[test]
fn only_crashed_attempts_count_when_interrupted_ones_are_mixed_in() {
    // Attempt 1 crashed (never reported), attempt 2 was interrupted by a drain and given back:
    // one attempt is used, so with a limit of 2 another one starts, numbered 2.
    CallTest::with(())
        .given(vec![
            accepted_call(),
            started(1),
            started(2),
            fetch_interrupted(2),
        ])
        .when(CallCommand::StartFetch {
            max_attempts: 2,
            at: at("2024-05-01T12:00:01Z"),
        })
        .then_expect_events(vec![started(2)]);
}

#[test]
fn nothing_to_interrupt_is_refused() {
    CallTest::with(())
        .given(vec![accepted_call()])
        .when(CallCommand::InterruptFetch {
            reason: "x".into(),
            at: at("2024-05-01T12:00:02Z"),
        })
        .then_expect_error(CallError::NoFetchInProgress);
    CallTest::with(())
        .given(vec![accepted_call(), started(1), fetch_interrupted(1)])
        .when(CallCommand::InterruptFetch {
            reason: "x".into(),
            at: at("2024-05-01T12:00:02Z"),
        })
        .then_expect_error(CallError::NoFetchInProgress);
    CallTest::with(())
        .given(analyzed_for_transcript())
        .when(CallCommand::InterruptTranscription {
            reason: "x".into(),
            at: at("2024-05-01T12:00:02Z"),
        })
        .then_expect_error(CallError::NoTranscriptionInProgress);
    CallTest::with(())
        .given(vec![
            accepted_call(),
            started(1),
            CallEvent::ProcessingFailed(ProcessingFailed {
                failed_at: at("2024-05-01T12:00:02Z"),
                callback_due: false,
                processing_time_ms: 2_000,
                reason: "x".into(),
            }),
        ])
        .when(CallCommand::InterruptFetch {
            reason: "x".into(),
            at: at("2024-05-01T12:00:03Z"),
        })
        .then_expect_error(CallError::AlreadyFinished);
}

#[test]
fn an_interrupted_transcription_gives_its_attempt_back() {
    let mut history = analyzed_for_transcript();
    history.push(transcription_started(1));
    CallTest::with(())
        .given(history.clone())
        .when(CallCommand::InterruptTranscription {
            reason: "the worker shut down".into(),
            at: at("2024-05-01T12:00:06Z"),
        })
        .then_expect_events(vec![CallEvent::TranscriptionInterrupted(
            TranscriptionInterrupted {
                attempt: 1,
                reason: "the worker shut down".into(),
                interrupted_at: at("2024-05-01T12:00:06Z"),
            },
        )]);
    history.push(CallEvent::TranscriptionInterrupted(
        TranscriptionInterrupted {
            attempt: 1,
            reason: "the worker shut down".into(),
            interrupted_at: at("2024-05-01T12:00:06Z"),
        },
    ));
    CallTest::with(())
        .given(history)
        .when(CallCommand::StartTranscription {
            engine: "whisper".into(),
            max_attempts: 1,
            at: at("2024-05-01T12:01:00Z"),
        })
        .then_expect_events(vec![CallEvent::TranscriptionStarted(
            TranscriptionStarted {
                attempt: 1,
                engine: "whisper".into(),
                started_at: at("2024-05-01T12:01:00Z"),
            },
        )]);
}

#[test]
fn a_version_1_analysis_reads_as_version_2_with_unknown_interaction_figures() {
    let v1 = serde_json::json!({"RecordingAnalyzed": {
        "duration_ms": 4000, "sample_rate": 8000, "channels": 2, "codec": "pcm_s16le",
        "agent_talk_ms": 2000, "customer_talk_ms": 0, "silence_ratio": 0.5,
        "longest_silence_ms": 1500, "overlap_ms": 0, "mean_dbfs": -20.0, "peak_dbfs": -12.0,
        "clipping_ratio": 0.0, "analyzed_at": "2024-05-01T12:00:03Z", "transcription_due": false
    }});
    let event: CallEvent = serde_json::from_value(v1).unwrap();
    let CallEvent::RecordingAnalyzed(analyzed) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(analyzed.analytics.detector_version, None);
    assert_eq!(analyzed.analytics.interaction, Default::default());
    assert_eq!(event.event_version(), "2");
    // Written again, the figures are there, as null.
    let written = serde_json::to_value(&event).unwrap();
    assert!(written["RecordingAnalyzed"]["talk_ratio"].is_null());
    assert_eq!(written["RecordingAnalyzed"]["agent_talk_ms"], 2000);
}
