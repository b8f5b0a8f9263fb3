//! An in-memory bucket behind the [`ObjectStore`] port, with S3's
//! semantics where the importer relies on them: a read names the object's
//! ETag (or version) and finds it changed once the key was written again;
//! a write replaces the object whole and drops its user metadata; deleting
//! a missing key is no error. For tests and the simulation; its calls
//! never wait and never touch a runtime, so they can be polled by hand.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::ports::objects::{ObjectError, ObjectReader, ObjectRef, ObjectStore};

/// One stored object.
#[derive(Debug, Clone)]
struct Stored {
    body: Arc<Vec<u8>>,
    etag: String,
    metadata: BTreeMap<String, String>,
}

/// Objects by bucket and key, in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryObjects {
    objects: Arc<Mutex<BTreeMap<(String, String), Stored>>>,
}

/// The ETag of `body`: a digest of the content, so the same bytes written
/// again have the same one, as S3's MD5 ETag of a single-part upload.
fn etag_of(body: &[u8]) -> String {
    hex::encode(&Sha256::digest(body)[..16])
}

impl MemoryObjects {
    pub fn new() -> Self {
        MemoryObjects::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Stored>> {
        // A panic while holding the lock leaves plain data behind, still usable.
        self.objects.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops a file: writes `body` at `bucket`/`key` with user `metadata`
    /// (as `aws s3 cp --metadata`) and returns the object as its creation
    /// event names it.
    pub fn drop_file(&self, bucket: &str, key: &str, body: Vec<u8>, metadata: &[(&str, &str)]) -> ObjectRef {
        let etag = etag_of(&body);
        let size = body.len() as u64;
        let stored = Stored {
            body: Arc::new(body),
            etag: etag.clone(),
            metadata: metadata
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        };
        self.lock().insert((bucket.to_owned(), key.to_owned()), stored);
        ObjectRef {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size,
            etag: Some(etag),
            version_id: None,
        }
    }

    /// The bytes at `bucket`/`key`, if any.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.lock()
            .get(&(bucket.to_owned(), key.to_owned()))
            .map(|s| s.body.as_ref().clone())
    }

    /// The keys of `bucket` under `prefix`, in order.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.lock()
            .keys()
            .filter(|(b, k)| b == bucket && k.starts_with(prefix))
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// The object `object` names, if it is still that one (same ETag).
    fn current(&self, object: &ObjectRef) -> Result<Stored, ObjectError> {
        let changed = |detail: &str| ObjectError::Changed {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            detail: detail.to_owned(),
        };
        let stored = self
            .lock()
            .get(&(object.bucket.clone(), object.key.clone()))
            .cloned()
            .ok_or_else(|| changed("not found"))?;
        match &object.etag {
            Some(etag) if *etag != stored.etag => Err(changed("its ETag no longer matches")),
            _ => Ok(stored),
        }
    }
}

#[async_trait]
impl ObjectStore for MemoryObjects {
    async fn open(&self, object: &ObjectRef, offset: u64) -> Result<ObjectReader, ObjectError> {
        let stored = self.current(object)?;
        // Past the end: an empty rest, as S3 answers 416.
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(stored.body.len());
        Ok(Box::new(std::io::Cursor::new(stored.body[start..].to_vec())))
    }

    async fn metadata(&self, object: &ObjectRef, name: &str) -> Result<Option<String>, ObjectError> {
        Ok(self.current(object)?.metadata.get(name).cloned())
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), ObjectError> {
        self.drop_file(bucket, key, body, &[]);
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), ObjectError> {
        self.lock().remove(&(bucket.to_owned(), key.to_owned()));
        Ok(())
    }

    async fn concat(&self, bucket: &str, key: &str, head: Vec<u8>, parts: &[String]) -> Result<(), ObjectError> {
        let mut body = head;
        {
            let objects = self.lock();
            for part in parts {
                // S3's GetObject of a missing part fails the assembly.
                let Some(stored) = objects.get(&(bucket.to_owned(), part.clone())) else {
                    return Err(ObjectError::Backend {
                        operation: "GetObject",
                        source: format!("s3://{bucket}/{part}: no such key").into(),
                    });
                };
                body.extend_from_slice(&stored.body);
            }
        }
        self.drop_file(bucket, key, body, &[]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn read_all(mut reader: ObjectReader) -> String {
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        text
    }

    #[tokio::test]
    async fn reads_from_an_offset_the_version_its_event_named() {
        let objects = MemoryObjects::new();
        let object = objects.drop_file("b", "imports/a.csv", b"header\nrow\n".to_vec(), &[("campaign", "c")]);
        assert_eq!(object.size, 11);
        assert_eq!(read_all(objects.open(&object, 7).await.unwrap()), "row\n");
        assert_eq!(read_all(objects.open(&object, 99).await.unwrap()), "");
        assert_eq!(
            objects.metadata(&object, "campaign").await.unwrap().as_deref(),
            Some("c")
        );
        assert_eq!(objects.metadata(&object, "encoding").await.unwrap(), None);

        let same = objects.drop_file("b", "imports/a.csv", b"header\nrow\n".to_vec(), &[]);
        assert_eq!(same.etag, object.etag, "the same bytes have the same ETag");
        assert!(objects.open(&object, 0).await.is_ok());
        assert_eq!(
            objects.metadata(&object, "campaign").await.unwrap(),
            None,
            "a new write has no metadata"
        );

        objects.put("b", "imports/a.csv", b"other".to_vec()).await.unwrap();
        assert!(matches!(
            objects.open(&object, 0).await,
            Err(ObjectError::Changed { .. })
        ));
        objects.delete("b", "imports/a.csv").await.unwrap();
        objects.delete("b", "imports/a.csv").await.unwrap();
        assert!(matches!(
            objects.metadata(&object, "campaign").await,
            Err(ObjectError::Changed { .. })
        ));
    }

    #[tokio::test]
    async fn concat_assembles_parts_and_fails_on_a_missing_one() {
        let objects = MemoryObjects::new();
        objects.put("b", "p/1", b"one\n".to_vec()).await.unwrap();
        objects.put("b", "p/2", b"two\n".to_vec()).await.unwrap();
        let parts = ["p/1".to_owned(), "p/2".to_owned()];
        objects.concat("b", "r", b"head\n".to_vec(), &parts).await.unwrap();
        assert_eq!(objects.get("b", "r").unwrap(), b"head\none\ntwo\n");
        assert_eq!(objects.keys("b", "p/"), ["p/1", "p/2"]);
        let missing = ["p/1".to_owned(), "p/3".to_owned()];
        assert!(matches!(
            objects.concat("b", "r2", Vec::new(), &missing).await,
            Err(ObjectError::Backend { .. })
        ));
        assert_eq!(objects.get("b", "r2"), None);
    }
}
