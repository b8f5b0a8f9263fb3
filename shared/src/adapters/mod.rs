//! Implementations of the ports: DynamoDB + SQS for AWS, and an in-memory
//! backend that is the fast fake for logic tests.

pub mod dynamodb;
pub mod memory;
pub mod sqlite;
pub mod sqs;
