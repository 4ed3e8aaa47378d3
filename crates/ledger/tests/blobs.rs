//! The blob store behaviour, written once and run over S3 (moto from `deploy/local`) and a
//! local directory, plus what only one of them has: presigned links, reading other buckets,
//! traversal through symlinks.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

use std::time::Duration;

use sha2::{Digest as _, Sha256};
use switchyard_core::config::BlobsConfig;
use switchyard_ledger::blobs::{AnyBlobStore, BlobError, BlobStore, LocalBlobs, S3Blobs};

async fn aws() -> aws_config::SdkConfig {
    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        panic!(
            "AWS_ENDPOINT_URL is not set: run `deploy/local/up.sh && . deploy/local/env.sh` (or scripts/test.sh)"
        );
    }
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// A name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

fn content(len: usize) -> Vec<u8> {
    (0..=255u8).cycle().take(len).collect()
}

/// A store of its own, built through `from_config` as the workers build it.
struct Fixture {
    store: AnyBlobStore,
    /// What precedes the key in the uri `put` answers.
    uri_prefix: String,
    /// A uri of the other store's kind.
    foreign_uri: String,
    cleanup: Cleanup,
}

enum Cleanup {
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
    Local(#[expect(dead_code, reason = "held for its Drop")] tempfile::TempDir),
}

impl Fixture {
    async fn s3() -> Fixture {
        let aws = aws().await;
        // S3 emulators serve buckets by path, not by virtual host.
        let client = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&aws)
                .force_path_style(true)
                .build(),
        );
        let bucket = unique("ledger-blobs");
        client.create_bucket().bucket(&bucket).send().await.unwrap();
        let config = BlobsConfig::S3 {
            bucket: bucket.clone(),
            prefix: "env/blobs/".to_owned(),
            force_path_style: true,
            inline_output_limit_bytes: 64 * 1024,
            presign_ttl: Duration::from_secs(3600),
        };
        let store = AnyBlobStore::from_config(&config, Some(&aws)).unwrap();
        assert!(matches!(store, AnyBlobStore::S3(_)));
        Fixture {
            store,
            uri_prefix: format!("s3://{bucket}/env/blobs/"),
            foreign_uri: "file:///etc/passwd".to_owned(),
            cleanup: Cleanup::S3 { client, bucket },
        }
    }

    async fn local() -> Fixture {
        let temp = tempfile::tempdir().unwrap();
        // A directory that does not exist yet: the store creates it.
        let dir = temp.path().join("nested/blobs");
        let config = BlobsConfig::Local {
            dir: dir.clone(),
            inline_output_limit_bytes: 1024,
        };
        let store = AnyBlobStore::from_config(&config, None).unwrap();
        assert!(matches!(store, AnyBlobStore::Local(_)));
        let real = std::fs::canonicalize(&dir).unwrap();
        Fixture {
            store,
            uri_prefix: format!("{}/", url::Url::from_file_path(&real).unwrap()),
            foreign_uri: "s3://bucket/key".to_owned(),
            cleanup: Cleanup::Local(temp),
        }
    }

    fn uri_of(&self, key: &str) -> String {
        format!("{}{key}", self.uri_prefix)
    }

    async fn finish(self) {
        match self.cleanup {
            Cleanup::S3 { client, bucket } => delete_bucket(&client, &bucket).await,
            Cleanup::Local(_) => {}
        }
    }
}

async fn delete_bucket(client: &aws_sdk_s3::Client, bucket: &str) {
    let listed = client
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    for object in listed.contents() {
        client
            .delete_object()
            .bucket(bucket)
            .key(object.key().unwrap())
            .send()
            .await
            .unwrap();
    }
    client.delete_bucket().bucket(bucket).send().await.unwrap();
}

async fn round_trip(fixture: &Fixture) {
    let store = &fixture.store;
    let bytes = content(300_000);
    let blob = store
        .put("outputs/job.json", bytes.clone(), "application/json")
        .await
        .unwrap();
    assert_eq!(blob.uri, fixture.uri_of("outputs/job.json"));
    assert_eq!(blob.size_bytes, 300_000);
    assert_eq!(blob.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(blob.content_type, "application/json");
    assert_eq!(store.get(&blob.uri, 300_000).await.unwrap(), bytes);

    // A put of the same key replaces, so a redelivered job rewrites its output harmlessly.
    let again = store
        .put("outputs/job.json", b"{}".to_vec(), "application/json")
        .await
        .unwrap();
    assert_eq!(again.uri, blob.uri);
    assert_eq!(store.get(&blob.uri, 10).await.unwrap(), b"{}");

    let empty = store
        .put("outputs/empty", Vec::new(), "text/plain")
        .await
        .unwrap();
    assert_eq!(store.get(&empty.uri, 0).await.unwrap(), b"");
}

async fn refuses_blobs_over_the_cap(fixture: &Fixture) {
    let store = &fixture.store;
    let blob = store
        .put(
            "inputs/big.bin",
            content(100_000),
            "application/octet-stream",
        )
        .await
        .unwrap();
    match store.get(&blob.uri, 99_999).await.unwrap_err() {
        BlobError::TooLarge { uri, size, limit } => {
            assert_eq!(uri, blob.uri);
            assert_eq!((size, limit), (100_000, 99_999));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(store.get(&blob.uri, 100_000).await.unwrap().len(), 100_000);
}

async fn reports_missing_blobs(fixture: &Fixture) {
    let missing = fixture.uri_of("inputs/nope.bin");
    let error = fixture.store.get(&missing, 1024).await.unwrap_err();
    assert!(
        matches!(&error, BlobError::NotFound { uri } if *uri == missing),
        "{missing}: {error:?}"
    );
    assert!(!error.is_retryable());
}

async fn refuses_bad_keys_and_uris(fixture: &Fixture) {
    let store = &fixture.store;
    for key in [
        "../secret",
        "a/../../secret",
        "/etc/passwd",
        "./a",
        "a//b",
        "",
    ] {
        let error = store.put(key, vec![1], "x/y").await.unwrap_err();
        assert!(
            matches!(error, BlobError::InvalidKey { .. }),
            "{key:?}: {error}"
        );
    }
    for uri in [
        fixture.foreign_uri.as_str(),
        "https://example.com/cat.jpg",
        "s3://bucket-only",
        "not a uri",
    ] {
        let error = store.get(uri, 1024).await.unwrap_err();
        assert!(
            matches!(error, BlobError::InvalidUri { .. }),
            "{uri}: {error}"
        );
        assert!(!error.is_retryable());
    }
}

macro_rules! blob_store_suite {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn round_trip() {
                let fixture = Fixture::$name().await;
                super::round_trip(&fixture).await;
                fixture.finish().await;
            }

            #[tokio::test]
            async fn refuses_blobs_over_the_cap() {
                let fixture = Fixture::$name().await;
                super::refuses_blobs_over_the_cap(&fixture).await;
                fixture.finish().await;
            }

            #[tokio::test]
            async fn reports_missing_blobs() {
                let fixture = Fixture::$name().await;
                super::reports_missing_blobs(&fixture).await;
                fixture.finish().await;
            }

            #[tokio::test]
            async fn refuses_bad_keys_and_uris() {
                let fixture = Fixture::$name().await;
                super::refuses_bad_keys_and_uris(&fixture).await;
                fixture.finish().await;
            }
        }
    };
}

blob_store_suite!(s3);
blob_store_suite!(local);

#[tokio::test]
async fn s3_stores_the_content_type_and_reads_other_buckets() {
    let fixture = Fixture::s3().await;
    let Cleanup::S3 { client, bucket } = &fixture.cleanup else {
        unreachable!()
    };
    fixture
        .store
        .put("outputs/a.json", b"{}".to_vec(), "application/json")
        .await
        .unwrap();
    let head = client
        .head_object()
        .bucket(bucket)
        .key("env/blobs/outputs/a.json")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/json"));

    // Producers reference inputs in their own buckets.
    let producer_bucket = unique("ledger-producer");
    client
        .create_bucket()
        .bucket(&producer_bucket)
        .send()
        .await
        .unwrap();
    client
        .put_object()
        .bucket(&producer_bucket)
        .key("cat.jpg")
        .body(b"jpeg bytes".to_vec().into())
        .send()
        .await
        .unwrap();
    let input = format!("s3://{producer_bucket}/cat.jpg");
    assert_eq!(
        fixture.store.get(&input, 1024).await.unwrap(),
        b"jpeg bytes"
    );

    let no_bucket = format!("s3://{}/cat.jpg", unique("ledger-no-such-bucket"));
    let error = fixture.store.get(&no_bucket, 1024).await.unwrap_err();
    assert!(matches!(error, BlobError::NotFound { .. }), "{error:?}");

    delete_bucket(client, &producer_bucket).await;
    fixture.finish().await;
}

#[tokio::test]
async fn s3_links_are_presigned_urls_anyone_can_fetch() {
    let fixture = Fixture::s3().await;
    let store = &fixture.store;
    let bytes = content(5_000);
    let blob = store
        .put(
            "outputs/result.bin",
            bytes.clone(),
            "application/octet-stream",
        )
        .await
        .unwrap();

    let link = store.link(&blob, Duration::from_secs(600)).await.unwrap();
    assert!(link.contains("X-Amz-Signature="), "{link}");
    assert!(link.contains("X-Amz-Expires=600"), "{link}");
    // No AWS client, no credentials: the signature in the URL is the whole authorisation.
    let response = reqwest::get(&link).await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().as_ref(), bytes.as_slice());

    // Longer than SigV4 allows: refused, not silently shortened.
    let error = store
        .link(&blob, Duration::from_secs(8 * 24 * 3600))
        .await
        .unwrap_err();
    assert!(matches!(error, BlobError::Config(_)), "{error}");

    fixture.finish().await;
}

#[tokio::test]
async fn s3_refuses_bad_keys_before_any_request() {
    // No endpoint, region or credentials: a request would fail as something else.
    let aws = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let store = S3Blobs::new(&aws, "bucket", "", true);
    let error = store.put("../x", vec![1], "x/y").await.unwrap_err();
    assert!(matches!(error, BlobError::InvalidKey { .. }), "{error}");
}

#[tokio::test]
async fn s3_needs_an_aws_configuration() {
    let config = BlobsConfig::S3 {
        bucket: "b".into(),
        prefix: String::new(),
        force_path_style: false,
        inline_output_limit_bytes: 1024,
        presign_ttl: Duration::from_secs(60),
    };
    let error = AnyBlobStore::from_config(&config, None).unwrap_err();
    assert!(matches!(error, BlobError::Config(_)), "{error}");
}

#[tokio::test]
async fn local_writes_leave_no_temporary_files_and_links_are_the_uri() {
    let temp = tempfile::tempdir().unwrap();
    let store = LocalBlobs::new(temp.path()).unwrap();
    let blob = store
        .put("outputs/a b.json", content(10), "application/json")
        .await
        .unwrap();
    store
        .put("outputs/a b.json", b"new".to_vec(), "application/json")
        .await
        .unwrap();
    let path = store.dir().join("outputs/a b.json");
    assert_eq!(
        blob.uri,
        url::Url::from_file_path(&path).unwrap().to_string()
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["a b.json"]);

    assert_eq!(
        store.link(&blob, Duration::from_secs(60)).await.unwrap(),
        blob.uri
    );
}

#[tokio::test]
async fn local_reads_only_under_its_directory() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("blobs");
    let store = LocalBlobs::new(&root).unwrap();
    std::fs::write(temp.path().join("secret"), b"secret").unwrap();

    let outside = url::Url::from_file_path(temp.path().join("secret")).unwrap();
    let dotted = format!(
        "{}/../secret",
        url::Url::from_file_path(store.dir()).unwrap()
    );
    for uri in [outside.to_string(), dotted] {
        let error = store.get(&uri, 1024).await.unwrap_err();
        assert!(
            matches!(error, BlobError::InvalidUri { .. }),
            "{uri}: {error}"
        );
    }

    // Symlinks inside the directory lead only as far as the directory reaches.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(temp.path().join("secret"), root.join("link")).unwrap();
        let link = url::Url::from_file_path(store.dir().join("link")).unwrap();
        let error = store.get(link.as_str(), 1024).await.unwrap_err();
        assert!(matches!(error, BlobError::InvalidUri { .. }), "{error}");

        std::os::unix::fs::symlink(temp.path(), root.join("escape")).unwrap();
        let error = store.put("escape/x", vec![1], "x/y").await.unwrap_err();
        assert!(matches!(error, BlobError::Io { .. }), "{error}");
        assert!(!temp.path().join("x").exists());
    }
}
