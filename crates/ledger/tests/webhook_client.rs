//! One delivery attempt against a real HTTP receiver on 127.0.0.1, with signatures checked by
//! the reference Python implementation (`standardwebhooks`, from the `deploy/local` venv).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use switchyard_ledger::webhook::client::{AttemptOutcome, WebhookClient, WebhookRequest};
use switchyard_ledger::webhook::guard::SsrfGuard;
use switchyard_ledger::webhook::sign::SigningKeys;
use url::Url;

const VERIFIER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/verify_webhook.py"
);

// Two unrelated keys (32 and 33 bytes).
const OLD_SECRET: &str = "whsec_7t2Jq3Uw0mHnE8e4yQb6v1cZ9xKpR5sLdA3fGhJkLmM=";
const NEW_SECRET: &str = "whsec_Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5";

const BODY: &[u8] = br#"{"type":"job.completed","job_id":"01J0000000000000000000000","n":1}"#;

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn record(&self, uri: &Uri, headers: HeaderMap, body: Bytes) {
        self.received.lock().unwrap().push(Received {
            path: uri.path().to_owned(),
            headers,
            body,
        });
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A receiver on 127.0.0.1:<random port> that records every request it gets.
async fn start_receiver() -> (SocketAddr, Receiver) {
    async fn ok(
        State(r): State<Receiver>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        r.record(&uri, headers, body);
        StatusCode::OK
    }
    async fn status(
        State(r): State<Receiver>,
        Path(code): Path<u16>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> impl IntoResponse {
        r.record(&uri, headers, body);
        (
            StatusCode::from_u16(code).unwrap(),
            "boom: receiver said no",
        )
    }
    async fn redirect(
        State(r): State<Receiver>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> impl IntoResponse {
        r.record(&uri, headers, body);
        (StatusCode::FOUND, [(header::LOCATION, "/target")])
    }
    async fn slow(
        State(r): State<Receiver>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        r.record(&uri, headers, body);
        // The slowness under test, not synchronisation.
        tokio::time::sleep(Duration::from_secs(30)).await;
        StatusCode::OK
    }
    async fn echo(
        State(r): State<Receiver>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> impl IntoResponse {
        let signature = headers
            .get("webhook-signature")
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        r.record(&uri, headers, body);
        (
            StatusCode::BAD_REQUEST,
            format!("unexpected signature {signature}\n"),
        )
    }

    let receiver = Receiver::default();
    let app = Router::new()
        .route("/ok", post(ok))
        .route("/status/{code}", post(status))
        .route("/redirect", post(redirect))
        .route("/target", any(ok))
        .route("/slow", post(slow))
        .route("/echo", post(echo))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, receiver)
}

fn allowing_loopback() -> SsrfGuard {
    SsrfGuard::new(&["127.0.0.1".to_owned()]).unwrap()
}

fn client(timeout: Duration, guard: SsrfGuard) -> WebhookClient {
    WebhookClient::new(timeout, guard).unwrap()
}

fn url(address: SocketAddr, path: &str) -> Url {
    format!("http://{address}{path}").parse().unwrap()
}

async fn send(client: &WebhookClient, url: &Url, keys: Option<&SigningKeys>) -> AttemptOutcome {
    client
        .send(WebhookRequest {
            url,
            msg_id: "msg_2hY9tQ0example",
            timestamp: Utc::now(),
            body: BODY,
            keys,
        })
        .await
}

fn failure(outcome: AttemptOutcome) -> (Option<u16>, String, bool) {
    match outcome {
        AttemptOutcome::Failed {
            status,
            error,
            retryable,
        } => (status, error, retryable),
        AttemptOutcome::Delivered { status } => panic!("expected a failure, got {status}"),
    }
}

/// Whether the `standardwebhooks` package accepts the request for `secret`.
fn reference_verifies(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let Ok(venv) = std::env::var("SWITCHYARD_VENV") else {
        panic!(
            "SWITCHYARD_VENV is not set: run `deploy/local/up.sh && . deploy/local/env.sh` \
             (the signature is checked by the standardwebhooks package in that venv)"
        );
    };
    let header = |name: &str| headers.get(name).map(|value| value.to_str().unwrap());
    let input = serde_json::json!({
        "secret": secret,
        "headers": {
            "webhook-id": header("webhook-id"),
            "webhook-timestamp": header("webhook-timestamp"),
            "webhook-signature": header("webhook-signature"),
        },
        "body_base64": STANDARD.encode(body),
    });
    let mut child = Command::new(format!("{venv}/bin/python"))
        .arg(VERIFIER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{venv}/bin/python: {error}; run deploy/local/up.sh"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    match output.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "the verifier failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

#[tokio::test]
async fn delivers_a_signed_message_the_reference_implementation_accepts() {
    let (address, receiver) = start_receiver().await;
    let keys = SigningKeys::parse(OLD_SECRET).unwrap();
    let before = Utc::now().timestamp();

    let outcome = send(
        &client(Duration::from_secs(10), allowing_loopback()),
        &url(address, "/ok"),
        Some(&keys),
    )
    .await;

    assert_eq!(outcome, AttemptOutcome::Delivered { status: 200 });
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.body.as_ref(), BODY);
    let header = |name: &str| request.headers.get(name).unwrap().to_str().unwrap();
    assert_eq!(header("webhook-id"), "msg_2hY9tQ0example");
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
    assert!((before..=Utc::now().timestamp()).contains(&timestamp));
    assert!(header("webhook-signature").starts_with("v1,"));
    assert_eq!(header("content-type"), "application/json");
    assert!(header("user-agent").starts_with("switchyard-webhooks/"));

    assert!(reference_verifies(OLD_SECRET, &request.headers, BODY));
    let mut tampered = BODY.to_vec();
    tampered[BODY.len() - 2] = b'2';
    assert!(!reference_verifies(OLD_SECRET, &request.headers, &tampered));
    assert!(!reference_verifies(NEW_SECRET, &request.headers, BODY));
}

#[tokio::test]
async fn receivers_that_know_either_key_verify_during_rotation() {
    let (address, receiver) = start_receiver().await;
    let keys = SigningKeys::parse(&format!("{NEW_SECRET} {OLD_SECRET}")).unwrap();

    let outcome = send(
        &client(Duration::from_secs(10), allowing_loopback()),
        &url(address, "/ok"),
        Some(&keys),
    )
    .await;

    assert_eq!(outcome, AttemptOutcome::Delivered { status: 200 });
    let request = &receiver.received()[0];
    let signature = request.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signature.split(' ').count(), 2, "{signature}");
    assert!(reference_verifies(OLD_SECRET, &request.headers, BODY));
    assert!(reference_verifies(NEW_SECRET, &request.headers, BODY));
    assert!(!reference_verifies(
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        &request.headers,
        BODY
    ));
}

#[tokio::test]
async fn sends_unsigned_without_keys() {
    let (address, receiver) = start_receiver().await;

    let outcome = send(
        &client(Duration::from_secs(10), allowing_loopback()),
        &url(address, "/ok"),
        None,
    )
    .await;

    assert_eq!(outcome, AttemptOutcome::Delivered { status: 200 });
    let request = &receiver.received()[0];
    assert!(request.headers.get("webhook-signature").is_none());
    assert!(request.headers.get("webhook-id").is_some());
}

#[tokio::test]
async fn every_non_2xx_answer_is_a_retryable_failure() {
    let (address, receiver) = start_receiver().await;
    let client = client(Duration::from_secs(10), allowing_loopback());

    for code in [500, 503, 429, 404, 400, 401] {
        let outcome = send(&client, &url(address, &format!("/status/{code}")), None).await;
        let (status, error, retryable) = failure(outcome);
        assert_eq!(status, Some(code));
        assert!(retryable, "{code}");
        assert!(error.contains(&code.to_string()), "{error}");
        assert!(error.contains("boom: receiver said no"), "{error}");
    }
    assert_eq!(receiver.received().len(), 6);
}

#[tokio::test]
async fn does_not_follow_redirects() {
    let (address, receiver) = start_receiver().await;

    let outcome = send(
        &client(Duration::from_secs(10), allowing_loopback()),
        &url(address, "/redirect"),
        None,
    )
    .await;

    let (status, error, retryable) = failure(outcome);
    assert_eq!(status, Some(302));
    assert!(retryable);
    assert!(error.contains("redirects are not followed"), "{error}");
    assert!(error.contains("/target"), "{error}");
    let paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/redirect"]);
}

#[tokio::test]
async fn a_slow_receiver_times_out_retryably() {
    let (address, receiver) = start_receiver().await;

    let outcome = send(
        &client(Duration::from_millis(300), allowing_loopback()),
        &url(address, "/slow"),
        None,
    )
    .await;

    let (status, error, retryable) = failure(outcome);
    assert_eq!(status, None);
    assert!(retryable);
    assert!(error.contains("timed out"), "{error}");
    // It did arrive: the timeout is about the answer.
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_connection_refused_is_retryable() {
    // Bound and dropped: nothing listens there any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);

    let outcome = send(
        &client(Duration::from_secs(10), allowing_loopback()),
        &url(address, "/ok"),
        None,
    )
    .await;

    let (status, error, retryable) = failure(outcome);
    assert_eq!(status, None);
    assert!(retryable);
    assert!(error.contains("connect"), "{error}");
    assert!(
        !error.contains("/ok"),
        "the URL stays out of errors: {error}"
    );
}

#[tokio::test]
async fn the_guard_refuses_loopback_without_calling_it() {
    let (address, receiver) = start_receiver().await;
    let client = client(Duration::from_secs(10), SsrfGuard::default());
    let keys = SigningKeys::parse(OLD_SECRET).unwrap();

    // Judged before the request (reqwest resolves no IP literals) and at connect time.
    let literal = url(address, "/ok");
    let by_name: Url = format!("http://localhost:{}/ok", address.port())
        .parse()
        .unwrap();
    for url in [literal, by_name] {
        let (status, error, retryable) = failure(send(&client, &url, Some(&keys)).await);
        assert_eq!(status, None);
        assert!(!retryable, "{error}");
        assert!(error.contains("SSRF"), "{error}");
        assert!(error.contains("loopback"), "{error}");
    }
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn an_allowed_host_name_is_called() {
    let (address, receiver) = start_receiver().await;
    let guard = SsrfGuard::new(&["localhost".to_owned()]).unwrap();
    let by_name: Url = format!("http://localhost:{}/ok", address.port())
        .parse()
        .unwrap();

    let outcome = send(&client(Duration::from_secs(10), guard), &by_name, None).await;

    assert_eq!(outcome, AttemptOutcome::Delivered { status: 200 });
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn errors_never_hold_the_signature() {
    let (address, receiver) = start_receiver().await;
    let keys = SigningKeys::parse(&format!("{NEW_SECRET} {OLD_SECRET}")).unwrap();

    let outcome = send(
        &client(Duration::from_secs(10), allowing_loopback()),
        &url(address, "/echo"),
        Some(&keys),
    )
    .await;

    let (status, error, _) = failure(outcome);
    assert_eq!(status, Some(400));
    assert!(error.contains("unexpected signature"), "{error}");
    let sent = receiver.received()[0].headers["webhook-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    for entry in sent.split(' ') {
        let signature = entry.trim_start_matches("v1,");
        assert!(!error.contains(signature), "{error}");
    }
    for secret in [NEW_SECRET, OLD_SECRET] {
        assert!(
            !error.contains(secret.trim_start_matches("whsec_")),
            "{error}"
        );
    }
}
