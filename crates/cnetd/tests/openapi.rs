//! The committed OpenAPI document (`docs/openapi.json`) must be what cnetd
//! serves. Regenerate it with `CNET_UPDATE_OPENAPI=1 cargo test -p cnetd --test openapi`.

#[test]
fn the_committed_openapi_document_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let current = cnetd::api::openapi_json();
    if std::env::var_os("CNET_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "docs/openapi.json is stale: run `CNET_UPDATE_OPENAPI=1 cargo test -p cnetd --test openapi` and commit it"
    );
}

#[test]
fn every_error_code_is_in_the_document() {
    let doc: serde_json::Value = serde_json::from_str(&cnetd::api::openapi_json()).unwrap();
    let codes = doc["components"]["schemas"]["ErrorCode"]["enum"].as_array().expect("ErrorCode enum");
    for code in ["NetworkNotFound", "PortAlreadyExists", "EntityHasReferences", "MappingNotSupported"] {
        assert!(codes.contains(&serde_json::json!(code)), "{code} missing");
    }
    for path in ["/networks", "/endpoints/{id}", "/namespaces/{id}", "/globals/version", "/capabilities", "/diag"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
}
