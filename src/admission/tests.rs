//! Unit tests of admission: a mock service behind the layer, bodies fed by
//! hand, short deadlines.

use std::collections::BTreeSet;
use std::convert::Infallible;

use http_body_util::BodyExt as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::codegen::Bytes;
use tonic::Code;

use super::*;

/// The mock behind admission: counts calls, and either echoes the body it
/// reads to the end or answers at once without reading it; with `hold`,
/// each call first waits for a permit of it.
#[derive(Clone)]
struct Mock {
    /// Calls that reached it (took their in-flight slot).
    calls: Arc<AtomicUsize>,
    /// Read the whole body and echo it, or answer at once.
    echo: bool,
    /// Calls wait for a permit (one each, kept) before they answer.
    hold: Option<Arc<tokio::sync::Semaphore>>,
}

impl Service<Request<Body>> for Mock {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let echo = self.echo;
        let hold = self.hold.clone();
        Box::pin(async move {
            if let Some(hold) = hold {
                hold.acquire().await.expect("open").forget();
            }
            if !echo {
                return Ok(Response::new(Body::empty()));
            }
            let bytes = req
                .into_body()
                .collect()
                .await
                .expect("a buffered body does not fail")
                .to_bytes();
            Ok(Response::new(Body::new(http_body_util::Full::new(bytes))))
        })
    }
}

/// A request on `path` whose body is what is sent on the returned sender,
/// ending when it is dropped.
fn request(path: &str) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Request<Body>) {
    let (tx, rx) = mpsc::channel(16);
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let req = Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .body(Body::new(body))
        .expect("request");
    (tx, req)
}

fn admission(
    echo: bool,
    max: usize,
    deadline: Duration,
    budget: usize,
) -> (Admission<Mock>, Arc<AtomicUsize>) {
    let limits = Limits {
        max_message: max,
        max_in_flight: 1024,
        request_timeout: Duration::from_secs(60),
        message_deadline: deadline,
        connection_budget: budget,
    };
    let (svc, calls, _) = admission_with(limits, echo, None);
    (svc, calls)
}

/// Admission with `limits` around a mock, its counters recorded by the
/// returned recorder.
fn admission_with(
    limits: Limits,
    echo: bool,
    hold: Option<Arc<tokio::sync::Semaphore>>,
) -> (Admission<Mock>, Arc<AtomicUsize>, PrometheusHandle) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mock = Mock {
        calls: calls.clone(),
        echo,
        hold,
    };
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let layer = metrics::with_local_recorder(&recorder, || AdmissionLayer::new(limits));
    (layer.layer(mock), calls, handle)
}

/// A request on `path` whose body is one whole message, already here.
fn whole_request(path: &str) -> Request<Body> {
    let (tx, req) = request(path);
    tx.try_send(Ok(Bytes::from_static(&[0, 0, 0, 0, 1, 42])))
        .expect("send");
    req
}

/// The value of the refused counter with `reason`, as rendered.
fn refused(handle: &PrometheusHandle, reason: &str) -> u64 {
    let key = format!("keyward_grpc_admission_refused_total{{reason=\"{reason}\"}} ");
    handle
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&key)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (at most 5 s) until `calls` reached the service.
async fn until_calls(calls: &AtomicUsize, n: usize) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while calls.load(Ordering::SeqCst) < n {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the calls reach the service");
}

/// `svc`'s answer to `req`, which must come within 5 s (`when` says why
/// it should).
async fn answer(svc: &mut Admission<Mock>, req: Request<Body>, when: &str) -> Response<Body> {
    tokio::time::timeout(Duration::from_secs(5), svc.call(req))
        .await
        .expect(when)
        .expect("answer")
}

/// The gRPC status of a trailers-only answer (None: a normal answer).
fn status(resp: &Response<Body>) -> Option<Status> {
    Status::from_header_map(resp.headers())
}

const AUTHORIZE: &str = "/keyward.v1.Authorizer/Authorize";

/// A whole message reaches the service, byte for byte, once.
#[tokio::test]
async fn a_whole_message_is_passed_on_unchanged() {
    let (mut svc, calls) = admission(true, 1024, Duration::from_secs(5), 1 << 20);
    let (tx, req) = request(AUTHORIZE);
    let msg: Vec<u8> = [0, 0, 0, 0, 3, 7, 8, 9].into();
    // Split inside the prefix, and sent after the call has started waiting.
    let call = tokio::spawn(svc.call(req));
    tx.send(Ok(Bytes::from(msg[..2].to_vec())))
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(20)).await;
    tx.send(Ok(Bytes::from(msg[2..].to_vec())))
        .await
        .expect("send");
    drop(tx);
    let resp = call.await.expect("join").expect("answer");
    assert!(status(&resp).is_none());
    let echoed = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&echoed[..], &msg[..]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(svc.shared.waiting.lock().is_empty(), "the ledger is empty");
}

/// Headers and no body: DEADLINE_EXCEEDED at the deadline, never a call.
#[tokio::test]
async fn a_stream_without_its_message_is_answered_at_the_deadline() {
    let deadline = Duration::from_millis(100);
    let (mut svc, calls) = admission(true, 1024, deadline, 1 << 20);
    for first in [Vec::new(), vec![0, 0, 0, 0, 50, 1, 2]] {
        let (tx, req) = request(AUTHORIZE);
        if !first.is_empty() {
            tx.send(Ok(Bytes::from(first))).await.expect("send");
        }
        let start = std::time::Instant::now();
        let resp = svc.call(req).await.expect("answer");
        let took = start.elapsed();
        let st = status(&resp).expect("a status");
        assert_eq!(st.code(), Code::DeadlineExceeded, "{st:?}");
        assert!(st.message().contains("did not arrive"), "{st:?}");
        assert!(
            took >= deadline && took < Duration::from_secs(2),
            "{took:?}"
        );
        drop(tx);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(svc.shared.waiting.lock().is_empty(), "the ledger is empty");
}

/// A length prefix over the limit is refused at once, and so is a body
/// longer than one message; neither reaches the service.
#[tokio::test]
async fn oversized_messages_are_refused_without_waiting() {
    let (mut svc, calls) = admission(true, 100, Duration::from_secs(30), 1 << 20);
    let (tx, req) = request(AUTHORIZE);
    tx.send(Ok(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff])))
        .await
        .expect("send");
    let resp = answer(&mut svc, req, "answered without waiting").await;
    assert_eq!(status(&resp).map(|s| s.code()), Some(Code::OutOfRange));
    drop(tx);

    let (tx, req) = request(AUTHORIZE);
    let mut body = vec![0, 0, 0, 0, 50];
    body.extend([0u8; 200]);
    tx.send(Ok(Bytes::from(body))).await.expect("send");
    let resp = answer(&mut svc, req, "answered without waiting").await;
    assert_eq!(status(&resp).map(|s| s.code()), Some(Code::OutOfRange));
    drop(tx);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// Bytes waiting for the rest of their body count against their
/// connection's budget: over it, RESOURCE_EXHAUSTED at once; the first
/// stream still completes, and the ledger empties.
#[tokio::test]
async fn waiting_bytes_are_bounded_per_connection() {
    let (mut svc, calls) = admission(true, 1024, Duration::from_secs(30), 100);
    let part = || {
        let mut b = vec![0, 0, 0, 0, 200];
        b.extend([1u8; 55]);
        Bytes::from(b)
    };
    let (tx1, req1) = request(AUTHORIZE);
    tx1.send(Ok(part())).await.expect("send");
    let first = tokio::spawn(svc.call(req1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(*svc.shared.waiting.lock().get(&None).expect("charged"), 60);

    let (tx2, req2) = request(AUTHORIZE);
    tx2.send(Ok(part())).await.expect("send");
    let resp = answer(&mut svc, req2, "answered without waiting").await;
    assert_eq!(
        status(&resp).map(|s| s.code()),
        Some(Code::ResourceExhausted)
    );
    drop(tx2);

    drop(tx1);
    let resp = first.await.expect("join").expect("answer");
    assert!(status(&resp).is_none(), "the first stream is served");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(svc.shared.waiting.lock().is_empty(), "the ledger is empty");
}

/// A method whose request is a stream reaches its service at once, body
/// unread.
#[tokio::test]
async fn streaming_requests_pass_through_unbuffered() {
    let (mut svc, calls) = admission(false, 1024, Duration::from_millis(50), 1 << 20);
    for path in STREAMING_REQUESTS {
        let (tx, req) = request(path);
        let resp = answer(&mut svc, req, "not buffered").await;
        assert!(status(&resp).is_none(), "{path}");
        drop(tx);
    }
    assert_eq!(calls.load(Ordering::SeqCst), STREAMING_REQUESTS.len());
}

/// [`STREAMING_REQUESTS`] is exactly the client-streaming methods of
/// every descriptor keyward serves (replication has no descriptor set:
/// its one method, Watch, takes a single request).
#[test]
fn streaming_requests_are_every_client_streaming_method() {
    let mut found = BTreeSet::new();
    for set in [
        crate::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ] {
        let set = prost_types::FileDescriptorSet::decode(set).expect("descriptor set");
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    if method.client_streaming() {
                        found.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
    }
    let listed: BTreeSet<String> = STREAMING_REQUESTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(found, listed);
}

/// Limits for the in-flight and deadline tests: two slots, the message
/// deadline out of the way.
fn two_slots(request_timeout: Duration) -> Limits {
    Limits {
        max_message: 1024,
        max_in_flight: 2,
        request_timeout,
        message_deadline: Duration::from_secs(60),
        connection_budget: 1 << 20,
    }
}

/// At the in-flight limit a request is shed at once with tonic's
/// RESOURCE_EXHAUSTED and counted; a slot comes back when its call ends
/// and when its call is dropped (the client went away), and a streaming
/// request takes one too.
#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_shed_at_once() {
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let (mut svc, calls, metrics) = admission_with(
        two_slots(Duration::from_secs(60)),
        false,
        Some(hold.clone()),
    );
    let mut first = tokio::spawn(svc.call(whole_request(AUTHORIZE)));
    let mut second = tokio::spawn(svc.call(whole_request(AUTHORIZE)));
    until_calls(&calls, 2).await;
    assert_eq!(svc.shared.in_flight.load(Ordering::SeqCst), 2);

    let resp = answer(&mut svc, whole_request(AUTHORIZE), "shed without waiting").await;
    let st = status(&resp).expect("a status");
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert_eq!(st.message(), SHED_MESSAGE);
    assert_eq!(refused(&metrics, "in_flight"), 1);
    // Streaming requests count against the limit as well.
    let (_tx, req) = request(STREAMING_REQUESTS[0]);
    let resp = svc.call(req).await.expect("answer");
    assert_eq!(
        status(&resp).map(|s| s.code()),
        Some(Code::ResourceExhausted)
    );
    assert_eq!(refused(&metrics, "in_flight"), 2);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "shed calls never reach the service"
    );

    // A call that ends gives its slot back.
    hold.add_permits(1);
    tokio::time::timeout(Duration::from_secs(5), async {
        tokio::select! {
            r = &mut first => r,
            r = &mut second => r,
        }
    })
    .await
    .expect("a call ends")
    .expect("join")
    .expect("answer");
    assert_eq!(svc.shared.in_flight.load(Ordering::SeqCst), 1);

    // A call dropped while it waits gives its slot back.
    let third = tokio::spawn(svc.call(whole_request(AUTHORIZE)));
    until_calls(&calls, 3).await;
    assert_eq!(svc.shared.in_flight.load(Ordering::SeqCst), 2);
    third.abort();
    let _ = third.await;
    assert_eq!(svc.shared.in_flight.load(Ordering::SeqCst), 1);

    hold.add_permits(8);
    let resp = svc.call(whole_request(AUTHORIZE)).await.expect("answer");
    assert!(status(&resp).is_none(), "served once a slot is free");
    assert_eq!(refused(&metrics, "in_flight"), 2);
}

/// A call still running at the request timeout is answered CANCELLED
/// "Timeout expired" (tonic's `Server::timeout` answer), and its slot is
/// given back; a stalled message under a request timeout shorter than the
/// message deadline gets the same answer, not the message deadline's.
#[tokio::test]
async fn the_request_timeout_cancels_a_slow_call_and_frees_its_slot() {
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let (mut svc, calls, metrics) =
        admission_with(two_slots(Duration::from_millis(100)), false, Some(hold));
    let resp = answer(
        &mut svc,
        whole_request(AUTHORIZE),
        "answered at the request timeout",
    )
    .await;
    let st = status(&resp).expect("a status");
    assert_eq!(
        (st.code(), st.message()),
        (Code::Cancelled, TIMEOUT_MESSAGE)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(svc.shared.in_flight.load(Ordering::SeqCst), 0);

    let (tx, req) = request(AUTHORIZE);
    tx.send(Ok(Bytes::from_static(&[0, 0, 0, 0, 9, 1])))
        .await
        .expect("send");
    let resp = answer(&mut svc, req, "answered at the request timeout").await;
    let st = status(&resp).expect("a status");
    assert_eq!(
        (st.code(), st.message()),
        (Code::Cancelled, TIMEOUT_MESSAGE)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no slot, no call");
    assert_eq!(refused(&metrics, "message_deadline"), 0);
    assert!(svc.shared.waiting.lock().is_empty(), "the ledger is empty");
    drop(tx);
}

/// A call whose message is here and whose service answers at once is
/// answered on its first poll without a timer; one that has to wait arms
/// the request's deadline.
#[tokio::test]
async fn a_call_answered_at_once_arms_no_timer() {
    let (mut svc, _calls, _) = admission_with(two_slots(Duration::from_secs(60)), false, None);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut fut = std::pin::pin!(svc.call(whole_request(AUTHORIZE)));
    let answer = fut.as_mut().poll(&mut cx);
    assert!(
        matches!(&answer, Poll::Ready(Ok(r)) if status(r).is_none()),
        "answered on the first poll"
    );
    assert!(fut.armed == Armed::No && fut.deadline.is_none(), "no timer");
    assert_eq!(svc.shared.in_flight.load(Ordering::SeqCst), 0);

    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let (mut svc, _calls, _) =
        admission_with(two_slots(Duration::from_secs(60)), false, Some(hold));
    let mut fut = std::pin::pin!(svc.call(whole_request(AUTHORIZE)));
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert!(
        fut.armed == Armed::Request && fut.deadline.is_some(),
        "the request's deadline"
    );
    assert_eq!(svc.shared.in_flight.load(Ordering::SeqCst), 1);
}
