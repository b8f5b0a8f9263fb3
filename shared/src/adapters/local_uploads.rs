//! [`UploadSigner`] of the embedded backend: `pointflow local serve` signs
//! URLs to itself (`PUT /local-uploads/<key>?expires=…&signature=…`) with an
//! HMAC-SHA256 under a secret only that process holds, so only the URLs it
//! issued, unexpired and with the headers it signed (length, checksum,
//! metadata), are accepted ([`LocalUploads::verify`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::domain::uploads::is_upload_key;
use crate::ports::uploads::{PutToSign, SignedPut, UploadSigner};
use crate::ports::BoxError;

/// The path under which the local server receives uploads.
pub const LOCAL_UPLOAD_PATH: &str = "/local-uploads/";
/// The header prefix of user metadata, as S3 names it.
pub const METADATA_HEADER_PREFIX: &str = "x-amz-meta-";
/// The header carrying the content's SHA-256 (base64), as S3 names it.
pub const CHECKSUM_HEADER: &str = "x-amz-checksum-sha256";

/// Signs and checks the local server's upload URLs.
#[derive(Clone)]
pub struct LocalUploads {
    /// The server's base URL (`http://127.0.0.1:3000`).
    base_url: String,
    secret: [u8; 32],
}

impl std::fmt::Debug for LocalUploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalUploads")
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// What a PUT to the local server carried, for [`LocalUploads::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPut {
    /// The object key (the path after [`LOCAL_UPLOAD_PATH`]).
    pub key: String,
    /// The raw query string.
    pub query: String,
    pub content_length: Option<u64>,
    /// `x-amz-checksum-sha256`, if sent.
    pub checksum: Option<String>,
    /// Every `x-amz-meta-*` header sent, by name without the prefix.
    pub metadata: BTreeMap<String, String>,
}

/// A PUT the server signed: receive exactly `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPut {
    pub key: String,
    pub size: u64,
    pub sha256: Option<[u8; 32]>,
    pub metadata: BTreeMap<String, String>,
}

/// Why a PUT is refused, before its body is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadRefused {
    #[error("{0} is not an upload key")]
    NotAnUpload(String),
    #[error("the URL lacks {0}: use the URL POST /v1/uploads answered, unchanged")]
    MissingParameter(&'static str),
    #[error("the upload URL expired at {0}; ask POST /v1/uploads for a new one")]
    Expired(String),
    #[error("Content-Length is required (the upload is signed for an exact length)")]
    LengthRequired,
    #[error("x-amz-checksum-sha256 is not the base64 of 32 bytes")]
    BadChecksum,
    #[error("the signature does not match: this server did not issue this URL with these headers (length, checksum, metadata)")]
    BadSignature,
}

impl UploadRefused {
    /// The HTTP status the local server answers with.
    pub fn status(&self) -> u16 {
        match self {
            UploadRefused::LengthRequired => 411,
            UploadRefused::NotAnUpload(_) => 404,
            UploadRefused::MissingParameter(_) | UploadRefused::BadChecksum => 400,
            UploadRefused::Expired(_) | UploadRefused::BadSignature => 403,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            UploadRefused::NotAnUpload(_) => "not_an_upload",
            UploadRefused::MissingParameter(_) => "malformed_upload_url",
            UploadRefused::Expired(_) => "upload_expired",
            UploadRefused::LengthRequired => "length_required",
            UploadRefused::BadChecksum => "bad_checksum",
            UploadRefused::BadSignature => "bad_signature",
        }
    }
}

impl LocalUploads {
    /// A signer for the server at `base_url` with a secret of its own.
    pub fn with_random_secret(base_url: impl Into<String>) -> Self {
        // Two v4 UUIDs: 244 bits from the operating system's generator.
        let mut secret = [0u8; 32];
        secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self::new(base_url, secret)
    }

    pub fn new(base_url: impl Into<String>, secret: [u8; 32]) -> Self {
        LocalUploads {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            secret,
        }
    }

    /// The MAC over everything the URL binds.
    fn mac(
        &self,
        key: &str,
        size: u64,
        expires: i64,
        sha256: Option<&[u8; 32]>,
        metadata: &BTreeMap<String, String>,
    ) -> Hmac<Sha256> {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        let digest = sha256.map(hex::encode).unwrap_or_default();
        mac.update(format!("PUT\n{key}\n{size}\n{expires}\n{digest}").as_bytes());
        for (name, value) in metadata {
            mac.update(format!("\n{name}={value}").as_bytes());
        }
        mac
    }

    /// Checks a PUT against its URL's signature at `now`; the body's exact
    /// length and content are checked while it is received.
    pub fn verify(&self, put: &LocalPut, now: OffsetDateTime) -> Result<VerifiedPut, UploadRefused> {
        if !is_upload_key(&put.key) {
            return Err(UploadRefused::NotAnUpload(put.key.clone()));
        }
        let mut expires = None;
        let mut signature = None;
        for (name, value) in form_pairs(&put.query) {
            match name.as_str() {
                "expires" => expires = value.parse::<i64>().ok(),
                "signature" => signature = hex::decode(value).ok(),
                _ => {}
            }
        }
        let expires = expires.ok_or(UploadRefused::MissingParameter("expires"))?;
        let signature = signature.ok_or(UploadRefused::MissingParameter("signature"))?;
        let size = put.content_length.ok_or(UploadRefused::LengthRequired)?;
        let sha256 = match &put.checksum {
            None => None,
            Some(text) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()
                    .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                    .ok_or(UploadRefused::BadChecksum)?,
            ),
        };
        // `verify_slice` compares in constant time.
        if self
            .mac(&put.key, size, expires, sha256.as_ref(), &put.metadata)
            .verify_slice(&signature)
            .is_err()
        {
            return Err(UploadRefused::BadSignature);
        }
        if now.unix_timestamp() > expires {
            let at = OffsetDateTime::from_unix_timestamp(expires)
                .map(crate::services::api::rfc3339)
                .unwrap_or_else(|_| expires.to_string());
            return Err(UploadRefused::Expired(at));
        }
        Ok(VerifiedPut {
            key: put.key.clone(),
            size,
            sha256,
            metadata: put.metadata.clone(),
        })
    }
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

#[async_trait]
impl UploadSigner for LocalUploads {
    async fn presign_put(&self, put: &PutToSign) -> Result<SignedPut, BoxError> {
        let expires = (put.now + put.expires_in).unix_timestamp();
        let signature = self
            .mac(&put.key, put.size, expires, put.sha256.as_ref(), &put.metadata)
            .finalize()
            .into_bytes();
        let mut headers: BTreeMap<String, String> = put
            .metadata
            .iter()
            .map(|(name, value)| (format!("{METADATA_HEADER_PREFIX}{name}"), value.clone()))
            .collect();
        headers.insert("content-length".to_owned(), put.size.to_string());
        if let Some(digest) = put.sha256 {
            headers.insert(
                CHECKSUM_HEADER.to_owned(),
                base64::engine::general_purpose::STANDARD.encode(digest),
            );
        }
        Ok(SignedPut {
            url: format!(
                "{}{LOCAL_UPLOAD_PATH}{}?expires={expires}&signature={}",
                self.base_url,
                put.key,
                hex::encode(signature)
            ),
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn put_to_sign() -> PutToSign {
        PutToSign {
            bucket: "b".into(),
            key: "imports/uploads/u.csv".into(),
            size: 42,
            sha256: Some([7; 32]),
            metadata: BTreeMap::from([("campaign".to_owned(), "spring".to_owned())]),
            now: OffsetDateTime::from_unix_timestamp(1_000_000).unwrap(),
            expires_in: Duration::from_secs(900),
        }
    }

    /// What a client sends for `signed`.
    fn sent(signed: &SignedPut) -> LocalPut {
        let rest = signed.url.split_once(LOCAL_UPLOAD_PATH).unwrap().1;
        let (key, query) = rest.split_once('?').unwrap();
        LocalPut {
            key: key.to_owned(),
            query: query.to_owned(),
            content_length: signed.headers.get("content-length").map(|v| v.parse().unwrap()),
            checksum: signed.headers.get(CHECKSUM_HEADER).cloned(),
            metadata: signed
                .headers
                .iter()
                .filter_map(|(n, v)| Some((n.strip_prefix(METADATA_HEADER_PREFIX)?.to_owned(), v.clone())))
                .collect(),
        }
    }

    async fn signed(uploads: &LocalUploads) -> SignedPut {
        uploads.presign_put(&put_to_sign()).await.unwrap()
    }

    #[tokio::test]
    async fn the_url_it_issued_is_accepted_until_it_expires() {
        let uploads = LocalUploads::new("http://127.0.0.1:3000/", [1; 32]);
        let signed = signed(&uploads).await;
        assert!(signed
            .url
            .starts_with("http://127.0.0.1:3000/local-uploads/imports/uploads/u.csv?expires="));
        let put = sent(&signed);
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let verified = uploads.verify(&put, now + Duration::from_secs(900)).unwrap();
        assert_eq!(verified.size, 42);
        assert_eq!(verified.sha256, Some([7; 32]));
        assert_eq!(verified.metadata["campaign"], "spring");
        assert!(matches!(
            uploads.verify(&put, now + Duration::from_secs(901)),
            Err(UploadRefused::Expired(_))
        ));
    }

    #[tokio::test]
    async fn another_length_header_metadata_or_secret_is_refused() {
        let uploads = LocalUploads::new("http://127.0.0.1:3000", [1; 32]);
        let put = sent(&signed(&uploads).await);
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let refused = |put: &LocalPut| uploads.verify(put, now).unwrap_err();
        assert_eq!(
            refused(&LocalPut {
                content_length: Some(43),
                ..put.clone()
            }),
            UploadRefused::BadSignature
        );
        assert_eq!(
            refused(&LocalPut {
                content_length: None,
                ..put.clone()
            }),
            UploadRefused::LengthRequired
        );
        let mut other_metadata = put.clone();
        other_metadata.metadata.insert("campaign".into(), "autumn".into());
        assert_eq!(refused(&other_metadata), UploadRefused::BadSignature);
        let mut no_checksum = put.clone();
        no_checksum.checksum = None;
        assert_eq!(refused(&no_checksum), UploadRefused::BadSignature);
        let mut other_key = put.clone();
        other_key.key = "imports/uploads/v.csv".into();
        assert_eq!(refused(&other_key), UploadRefused::BadSignature);
        let mut outside = put.clone();
        outside.key = "imports/other.csv".into();
        assert_eq!(refused(&outside).status(), 404);
        let mut tampered = put.clone();
        tampered.query = tampered.query.replace("expires=", "expires=9");
        assert_eq!(refused(&tampered), UploadRefused::BadSignature);
        let stranger = LocalUploads::new("http://127.0.0.1:3000", [2; 32]);
        assert_eq!(stranger.verify(&put, now).unwrap_err(), UploadRefused::BadSignature);
        let mut unsigned = put.clone();
        unsigned.query = "expires=1".into();
        assert_eq!(refused(&unsigned), UploadRefused::MissingParameter("signature"));
    }
}
