//! Implementations of the ports: DynamoDB + SQS + S3 for AWS, embedded
//! SQLite and a local folder for one machine, and an in-memory backend that
//! is the fast fake for logic tests.

pub mod dir;
pub mod dynamodb;
pub mod memory;
pub mod s3;
pub mod sqlite;
pub mod sqs;
