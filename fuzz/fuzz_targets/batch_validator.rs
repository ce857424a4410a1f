//! The batch validator on arbitrary bytes: it must never panic, must list at most 100 errors,
//! and whatever it accepts it must accept again, unchanged, once the calls are sent back as
//! they came out.
//!
//! Run (outside CI): `cargo fuzz run batch_validator -- -max_total_time=300` from the
//! repository root (see README, "Fuzzing").

#![no_main]

use callingest_domain::submission::{
    validate_batch_json, BatchRejection, NewCall, MAX_LISTED_ERRORS,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

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

fuzz_target!(|body: &[u8]| {
    match validate_batch_json(body) {
        Ok(calls) => {
            assert!(!calls.is_empty() && calls.len() <= 50);
            let again: Vec<Value> = calls.iter().map(to_wire).collect();
            let text = serde_json::to_vec(&json!({ "data": again })).unwrap();
            let revalidated = validate_batch_json(&text).expect("accepted calls re-validate");
            assert_eq!(revalidated.len(), calls.len());
            for (first, second) in calls.iter().zip(&revalidated) {
                assert_eq!(first.call.id, second.call.id);
                assert_eq!(first.extra, second.extra);
                assert_eq!(first.call.extra, second.call.extra);
            }
        }
        Err(BatchRejection::Invalid(invalid)) => {
            assert!(!invalid.errors.is_empty());
            assert!(invalid.errors.len() <= MAX_LISTED_ERRORS);
            assert!(!invalid.truncated || invalid.errors.len() == MAX_LISTED_ERRORS);
        }
        Err(BatchRejection::NotJson(reason)) => assert!(!reason.is_empty()),
    }
});
