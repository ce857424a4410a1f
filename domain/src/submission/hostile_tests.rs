//! Bodies built to make validation expensive: each is answered from a bounded amount of work,
//! with the contract's answers.

use serde_json::json;

use super::*;

fn invalid(body: &[u8]) -> ValidationErrors {
    match validate_batch_json(body) {
        Err(BatchRejection::Invalid(invalid)) => invalid,
        other => panic!("expected a validation failure, got {other:?}"),
    }
}

fn not_json(body: &[u8]) -> String {
    match validate_batch_json(body) {
        Err(BatchRejection::NotJson(reason)) => reason,
        other => panic!("expected not-JSON, got {other:?}"),
    }
}

fn item_text(id: &str) -> String {
    json!({
        "call": {
            "id": id,
            "recording_url": "https://example.com/a.mp3",
            "start_time": "2023-01-01T10:00:00Z",
            "end_time": "2023-01-01T10:30:00Z",
            "contact_number": "+1234567890"
        },
        "agent": {"id": "a"},
        "customer": {"id": "c"}
    })
    .to_string()
}

#[test]
fn a_million_empty_items_are_one_count_error() {
    let body = format!("{{\"data\":[{}{{}}]}}", "{},".repeat(1_000_000));
    let errors = invalid(body.as_bytes());
    assert_eq!(
        errors.errors,
        vec![FieldError {
            field: "data".into(),
            message: "data must contain at most 50 calls, got 1000001".into()
        }]
    );
    assert!(!errors.truncated);
}

#[test]
fn more_than_a_hundred_broken_rules_are_cut_short_and_say_so() {
    // 50 empty items break three rules each.
    let body = format!("{{\"data\":[{}{{}}]}}", "{},".repeat(49));
    let errors = invalid(body.as_bytes());
    assert_eq!(errors.errors.len(), MAX_LISTED_ERRORS);
    assert!(errors.truncated);
    assert_eq!(errors.errors[0].field, "data[0].call");
    assert_eq!(errors.errors[99].field, "data[33].call");

    let body = format!("{{\"data\":[{}{{}}]}}", "{},".repeat(32));
    let errors = invalid(body.as_bytes());
    assert_eq!(errors.errors.len(), 99);
    assert!(!errors.truncated);
}

#[test]
fn nul_characters_are_listed_at_most_a_hundred_times() {
    let strings = vec!["\u{0}"; 10_000];
    let body = json!({"data": [{"x": strings}]}).to_string();
    let errors = invalid(body.as_bytes());
    assert_eq!(errors.errors.len(), MAX_LISTED_ERRORS);
    assert!(errors.truncated);
    assert_eq!(errors.errors[5].field, "data[0].x[5]");
}

#[test]
fn a_long_key_over_many_zeros_is_kept_whole_only_if_valid() {
    let zeros = vec!["0"; 200_000].join(",");
    let key = "k".repeat(200_000);
    let bad = format!("{{\"data\":[{{\"{key}\":[{zeros}]}}]}}");
    let errors = invalid(bad.as_bytes());
    assert_eq!(errors.errors.len(), 3);

    let item = item_text("c1");
    let good = format!(
        "{{\"data\":[{},\"{key}\":[{zeros}]}}]}}",
        &item[..item.len() - 1]
    );
    let calls = validate_batch_json(good.as_bytes()).unwrap();
    assert_eq!(
        calls[0].extra[&key].to_value().as_array().unwrap().len(),
        200_000
    );
}

#[test]
fn nesting_is_bounded_wherever_it_is() {
    let deep = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
    // The body object and `data` are two levels; an item's field one more.
    let item = item_text("c1");
    let at_limit = format!(
        "{{\"data\":[{},\"x\":{}}}]}}",
        &item[..item.len() - 1],
        deep(MAX_NESTING_DEPTH - 3)
    );
    let calls = validate_batch_json(at_limit.as_bytes()).unwrap();
    assert!(calls[0].extra["x"].to_value().is_array());

    let too_deep = format!(
        "{{\"data\":[{},\"x\":{}}}]}}",
        &item[..item.len() - 1],
        deep(MAX_NESTING_DEPTH - 2)
    );
    assert!(not_json(too_deep.as_bytes()).contains("nested deeper than 100 levels"));
    let in_an_invalid_item = format!("{{\"data\":[{{\"x\":{}}}]}}", deep(100_000));
    assert!(not_json(in_an_invalid_item.as_bytes()).contains("nested deeper than 100 levels"));
    // What is never stored is only read for its syntax: the body's shape is what is wrong.
    for (body, field) in [
        (format!("{{\"other\":{},\"data\":[]}}", deep(200)), "data"),
        (format!("{{\"data\":{{\"x\":{}}}}}", deep(200)), "data"),
        (
            format!("{{\"data\":[{}{}]}}", "{},".repeat(60), deep(200)),
            "data",
        ),
        (deep(100_000), ""),
    ] {
        assert_eq!(invalid(body.as_bytes()).errors[0].field, field);
    }
}

#[test]
fn bodies_that_are_not_json_say_so() {
    for body in [
        &b""[..],
        b"{",
        b"{\"data\":[]} trailing",
        b"\xff\xfe",
        b"{\"data\":[\"\xff\"]}",
    ] {
        not_json(body);
    }
    // A number no reader could store, in a call that would be accepted.
    let item = item_text("c1");
    for field in ["\"x\":1e400", "\"metadata\":{\"n\":-1e400}"] {
        let body = format!("{{\"data\":[{},{field}}}]}}", &item[..item.len() - 1]);
        assert!(not_json(body.as_bytes()).contains("number out of range"));
    }
}

#[test]
fn mistyped_fields_holding_huge_values_are_reported_by_kind() {
    let zeros = vec!["0"; 100_000].join(",");
    let body = format!(
        "{{\"data\":[{{\"call\":{{\"id\":[{zeros}]}},\"agent\":{{\"id\":\"a\"}},\"customer\":{{\"id\":\"c\"}}}}]}}"
    );
    let errors = invalid(body.as_bytes());
    assert_eq!(errors.errors[0].field, "data[0].call.id");
    assert_eq!(errors.errors[0].message, "id must be a string");
}

#[test]
fn a_repeated_key_counts_as_its_last_value() {
    let body = format!(
        "{{\"data\":\"first\",\"data\":[{}]}}",
        item_text("c1").replace("\"id\":\"c1\"", "\"id\":\"\",\"id\":\"c1\"")
    );
    let calls = validate_batch_json(body.as_bytes()).unwrap();
    assert_eq!(calls[0].call.id.as_str(), "c1");
}

#[test]
fn metadata_pairs_are_counted_without_being_kept() {
    let pairs: Vec<String> = (0..100_000).map(|i| format!("\"k{i}\":{i}")).collect();
    let item = item_text("c1");
    let body = format!(
        "{{\"data\":[{},\"metadata\":{{{}}}}}]}}",
        &item[..item.len() - 1],
        pairs.join(",")
    );
    let errors = invalid(body.as_bytes());
    assert_eq!(
        errors.errors[0].message,
        "metadata must have at most 5 pairs, got 100000"
    );
}
