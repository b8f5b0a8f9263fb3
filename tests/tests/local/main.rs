//! Integration tests on the local stores: the in-memory backend, the
//! embedded (SQLite) backend and the local runner on it, the simulation and
//! the properties. No emulator needed. One module per area; one binary, so
//! the dependencies are linked once.

mod api_errors;
mod audit_trail;
mod authorization;
mod bulk_uses;
mod ceilings;
mod client;
mod console;
mod contract_memory;
mod contract_sqlite;
mod csv_import;
mod encodings;
mod exactly_once;
mod file_ceilings;
mod file_formats;
mod import_races;
mod job_cancel;
mod job_list;
mod local_runner;
mod openapi;
mod reconcile_command;
mod simulation;
mod uploads;
mod worker_contention;
mod worker_rules;
mod xlsx_import;
