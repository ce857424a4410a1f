//! Properties of the batch validator over arbitrary input: it never panics, answers quickly,
//! bounds its error list, and whatever it accepts it accepts again, unchanged, when the calls
//! are sent back as they came out.

use std::time::{Duration, Instant};

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

/// Generous even for an unoptimised build: inputs here are at most a few kilobytes.
const TIME_BOUND: Duration = Duration::from_secs(2);

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "data", "call", "agent", "customer", "id", "recording_url", "start_time",
            "end_time", "contact_number", "email", "name", "disposition_status",
            "callback_url", "metadata", "custom_fields", "internal_name", "value", "extra",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z\u{0}é]{0,6}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Decimals of at most 10 significant digits: serde_json (without its `float_roundtrip`
        // feature) reads longer ones to within the last bit only, which would make a call
        // differ from itself after a round trip for a reason that is not the validator's.
        (any::<i32>(), 0u32..7).prop_map(|(m, e)| Value::from(f64::from(m) / 10f64.powi(e as i32))),
        "\\PC{0,12}".prop_map(Value::from),
        "[a\u{0}]{1,3}".prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "call-1",
            "+1234567890",
            "2023-01-01T10:00:00Z",
            "2023-01-01T10:30:00Z",
            "https://example.com/a.mp3",
            "https://partner.example/cb",
            "a@example.com",
        ])
        .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(key(), inner, 0..8).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn valid_item(id: &str) -> Value {
    json!({
        "call": {
            "id": id,
            "recording_url": "https://example.com/recordings/a.mp3",
            "start_time": "2023-01-01T10:00:00Z",
            "end_time": "2023-01-01T10:30:00Z",
            "contact_number": "+1234567890"
        },
        "agent": {"id": "agent-1", "email": "agent@example.com"},
        "customer": {"id": "customer-1"},
        "metadata": {"campaign": "Q1", "n": 3},
        "custom_fields": [{"internal_name": "plan", "value": "gold"}]
    })
}

/// A valid item with some of its fields replaced by arbitrary values or removed.
fn mutated_item() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(vec![
        ("", "call"),
        ("", "agent"),
        ("", "customer"),
        ("", "callback_url"),
        ("", "metadata"),
        ("", "custom_fields"),
        ("", "industry"),
        ("call", "id"),
        ("call", "recording_url"),
        ("call", "start_time"),
        ("call", "end_time"),
        ("call", "contact_number"),
        ("call", "direction"),
        ("agent", "id"),
        ("agent", "email"),
        ("agent", "name"),
        ("customer", "id"),
        ("customer", "email"),
        ("customer", "team"),
    ]);
    let change = (field, prop::option::weighted(0.8, json_value()));
    vec(change, 0..4).prop_map(|changes| {
        let mut item = valid_item("call-1");
        for ((object, name), value) in changes {
            let target = if object.is_empty() {
                &mut item
            } else {
                &mut item[object]
            };
            if let Some(target) = target.as_object_mut() {
                match value {
                    Some(value) => {
                        target.insert(name.to_owned(), value);
                    }
                    None => {
                        target.remove(name);
                    }
                }
            }
        }
        item
    })
}

/// A call as a partner would send it again: every kept unknown field back in its place.
fn to_wire(call: &NewCall) -> Value {
    fn flatten(value: &mut Value) {
        let object = value.as_object_mut().expect("an object");
        if let Some(Value::Object(extra)) = object.remove("extra") {
            object.extend(extra);
        }
    }
    let mut item = serde_json::to_value(call).expect("a call serialises");
    for part in ["call", "agent", "customer"] {
        flatten(&mut item[part]);
    }
    flatten(&mut item);
    item
}

/// Validates `body` and checks every property that holds for any input.
fn check(body: &[u8]) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let result = validate_batch_json(body);
    prop_assert!(
        started.elapsed() < TIME_BOUND,
        "took {:?}",
        started.elapsed()
    );
    match result {
        Ok(calls) => {
            prop_assert!(!calls.is_empty() && calls.len() <= MAX_CALLS_PER_BATCH);
            let again: Vec<Value> = calls.iter().map(to_wire).collect();
            let text = serde_json::to_vec(&json!({ "data": again })).unwrap();
            prop_assert_eq!(validate_batch_json(&text), Ok(calls));
        }
        Err(BatchRejection::Invalid(invalid)) => {
            prop_assert!(!invalid.errors.is_empty());
            prop_assert!(invalid.errors.len() <= MAX_LISTED_ERRORS);
            prop_assert!(!invalid.truncated || invalid.errors.len() == MAX_LISTED_ERRORS);
            for error in &invalid.errors {
                prop_assert!(
                    error.field.is_empty() || error.field.starts_with("data"),
                    "{:?}",
                    error
                );
                prop_assert!(!error.message.is_empty());
            }
        }
        Err(BatchRejection::NotJson(reason)) => prop_assert!(!reason.is_empty()),
    }
    Ok(())
}

fn cases() -> u32 {
    // `PROPTEST_CASES` raises it for a long run outside CI.
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn any_json_document_is_answered_consistently(body in json_value()) {
        check(&serde_json::to_vec(&body).unwrap())?;
    }

    #[test]
    fn any_json_as_data_is_answered_consistently(data in json_value()) {
        check(&serde_json::to_vec(&json!({ "data": data })).unwrap())?;
    }

    #[test]
    fn any_items_are_answered_consistently(items in vec(json_value(), 0..6)) {
        check(&serde_json::to_vec(&json!({ "data": items })).unwrap())?;
    }

    #[test]
    fn valid_items_with_arbitrary_changes_are_answered_consistently(
        items in vec(mutated_item(), 1..5)
    ) {
        check(&serde_json::to_vec(&json!({ "data": items })).unwrap())?;
    }

    #[test]
    fn any_bytes_are_answered_without_panic(body in vec(any::<u8>(), 0..512)) {
        check(&body)?;
    }

    #[test]
    fn any_text_resembling_json_is_answered_without_panic(
        body in "[{}\\[\\],:\"0-9a-z\\\\ .eE+-]{0,200}"
    ) {
        check(body.as_bytes())?;
    }

    #[test]
    fn a_cut_off_valid_body_is_not_json(cut in 0usize..400) {
        let body = serde_json::to_vec(&json!({"data": [valid_item("c")]})).unwrap();
        let cut = cut.min(body.len() - 1);
        prop_assert!(matches!(
            validate_batch_json(&body[..cut]),
            Err(BatchRejection::NotJson(_))
        ));
    }
}

#[test]
fn the_generated_valid_item_is_valid() {
    let body = serde_json::to_vec(&json!({"data": [valid_item("c")]})).unwrap();
    let calls = validate_batch_json(&body).unwrap();
    assert_eq!(
        calls[0].metadata,
        *valid_item("c")["metadata"].as_object().unwrap()
    );
    check(&body).unwrap();
}
