//! Integration tests over the moto AWS emulator: the DynamoDB, SQS and S3
//! adapters, the real handlers and the local runner on them. Without
//! `AWS_ENDPOINT_URL` each test skips (and fails instead with
//! `POINTFLOW_REQUIRE_EMULATOR=1`, as `scripts/test.sh` sets). One module
//! per area; one binary, so the dependencies are linked once.

mod aws_faults;
mod aws_import;
mod aws_pipeline;
mod bulk_uses;
mod console_stack;
mod contract_aws;
mod dlq_archive;
mod events;
mod job_accounting;
mod job_cancel;
mod job_list_cost;
mod local_runner;
mod reconcile_command;
mod stack_outputs;
mod strict_aws;
mod uploads;
mod write_capacity;
