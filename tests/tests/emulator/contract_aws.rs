//! The port contract suite against the AWS adapters (DynamoDB + SQS) over the
//! moto emulator. Each test gets its own table and queues.

use std::time::Duration;

async fn backend() -> Option<pointflow_tests::backend::Backend> {
    // 1 s is SQS's smallest whole-second visibility timeout that still lets a
    // receive finish; 2 receives before the DLQ keeps the redrive case short.
    pointflow_tests::backend::aws(Duration::from_secs(1), 2).await
}

pointflow_tests::contract_suite!(backend());
