//! A local folder standing in for S3: bucket `b`, key `k` is the file
//! `<root>/b/k`. For the local runner and tests; it does not check ETags (a
//! file replaced mid-import is read as it now is). An object's user
//! metadata, if any, is the JSON object of strings in the file
//! `<root>/.metadata/b/k.json` (no bucket starts with `.`); writing or
//! deleting the object removes it, as a `PutObject` without metadata
//! replaces S3's.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

use crate::ports::objects::{ObjectError, ObjectReader, ObjectRef, ObjectStore};

/// Objects as files under a root folder.
#[derive(Debug, Clone)]
pub struct DirObjects {
    root: PathBuf,
}

impl DirObjects {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirObjects { root: root.into() }
    }

    /// The file holding `bucket`/`key`. Keys may not climb out of the bucket.
    pub fn path(&self, bucket: &str, key: &str) -> Result<PathBuf, ObjectError> {
        let relative = Path::new(key);
        let plain = relative.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain || bucket.contains(['/', '\\']) || bucket.starts_with('.') {
            return Err(ObjectError::Backend {
                operation: "resolve",
                source: format!("{bucket}/{key} is not a plain relative path").into(),
            });
        }
        Ok(self.root.join(bucket).join(relative))
    }

    /// The file holding `bucket`/`key`'s user metadata.
    pub fn metadata_path(&self, bucket: &str, key: &str) -> Result<PathBuf, ObjectError> {
        self.path(bucket, key)?;
        Ok(self.root.join(METADATA_DIR).join(bucket).join(format!("{key}.json")))
    }

    /// Sets `bucket`/`key`'s user metadata, replacing any (as `aws s3 cp
    /// --metadata` does); an empty map removes it. Call it after writing
    /// the object, which clears it.
    pub fn set_metadata(
        &self,
        bucket: &str,
        key: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), ObjectError> {
        let path = self.metadata_path(bucket, key)?;
        if metadata.is_empty() {
            return remove_if_present(&path).map_err(|e| io("set_metadata", e));
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io("set_metadata", e))?;
        }
        // A map of strings always serialises.
        let body = serde_json::to_vec(metadata).unwrap_or_default();
        fs::write(&path, body).map_err(|e| io("set_metadata", e))
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The folder of the objects' metadata, under the root.
const METADATA_DIR: &str = ".metadata";

fn io(operation: &'static str, error: std::io::Error) -> ObjectError {
    ObjectError::Backend {
        operation,
        source: Box::new(error),
    }
}

async fn blocking<T: Send + 'static>(
    operation: &'static str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, ObjectError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| io(operation, e)),
        Err(e) => Err(ObjectError::Backend {
            operation,
            source: Box::new(e),
        }),
    }
}

#[async_trait]
impl ObjectStore for DirObjects {
    async fn open(&self, object: &ObjectRef, offset: u64) -> Result<ObjectReader, ObjectError> {
        let path = self.path(&object.bucket, &object.key)?;
        let (bucket, key) = (object.bucket.clone(), object.key.clone());
        match tokio::task::spawn_blocking(move || {
            let mut file = File::open(&path)?;
            file.seek(SeekFrom::Start(offset))?;
            Ok::<_, std::io::Error>(file)
        })
        .await
        {
            Ok(Ok(file)) => Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, file))),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(ObjectError::Changed {
                bucket,
                key,
                detail: "no such file".to_owned(),
            }),
            Ok(Err(e)) => Err(io("open", e)),
            Err(e) => Err(ObjectError::Backend {
                operation: "open",
                source: Box::new(e),
            }),
        }
    }

    async fn metadata(&self, object: &ObjectRef, name: &str) -> Result<Option<String>, ObjectError> {
        let object_path = self.path(&object.bucket, &object.key)?;
        let path = self.metadata_path(&object.bucket, &object.key)?;
        let (bucket, key, name) = (object.bucket.clone(), object.key.clone(), name.to_owned());
        let found = blocking("metadata", move || {
            if !object_path.exists() {
                return Ok(None);
            }
            let text = match fs::read(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(None)),
                Err(e) => return Err(e),
            };
            let map: BTreeMap<String, String> =
                serde_json::from_slice(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            Ok(Some(map.get(&name).cloned()))
        })
        .await?;
        found.ok_or_else(|| ObjectError::Changed {
            bucket,
            key,
            detail: "no such file".to_owned(),
        })
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), ObjectError> {
        let path = self.path(bucket, key)?;
        let metadata = self.metadata_path(bucket, key)?;
        blocking("put", move || {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            // Written aside and renamed, so a reader sees the old object or
            // the new one whole, never a half-written one (as on S3).
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let aside = path.with_file_name(format!(".{name}.{}.part", uuid::Uuid::new_v4().simple()));
            fs::write(&aside, body)?;
            fs::rename(&aside, &path)?;
            remove_if_present(&metadata)
        })
        .await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), ObjectError> {
        let path = self.path(bucket, key)?;
        let metadata = self.metadata_path(bucket, key)?;
        blocking("delete", move || {
            remove_if_present(&path)?;
            remove_if_present(&metadata)
        })
        .await
    }

    async fn concat(&self, bucket: &str, key: &str, head: Vec<u8>, parts: &[String]) -> Result<(), ObjectError> {
        let target = self.path(bucket, key)?;
        let sources = parts
            .iter()
            .map(|part| self.path(bucket, part))
            .collect::<Result<Vec<_>, _>>()?;
        blocking("concat", move || {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            let mut out = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&target)?;
            out.write_all(&head)?;
            for source in sources {
                std::io::copy(&mut File::open(source)?, &mut out)?;
            }
            out.flush()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As on S3: metadata belongs to one write of the object; writing the
    /// object again, or deleting it, drops it.
    #[tokio::test]
    async fn metadata_lives_with_one_write_of_its_object() {
        let root = std::env::temp_dir().join(format!("pointflow-dir-{}", uuid::Uuid::new_v4().simple()));
        let objects = DirObjects::new(&root);
        let object = ObjectRef {
            bucket: "b".into(),
            key: "imports/a.csv".into(),
            size: 0,
            etag: None,
            version_id: None,
        };
        let campaign = BTreeMap::from([("campaign".to_owned(), "spring".to_owned())]);
        objects.put("b", "imports/a.csv", b"x".to_vec()).await.unwrap();
        assert_eq!(objects.metadata(&object, "campaign").await.unwrap(), None);
        objects.set_metadata("b", "imports/a.csv", &campaign).unwrap();
        assert_eq!(
            objects.metadata(&object, "campaign").await.unwrap().as_deref(),
            Some("spring")
        );
        assert_eq!(objects.metadata(&object, "other").await.unwrap(), None);
        objects.put("b", "imports/a.csv", b"y".to_vec()).await.unwrap();
        assert_eq!(
            objects.metadata(&object, "campaign").await.unwrap(),
            None,
            "a new write has none"
        );
        objects.set_metadata("b", "imports/a.csv", &campaign).unwrap();
        objects.set_metadata("b", "imports/a.csv", &BTreeMap::new()).unwrap();
        assert_eq!(objects.metadata(&object, "campaign").await.unwrap(), None, "cleared");
        objects.set_metadata("b", "imports/a.csv", &campaign).unwrap();
        objects.delete("b", "imports/a.csv").await.unwrap();
        assert!(matches!(
            objects.metadata(&object, "campaign").await,
            Err(ObjectError::Changed { .. })
        ));
        assert!(!objects.metadata_path("b", "imports/a.csv").unwrap().exists());
        let _ = fs::remove_dir_all(&root);
    }
}
