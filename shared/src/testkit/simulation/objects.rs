//! The bucket behind fault gates: each [`ObjectStore`] call stops at a gate
//! before it runs (where it may fail with an S3 error, without effect) and
//! at a gate after it took effect (where the import function may die), as
//! the store and queue calls do in `faults.rs`. A read may also break off
//! part-way through the object, as a `GetObject` stream cut by the network.

use std::io::Read;
use std::sync::Arc;

use async_trait::async_trait;

use crate::ports::objects::{ObjectError, ObjectReader, ObjectRef, ObjectStore};

use super::exec::{GatePoint, Sim, Verdict};
use super::faults::InjectedFault;
use super::FaultKind;

/// Gate names of bucket calls start with this, so the scheduler counts
/// their failures as S3 errors.
pub(crate) const S3_OP: &str = "s3 ";

/// One bucket call between its two gates.
macro_rules! object_call {
    ($sim:expr, $op:literal, $call:expr) => {{
        if let Verdict::Fail(fault) = $sim.gate(GatePoint::Before, $op).await {
            // An S3 500 or 503 SlowDown after the SDK's own retries.
            return Err(ObjectError::Backend {
                operation: $op,
                source: Box::new(InjectedFault(fault)),
            });
        }
        let result = futures::executor::block_on($call);
        $sim.gate(GatePoint::After, $op).await;
        result
    }};
}

/// An [`ObjectStore`] whose calls can fail, interleave and be followed by a
/// crash, and whose reads can break off.
pub(crate) struct FaultyObjects {
    pub inner: Arc<dyn ObjectStore>,
    pub sim: Sim,
}

/// A reader that fails after `left` bytes, as a stream cut mid-object.
struct Interrupted {
    inner: ObjectReader,
    left: usize,
}

impl Read for Interrupted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected fault: the GetObject stream broke off",
            ));
        }
        let n = buf.len().min(self.left);
        let read = self.inner.read(&mut buf[..n])?;
        self.left -= read;
        Ok(read)
    }
}

#[async_trait]
impl ObjectStore for FaultyObjects {
    async fn open(&self, object: &ObjectRef, offset: u64) -> Result<ObjectReader, ObjectError> {
        let reader = object_call!(self.sim, "s3 open", self.inner.open(object, offset))?;
        let mut core = self.sim.lock();
        if core.calm || core.rng.f64() >= core.rates.store_error / 2.0 {
            return Ok(reader);
        }
        let rest = object.size.saturating_sub(offset);
        let left = usize::try_from(core.rng.u64(0..=rest)).unwrap_or(usize::MAX);
        core.count(FaultKind::ReadInterrupted);
        let key = object.key.clone();
        core.note(|| format!("  the read of {key} from byte {offset} will break off after {left} bytes"));
        Ok(Box::new(Interrupted { inner: reader, left }))
    }

    async fn metadata(&self, object: &ObjectRef, name: &str) -> Result<Option<String>, ObjectError> {
        object_call!(self.sim, "s3 metadata", self.inner.metadata(object, name))
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), ObjectError> {
        let result = object_call!(self.sim, "s3 put", self.inner.put(bucket, key, body));
        self.sim.lock().note(|| format!("  put {key}"));
        result
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), ObjectError> {
        object_call!(self.sim, "s3 delete", self.inner.delete(bucket, key))
    }

    async fn concat(&self, bucket: &str, key: &str, head: Vec<u8>, parts: &[String]) -> Result<(), ObjectError> {
        let result = object_call!(self.sim, "s3 concat", self.inner.concat(bucket, key, head, parts));
        self.sim
            .lock()
            .note(|| format!("  concat {key} from {} parts", parts.len()));
        result
    }
}
