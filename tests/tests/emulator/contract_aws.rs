//! The port contract suite against the AWS adapters (DynamoDB + SQS) over the
//! moto emulator, through the strict AWS layer (`pointflow_tests::strict`).
//! Each test gets its own table and queues.

use std::time::Duration;

async fn backend(visibility: Duration) -> Option<pointflow_tests::backend::Backend> {
    // 2 receives before the DLQ keeps the redrive case short.
    pointflow_tests::backend::aws(visibility, 2).await
}

// 1 s is SQS's smallest whole-second visibility timeout that still lets a
// receive finish; an hour for the cases that must not see it expire.
pointflow_tests::contract_suite!(
    backend(Duration::from_secs(1)),
    long_visibility: backend(Duration::from_secs(3600))
);
