//! The client side of the `pointflow` command: submitting campaign files to
//! the API and following their jobs.
//!
//! - [`input`]: files (JSON, NDJSON, CSV) into validated, keyed chunks.
//! - [`api`]: the HTTP client, with retries.
//! - [`submit`]: `submit` and `wait`.

pub mod api;
pub mod input;
pub mod submit;
