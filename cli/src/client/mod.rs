//! The client side of the `pointflow` command: submitting campaign files to
//! the API and following their jobs.
//!
//! - [`input`]: files (JSON, NDJSON, CSV) into validated, keyed chunks.
//! - [`api`]: the HTTP client, with retries.
//! - [`signing`]: SigV4 signing of its requests (a stack with `AuthMode` iam).
//! - [`submit`]: `submit` and `wait`.
//! - [`upload`]: `submit --via upload`, one PUT of the whole file.

pub mod api;
pub mod input;
pub mod signing;
pub mod submit;
pub mod upload;
