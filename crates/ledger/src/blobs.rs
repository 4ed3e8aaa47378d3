//! Blob stores: large inputs and outputs, referenced from messages by uri instead of inlined.
//!
//! - [`S3Blobs`]: objects under a bucket and prefix (`s3://bucket/prefix/key`); reads any
//!   bucket the credentials allow, since producers reference inputs in their own buckets; links
//!   are presigned GET URLs;
//! - [`LocalBlobs`]: files under one directory (`file:///abs/dir/key`), for `switchyard dev`;
//!   reads only under that directory, whatever a message names.
//!
//! Reads take a size cap and refuse a larger blob before downloading it: a reference in a
//! message is untrusted input, and the cap is what keeps it from exhausting memory.

use std::future::Future;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata as _};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use sha2::{Digest as _, Sha256};
use switchyard_core::config::BlobsConfig;
use switchyard_core::contracts::BlobRef;

/// Longest key accepted, S3's limit for a whole object key.
pub const MAX_KEY_BYTES: usize = 1024;

/// Somewhere blobs are written, read back by uri, and handed out as links.
pub trait BlobStore: Clone + Send + Sync + 'static {
    /// Stores `bytes` at `key` (relative, `/`-separated, no `.` or `..` segments), replacing
    /// what was there, so a retried put of the same output changes nothing.
    fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> impl Future<Output = Result<BlobRef, BlobError>> + Send;

    /// The bytes at `uri`, refused with [`BlobError::TooLarge`] past `max_bytes`.
    fn get(
        &self,
        uri: &str,
        max_bytes: u64,
    ) -> impl Future<Output = Result<Vec<u8>, BlobError>> + Send;

    /// A URL that lets whoever holds it read `blob` for about `ttl`.
    fn link(
        &self,
        blob: &BlobRef,
        ttl: Duration,
    ) -> impl Future<Output = Result<String, BlobError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob `{uri}` does not exist")]
    NotFound { uri: String },
    #[error("blob `{uri}` holds {size} bytes or more, over the limit of {limit} bytes")]
    TooLarge { uri: String, size: u64, limit: u64 },
    #[error("blob uri `{uri}` is not usable here: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("blob key `{key}` is invalid: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("blob store config: {0}")]
    Config(String),
    #[error("blob I/O on `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("S3 error on `{uri}`: {message}")]
    Transport { uri: String, message: String },
}

impl BlobError {
    /// Whether trying again may succeed. A missing, oversized or unusable reference stays so;
    /// I/O and the network may recover.
    pub fn is_retryable(&self) -> bool {
        match self {
            BlobError::NotFound { .. }
            | BlobError::TooLarge { .. }
            | BlobError::InvalidUri { .. }
            | BlobError::InvalidKey { .. }
            | BlobError::Config(_) => false,
            BlobError::Io { .. } | BlobError::Transport { .. } => true,
        }
    }
}

/// Objects in S3 under one bucket and prefix.
#[derive(Clone, Debug)]
pub struct S3Blobs {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    prefix: String,
}

impl S3Blobs {
    /// `force_path_style` addresses buckets by path, which S3-compatible stores need.
    pub fn new(
        aws: &aws_config::SdkConfig,
        bucket: impl Into<String>,
        prefix: &str,
        force_path_style: bool,
    ) -> S3Blobs {
        let config = aws_sdk_s3::config::Builder::from(aws)
            .force_path_style(force_path_style)
            .build();
        S3Blobs {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn object_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }
}

impl BlobStore for S3Blobs {
    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<BlobRef, BlobError> {
        check_key(key)?;
        let object_key = self.object_key(key);
        let uri = format!("s3://{}/{object_key}", self.bucket);
        let blob = blob_ref(uri, &bytes, content_type);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|error| transport(&blob.uri, error))?;
        Ok(blob)
    }

    async fn get(&self, uri: &str, max_bytes: u64) -> Result<Vec<u8>, BlobError> {
        let (bucket, key) = match parse_uri(uri)? {
            BlobUri::S3 { bucket, key } => (bucket, key),
            BlobUri::File(_) => return Err(wrong_store(uri, "the S3 blob store reads s3:// uris")),
        };
        let output = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| get_error(uri, error))?;
        let declared = output
            .content_length()
            .and_then(|length| u64::try_from(length).ok());
        if let Some(size) = declared
            && size > max_bytes
        {
            // Dropping the body unread closes the connection instead of downloading it.
            return Err(too_large(uri, size, max_bytes));
        }
        read_stream_capped(output.body, declared, uri, max_bytes).await
    }

    async fn link(&self, blob: &BlobRef, ttl: Duration) -> Result<String, BlobError> {
        let (bucket, key) = match parse_uri(&blob.uri)? {
            BlobUri::S3 { bucket, key } => (bucket, key),
            BlobUri::File(_) => {
                return Err(wrong_store(&blob.uri, "the S3 blob store links s3:// uris"));
            }
        };
        let presigning = PresigningConfig::expires_in(ttl)
            .map_err(|error| BlobError::Config(format!("`blobs.presign_ttl`: {error}")))?;
        let request = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(|error| transport(&blob.uri, error))?;
        Ok(request.uri().to_owned())
    }
}

/// Files under one directory.
#[derive(Clone, Debug)]
pub struct LocalBlobs {
    /// Absolute, with symlinks resolved, so containment checks compare like with like.
    dir: Arc<PathBuf>,
}

impl LocalBlobs {
    /// Creates `dir` if missing. Runs once at startup, so its blocking I/O is harmless.
    pub fn new(dir: &Path) -> Result<LocalBlobs, BlobError> {
        let io = |source| BlobError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let dir = std::fs::canonicalize(dir).map_err(io)?;
        Ok(LocalBlobs { dir: Arc::new(dir) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl BlobStore for LocalBlobs {
    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<BlobRef, BlobError> {
        check_key(key)?;
        let path = self.dir.join(key);
        let uri = file_uri(&path)?;
        let blob = blob_ref(uri, &bytes, content_type);
        let dir = self.dir.clone();
        blocking(path.clone(), move || write_atomically(&dir, &path, &bytes)).await?;
        Ok(blob)
    }

    async fn get(&self, uri: &str, max_bytes: u64) -> Result<Vec<u8>, BlobError> {
        let path = match parse_uri(uri)? {
            BlobUri::File(path) => path,
            BlobUri::S3 { .. } => {
                return Err(wrong_store(uri, "the local blob store reads file:// uris"));
            }
        };
        let dir = self.dir.clone();
        let uri = uri.to_owned();
        blocking(path.clone(), move || {
            read_capped(&dir, &path, &uri, max_bytes)
        })
        .await
    }

    async fn link(&self, blob: &BlobRef, _ttl: Duration) -> Result<String, BlobError> {
        // Whoever can read the directory can read the file; a local uri needs no signature.
        match parse_uri(&blob.uri)? {
            BlobUri::File(_) => Ok(blob.uri.clone()),
            BlobUri::S3 { .. } => Err(wrong_store(
                &blob.uri,
                "the local blob store links file:// uris",
            )),
        }
    }
}

/// The blob store the configuration asks for.
#[derive(Clone, Debug)]
pub enum AnyBlobStore {
    Local(LocalBlobs),
    S3(S3Blobs),
}

impl AnyBlobStore {
    /// `aws` is needed only for S3. A local directory is created if missing.
    pub fn from_config(
        config: &BlobsConfig,
        aws: Option<&aws_config::SdkConfig>,
    ) -> Result<AnyBlobStore, BlobError> {
        match config {
            BlobsConfig::Local { dir, .. } => Ok(AnyBlobStore::Local(LocalBlobs::new(dir)?)),
            BlobsConfig::S3 {
                bucket,
                prefix,
                force_path_style,
                ..
            } => {
                let aws = aws.ok_or_else(|| {
                    BlobError::Config("`blobs.kind = \"s3\"` needs an AWS configuration".to_owned())
                })?;
                Ok(AnyBlobStore::S3(S3Blobs::new(
                    aws,
                    bucket.as_str(),
                    prefix,
                    *force_path_style,
                )))
            }
        }
    }
}

impl BlobStore for AnyBlobStore {
    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<BlobRef, BlobError> {
        match self {
            AnyBlobStore::Local(store) => store.put(key, bytes, content_type).await,
            AnyBlobStore::S3(store) => store.put(key, bytes, content_type).await,
        }
    }

    async fn get(&self, uri: &str, max_bytes: u64) -> Result<Vec<u8>, BlobError> {
        match self {
            AnyBlobStore::Local(store) => store.get(uri, max_bytes).await,
            AnyBlobStore::S3(store) => store.get(uri, max_bytes).await,
        }
    }

    async fn link(&self, blob: &BlobRef, ttl: Duration) -> Result<String, BlobError> {
        match self {
            AnyBlobStore::Local(store) => store.link(blob, ttl).await,
            AnyBlobStore::S3(store) => store.link(blob, ttl).await,
        }
    }
}

/// A blob uri, parsed.
#[derive(Debug, PartialEq, Eq)]
enum BlobUri<'a> {
    /// The key is taken verbatim, not percent-decoded, as S3 keys are written.
    S3 { bucket: &'a str, key: &'a str },
    /// Absolute, with `.` and `..` already resolved by the URL parser.
    File(PathBuf),
}

fn parse_uri(uri: &str) -> Result<BlobUri<'_>, BlobError> {
    let invalid = |reason: &str| BlobError::InvalidUri {
        uri: uri.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(rest) = uri.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| invalid("an s3:// uri needs a key after the bucket"))?;
        if bucket.is_empty() {
            return Err(invalid("an s3:// uri needs a bucket"));
        }
        if key.is_empty() {
            return Err(invalid("an s3:// uri needs a key after the bucket"));
        }
        return Ok(BlobUri::S3 { bucket, key });
    }
    let url = url::Url::parse(uri).map_err(|error| invalid(&error.to_string()))?;
    if url.scheme() != "file" {
        return Err(invalid(&format!(
            "unsupported scheme `{}`; blob uris are s3:// or file://",
            url.scheme()
        )));
    }
    let path = url
        .to_file_path()
        .map_err(|()| invalid("a file:// uri must name an absolute local path"))?;
    Ok(BlobUri::File(path))
}

/// Keys are relative paths of plain segments, so that one key means the same object in S3 and
/// the same file under the local directory, and never a file outside it.
fn check_key(key: &str) -> Result<(), BlobError> {
    let invalid = |reason| {
        Err(BlobError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("it is empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return invalid("it is longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return invalid("it is absolute; keys are relative to the store");
    }
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return invalid("it holds a control character or a backslash");
    }
    for segment in key.split('/') {
        match segment {
            "" => return invalid("it has an empty segment (`//` or a trailing `/`)"),
            "." | ".." => return invalid("it has a `.` or `..` segment"),
            _ => {}
        }
    }
    Ok(())
}

fn blob_ref(uri: String, bytes: &[u8], content_type: &str) -> BlobRef {
    BlobRef {
        uri,
        content_type: content_type.to_owned(),
        size_bytes: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
    }
}

fn file_uri(path: &Path) -> Result<String, BlobError> {
    url::Url::from_file_path(path)
        .map(String::from)
        .map_err(|()| BlobError::Config(format!("`{}` is not absolute", path.display())))
}

fn too_large(uri: &str, size: u64, limit: u64) -> BlobError {
    BlobError::TooLarge {
        uri: uri.to_owned(),
        size,
        limit,
    }
}

fn wrong_store(uri: &str, reason: &str) -> BlobError {
    BlobError::InvalidUri {
        uri: uri.to_owned(),
        reason: reason.to_owned(),
    }
}

fn transport(uri: &str, error: impl std::error::Error) -> BlobError {
    BlobError::Transport {
        uri: uri.to_owned(),
        message: DisplayErrorContext(error).to_string(),
    }
}

fn get_error(
    uri: &str,
    error: aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError>,
) -> BlobError {
    let missing = error
        .as_service_error()
        .is_some_and(|service| service.is_no_such_key() || service.code() == Some("NoSuchBucket"))
        || error.raw_response().map(|raw| raw.status().as_u16()) == Some(404);
    if missing {
        BlobError::NotFound {
            uri: uri.to_owned(),
        }
    } else {
        transport(uri, error)
    }
}

/// Reads `body` to the end, refusing it once more than `max_bytes` arrived, whatever length
/// was declared.
async fn read_stream_capped(
    mut body: ByteStream,
    declared: Option<u64>,
    uri: &str,
    max_bytes: u64,
) -> Result<Vec<u8>, BlobError> {
    // The declared length sizes the allocation only up to the cap.
    let capacity = declared.unwrap_or(0).min(max_bytes);
    let mut bytes = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|error| transport(uri, error))?
    {
        let size = (bytes.len() + chunk.len()) as u64;
        if size > max_bytes {
            return Err(too_large(uri, size, max_bytes));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    path: PathBuf,
    work: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| BlobError::Io {
            path,
            source: io::Error::other(error),
        })?
}

/// Writes `bytes` to `path` so that a reader sees the old file or the whole new one, never a
/// part: a temporary file in the same directory (one filesystem, so the rename is atomic),
/// flushed to disk, then renamed over the target.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), BlobError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BlobError::Io { path, source }
    };
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    // A symlinked directory inside the store could point anywhere.
    let real_parent = std::fs::canonicalize(parent).map_err(io(parent))?;
    if !real_parent.starts_with(dir) {
        return Err(BlobError::Io {
            path: path.to_owned(),
            source: io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the key leads outside the blob directory",
            ),
        });
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = parent.join(format!(".{name}.{}.tmp", ulid::Ulid::new()));
    let written = (|| {
        let mut file = std::fs::File::create_new(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(source) = written {
        // Best effort: the write's own error is the one worth reporting.
        let _ = std::fs::remove_file(&temp);
        return Err(BlobError::Io {
            path: path.to_owned(),
            source,
        });
    }
    // The rename is durable only once the directory entry is.
    #[cfg(unix)]
    std::fs::File::open(parent)
        .and_then(|directory| directory.sync_all())
        .map_err(io(parent))?;
    Ok(())
}

fn read_capped(dir: &Path, path: &Path, uri: &str, max_bytes: u64) -> Result<Vec<u8>, BlobError> {
    let io_error = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound {
            BlobError::NotFound {
                uri: uri.to_owned(),
            }
        } else {
            BlobError::Io {
                path: path.to_owned(),
                source,
            }
        }
    };
    // Lexical checks cannot see symlinks; the resolved path is what must lie inside.
    let real = std::fs::canonicalize(path).map_err(io_error)?;
    if !real.starts_with(dir) {
        return Err(BlobError::InvalidUri {
            uri: uri.to_owned(),
            reason: format!("it lies outside the blob directory `{}`", dir.display()),
        });
    }
    let file = std::fs::File::open(&real).map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    if !metadata.is_file() {
        return Err(BlobError::NotFound {
            uri: uri.to_owned(),
        });
    }
    if metadata.len() > max_bytes {
        return Err(too_large(uri, metadata.len(), max_bytes));
    }
    // The file may grow after the metadata was read; one byte past the cap tells.
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(uri, bytes.len() as u64, max_bytes));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_and_file_uris() {
        assert_eq!(
            parse_uri("s3://inputs/tenant/acme/cat.jpg").unwrap(),
            BlobUri::S3 {
                bucket: "inputs",
                key: "tenant/acme/cat.jpg"
            }
        );
        assert_eq!(
            parse_uri("file:///var/blobs/out/a%20b.json").unwrap(),
            BlobUri::File(PathBuf::from("/var/blobs/out/a b.json"))
        );
        // The URL parser resolves `..`, so containment is checked on the real target.
        assert_eq!(
            parse_uri("file:///var/blobs/../etc/passwd").unwrap(),
            BlobUri::File(PathBuf::from("/var/etc/passwd"))
        );
    }

    #[test]
    fn refuses_unusable_uris() {
        for uri in [
            "s3://bucket",
            "s3://bucket/",
            "s3:///key",
            "https://example.com/a.jpg",
            "ftp://host/a",
            "file://otherhost/a",
            "/var/blobs/a",
            "",
        ] {
            let error = parse_uri(uri).unwrap_err();
            assert!(
                matches!(error, BlobError::InvalidUri { .. }),
                "{uri}: {error}"
            );
        }
        let error = parse_uri("https://example.com/a.jpg").unwrap_err();
        assert!(error.to_string().contains("scheme `https`"), "{error}");
    }

    #[test]
    fn keys_are_plain_relative_paths() {
        for key in [
            "a",
            "outputs/01JDQ3Z4W5X6Y7Z8A9B0C1D2E3.json",
            "a/b.c/d-e_f=g",
        ] {
            check_key(key).unwrap();
        }
        for key in [
            "",
            "/etc/passwd",
            "../up",
            "a/../../b",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a\nb",
            &"k".repeat(MAX_KEY_BYTES + 1),
        ] {
            assert!(
                matches!(check_key(key), Err(BlobError::InvalidKey { .. })),
                "{key:?}"
            );
        }
    }

    #[test]
    fn blob_refs_hash_the_content() {
        let blob = blob_ref("s3://b/k".into(), b"abc", "text/plain");
        assert_eq!(blob.size_bytes, 3);
        assert_eq!(
            blob.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn s3_keys_sit_under_the_prefix() {
        let aws = aws_config::SdkConfig::builder().build();
        for (prefix, expected) in [
            ("", "out/a.json"),
            ("blobs", "blobs/out/a.json"),
            ("/blobs/", "blobs/out/a.json"),
            ("env/blobs", "env/blobs/out/a.json"),
        ] {
            let store = S3Blobs::new(&aws, "bucket", prefix, true);
            assert_eq!(store.object_key("out/a.json"), expected, "{prefix:?}");
        }
    }

    #[tokio::test]
    async fn streams_stop_at_the_cap_whatever_was_declared() {
        let body = || ByteStream::from(vec![7u8; 100]);
        let error = read_stream_capped(body(), None, "s3://b/k", 99)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                BlobError::TooLarge {
                    size: 100,
                    limit: 99,
                    ..
                }
            ),
            "{error:?}"
        );
        let error = read_stream_capped(body(), Some(10), "s3://b/k", 99)
            .await
            .unwrap_err();
        assert!(matches!(error, BlobError::TooLarge { .. }), "{error:?}");
        let bytes = read_stream_capped(body(), Some(100), "s3://b/k", 100)
            .await
            .unwrap();
        assert_eq!(bytes, vec![7u8; 100]);
    }

    #[test]
    fn only_permanent_failures_are_final() {
        assert!(!BlobError::NotFound { uri: "u".into() }.is_retryable());
        assert!(
            BlobError::Transport {
                uri: "u".into(),
                message: "timeout".into()
            }
            .is_retryable()
        );
    }
}
