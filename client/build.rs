//! Generates the client from the committed OpenAPI document (`../openapi/openapi.json`, itself
//! generated from the service's code) into `$OUT_DIR/codegen.rs`, included by `src/lib.rs`.

use std::path::Path;

const SPEC: &str = "../openapi/openapi.json";

fn main() {
    println!("cargo:rerun-if-changed={SPEC}");
    let text = std::fs::read_to_string(SPEC).unwrap_or_else(|e| panic!("read {SPEC}: {e}"));
    let spec: openapiv3::OpenAPI =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{SPEC} is not OpenAPI 3.0: {e}"));

    let mut settings = progenitor::GenerationSettings::new();
    settings.with_interface(progenitor::InterfaceStyle::Builder);
    let mut generator = progenitor::Generator::new(&settings);
    let tokens = generator
        .generate_tokens(&spec)
        .unwrap_or_else(|e| panic!("progenitor rejects {SPEC}: {e}"));
    let file = syn::parse2(tokens).expect("progenitor emits valid Rust");
    let code = prettyplease::unparse(&file);

    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("codegen.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
}
