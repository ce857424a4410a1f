//! The security requirement of partner operations, as the OpenAPI document must state it.
//!
//! poem-openapi emits each scheme of an extractor as an alternative of its own:
//! `[{partnerId}, {apiKey}, {bearer}]`, which would let a client send the partner id alone.
//! Both headers are required together, so the document served at `/openapi.json` and
//! committed in `openapi/openapi.json` says `[{partnerId, apiKey}, {partnerId, bearer}]`.
//! The rewrite works on the pretty-printed text rather than on a parsed value: re-serialising a
//! `serde_json::Value` would sort every object's keys and reorder the whole document.

use super::auth::{API_KEY_SCHEME, BEARER_SCHEME, PARTNER_ID_SCHEME};

/// `spec` (as `OpenApiService::spec` prints it) with every `[{partnerId}, {apiKey}, {bearer}]`
/// requirement replaced by `[{partnerId, apiKey}, {partnerId, bearer}]`.
pub fn require_partner_id_with_each_key(spec: &str) -> String {
    let declared: Vec<String> = [PARTNER_ID_SCHEME, API_KEY_SCHEME, BEARER_SCHEME]
        .iter()
        .enumerate()
        .flat_map(|(i, name)| {
            let close = if i == 2 { "}" } else { "}," };
            ["{".to_owned(), format!("\"{name}\": []"), close.to_owned()]
        })
        .collect();
    let lines: Vec<&str> = spec.lines().collect();
    let mut out = String::with_capacity(spec.len() + 1024);
    let mut i = 0;
    while i < lines.len() {
        let window = lines.get(i..i + declared.len());
        let matches = window.is_some_and(|window| {
            window
                .iter()
                .zip(&declared)
                .all(|(line, expected)| line.trim() == expected)
        });
        if matches {
            let indent = &lines[i][..lines[i].len() - lines[i].trim_start().len()];
            for (key, close) in [(API_KEY_SCHEME, "},"), (BEARER_SCHEME, "}")] {
                out.push_str(&format!(
                    "{indent}{{\n{indent}  \"{PARTNER_ID_SCHEME}\": [],\n{indent}  \"{key}\": []\n{indent}{close}\n"
                ));
            }
            i += declared.len();
        } else {
            out.push_str(lines[i]);
            out.push('\n');
            i += 1;
        }
    }
    if !spec.ends_with('\n') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::require_partner_id_with_each_key;

    #[test]
    fn the_partner_id_is_required_with_either_key_and_nothing_else_changes() {
        let generated = json!({
            "paths": {
                "/a": {"get": {
                    "security": [{"partnerId": []}, {"apiKey": []}, {"bearer": []}],
                    "operationId": "a"
                }},
                "/b": {"get": {"security": [{"adminToken": []}], "operationId": "b"}}
            }
        });
        let text = serde_json::to_string_pretty(&generated).unwrap();
        let rewritten: Value =
            serde_json::from_str(&require_partner_id_with_each_key(&text)).unwrap();
        assert_eq!(
            rewritten["paths"]["/a"]["get"]["security"],
            json!([{"partnerId": [], "apiKey": []}, {"partnerId": [], "bearer": []}])
        );
        assert_eq!(rewritten["paths"]["/a"]["get"]["operationId"], "a");
        assert_eq!(rewritten["paths"]["/b"], generated["paths"]["/b"]);
    }

    #[test]
    fn a_document_without_partner_operations_is_returned_as_it_is() {
        let text = "{\n  \"security\": [\n    {\n      \"adminToken\": []\n    }\n  ]\n}";
        assert_eq!(require_partner_id_with_each_key(text), text);
    }
}
