//! The API's OpenAPI document (`docs/openapi.yaml`) as a checker of the
//! answers the tests receive: [`call_api`](crate::lambda::call_api) passes
//! every response through [`assert_conforms`], so every HTTP-level test also
//! checks that its route documents the status, that the body validates
//! against that status's schema (JSON Schema 2020-12, with formats, by the
//! `jsonschema` crate) and that the documented headers are there.
//!
//! Requests no operation describes are checked too: an unknown path must be
//! `404 no_such_route`, a method the path does not take `405
//! method_not_allowed` with an `Allow` header naming the path's methods
//! (or, from a deployed stack's handler, `403` for a request without the
//! identity its `AuthMode` requires, refused before routing).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use jsonschema::{Draft, Registry, Validator};
use serde_json::{json, Value};

/// The base URI the document is registered under, so `$ref`s into it
/// resolve without fetching anything.
const BASE: &str = "https://pointflow.invalid/openapi";

/// The methods an OpenAPI path item may describe.
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Path of `docs/openapi.yaml`.
pub fn document_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml")
}

/// The document, as JSON.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let text = std::fs::read_to_string(document_path()).expect("read docs/openapi.yaml");
        serde_norway::from_str(&text).expect("docs/openapi.yaml is YAML")
    })
}

/// The checker built from [`document`], once per test binary.
pub fn contract() -> &'static Contract {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    CONTRACT.get_or_init(|| Contract::new(document()).unwrap_or_else(|e| panic!("docs/openapi.yaml: {e}")))
}

/// Panics, naming every difference, unless the answer to `method path` is
/// one the document allows.
pub fn assert_conforms(method: &str, path: &str, status: u16, headers: &[(String, String)], body: &Value) {
    if let Err(problems) = contract().check(method, path, status, headers, body) {
        panic!(
            "the answer to {method} {path} breaks docs/openapi.yaml:\n  - {}\nstatus {status}, headers {headers:?}, body {body}",
            problems.join("\n  - ")
        );
    }
}

/// JSON pointer escaping of one reference token.
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A validator of instances against the schema at `pointer` in the
/// document (`$ref`s inside it resolve in the document).
pub fn validator_at(pointer: &str) -> Result<Validator, String> {
    let registry = Registry::new()
        .draft(Draft::Draft202012)
        .add(BASE, document().clone())
        .and_then(|builder| builder.prepare())
        .map_err(|e| format!("registering the document: {e}"))?;
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .with_registry(&registry)
        .should_validate_formats(true)
        .build(&json!({ "$ref": format!("{BASE}#{}", fragment(pointer)) }))
        .map_err(|e| format!("schema at {pointer}: {e}"))
}

/// `pointer` as a URI fragment: characters a fragment may not hold (the
/// braces of a path template) percent-encoded.
fn fragment(pointer: &str) -> String {
    pointer
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' | b'@' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every error of `instance` against `validator`, each with where it is.
pub fn errors(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} (at {})", e, e.instance_path()))
        .collect()
}

/// Follows a Reference Object (`{"$ref": "#/…"}`) to what it names;
/// returns the object and its pointer.
pub fn resolve<'a>(doc: &'a Value, object: &'a Value, pointer: String) -> (&'a Value, String) {
    match object.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let target = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local references: {reference}"));
            let found = doc
                .pointer(target)
                .unwrap_or_else(|| panic!("{reference} names nothing"));
            resolve(doc, found, target.to_owned())
        }
        None => (object, pointer),
    }
}

/// One documented header of a response.
struct HeaderCheck {
    name: String,
    required: bool,
    schema: Validator,
}

/// What one documented status of an operation allows.
struct ResponseCheck {
    /// Validator of the `application/json` body, if the status has one.
    body: Option<Validator>,
    headers: Vec<HeaderCheck>,
}

/// One operation: a method on a path template.
struct Operation {
    method: String,
    responses: BTreeMap<u16, ResponseCheck>,
}

/// One path of the document and its operations.
struct PathItem {
    template: String,
    segments: Vec<String>,
    operations: Vec<Operation>,
}

impl PathItem {
    /// Whether `path` (as the API receives it) fits this template: the
    /// same segments, `{name}` standing for any one segment, the way the
    /// API's router splits a path.
    fn matches(&self, path: &str) -> bool {
        let given: Vec<&str> = path.trim_matches('/').split('/').collect();
        given.len() == self.segments.len()
            && self
                .segments
                .iter()
                .zip(&given)
                .all(|(want, got)| (want.starts_with('{') && want.ends_with('}')) || want == got)
    }
}

/// The document's operations with their compiled response checks.
pub struct Contract {
    paths: Vec<PathItem>,
    /// The error shape, and the codes of answers no operation describes.
    error: Validator,
    no_such_route: Validator,
    method_not_allowed: Validator,
    unauthenticated: Validator,
}

impl Contract {
    fn new(doc: &Value) -> Result<Self, String> {
        let mut paths = Vec::new();
        for (template, item) in doc["paths"].as_object().ok_or("no paths")? {
            let item_pointer = format!("/paths/{}", escape(template));
            let mut operations = Vec::new();
            for method in METHODS {
                let Some(operation) = item.get(method) else { continue };
                let mut responses = BTreeMap::new();
                for (status, response) in operation["responses"].as_object().ok_or("no responses")? {
                    let code: u16 = status
                        .parse()
                        .map_err(|_| format!("{method} {template}: status {status} is not a number"))?;
                    let pointer = format!("{item_pointer}/{method}/responses/{status}");
                    let (response, pointer) = resolve(doc, response, pointer);
                    let body = match response.pointer("/content/application~1json/schema") {
                        Some(_) => Some(validator_at(&format!("{pointer}/content/application~1json/schema"))?),
                        None => None,
                    };
                    let mut headers = Vec::new();
                    for (name, header) in response["headers"].as_object().into_iter().flatten() {
                        let (header, header_pointer) =
                            resolve(doc, header, format!("{pointer}/headers/{}", escape(name)));
                        headers.push(HeaderCheck {
                            name: name.clone(),
                            required: header["required"].as_bool().unwrap_or(false),
                            schema: validator_at(&format!("{header_pointer}/schema"))?,
                        });
                    }
                    responses.insert(code, ResponseCheck { body, headers });
                }
                operations.push(Operation {
                    method: method.to_ascii_uppercase(),
                    responses,
                });
            }
            paths.push(PathItem {
                template: template.clone(),
                segments: template.trim_matches('/').split('/').map(str::to_owned).collect(),
                operations,
            });
        }
        Ok(Contract {
            paths,
            error: validator_at("/components/schemas/Error")?,
            no_such_route: validator_at("/components/schemas/NoSuchRouteCode")?,
            method_not_allowed: validator_at("/components/schemas/MethodNotAllowedCode")?,
            unauthenticated: validator_at("/components/schemas/UnauthenticatedCodes")?,
        })
    }

    /// Every `(METHOD, path template)` the document describes.
    pub fn operations(&self) -> BTreeSet<(String, String)> {
        self.paths
            .iter()
            .flat_map(|p| p.operations.iter().map(|o| (o.method.clone(), p.template.clone())))
            .collect()
    }

    /// Every problem with the answer `status`, `headers`, `body` to
    /// `method path`; `Ok` if the document allows it.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        headers: &[(String, String)],
        body: &Value,
    ) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let error_body = |problems: &mut Vec<String>, codes: &Validator| {
            problems.extend(errors(&self.error, body));
            problems.extend(errors(codes, body));
        };
        // A deployed stack's function refuses a request without the identity
        // its AuthMode requires before routing it, whatever the path.
        let unrouted_refusal = |problems: &mut Vec<String>| {
            error_body(problems, &self.unauthenticated);
            if problems.is_empty() {
                Ok(())
            } else {
                Err(std::mem::take(problems))
            }
        };
        let Some(item) = self.paths.iter().find(|p| p.matches(path)) else {
            if status == 403 {
                return unrouted_refusal(&mut problems);
            }
            if status != 404 {
                problems.push(format!(
                    "{path} is no documented path, so the answer must be 404, not {status}"
                ));
            }
            error_body(&mut problems, &self.no_such_route);
            return if problems.is_empty() { Ok(()) } else { Err(problems) };
        };
        let method = method.to_ascii_uppercase();
        let Some(operation) = item.operations.iter().find(|o| o.method == method) else {
            if status == 403 {
                return unrouted_refusal(&mut problems);
            }
            if status != 405 {
                problems.push(format!(
                    "{method} is not documented on {}, so the answer must be 405, not {status}",
                    item.template
                ));
            }
            error_body(&mut problems, &self.method_not_allowed);
            let documented: BTreeSet<&str> = item.operations.iter().map(|o| o.method.as_str()).collect();
            let allowed: Option<BTreeSet<&str>> = header("allow").map(|a| a.split(',').map(str::trim).collect());
            if allowed.as_ref() != Some(&documented) {
                problems.push(format!(
                    "a 405 names the documented methods {documented:?} in Allow, not {allowed:?}"
                ));
            }
            return if problems.is_empty() { Ok(()) } else { Err(problems) };
        };
        let Some(response) = operation.responses.get(&status) else {
            let documented: Vec<&u16> = operation.responses.keys().collect();
            return Err(vec![format!(
                "{method} {} does not document status {status} (documented: {documented:?})",
                item.template
            )]);
        };
        match &response.body {
            Some(schema) => {
                let content_type = header("content-type").unwrap_or_default();
                if !content_type.starts_with("application/json") {
                    problems.push(format!("Content-Type is {content_type:?}, not application/json"));
                }
                problems.extend(errors(schema, body));
            }
            None if !body.is_null() => problems.push("a body where the document has none".to_owned()),
            None => {}
        }
        for documented in &response.headers {
            match header(&documented.name) {
                Some(value) => problems.extend(
                    errors(&documented.schema, &Value::String(value.to_owned()))
                        .into_iter()
                        .map(|e| format!("header {}: {e}", documented.name)),
                ),
                None if documented.required => problems.push(format!("header {} is missing", documented.name)),
                None => {}
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}
