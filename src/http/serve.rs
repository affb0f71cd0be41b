//! The HTTP port's accept loop: hyper HTTP/1 connections with a header-read
//! timeout, a cap on open connections that closes the connection idle the
//! longest to make room (a new one waits briefly, then is refused, when
//! every connection is busy), an accept queue deep enough for a burst, a
//! graceful drain on shutdown, and the open-files limit the cap is sized
//! from.
//!
//! With TLS ([`crate::tls`]) each connection's handshake runs in its task,
//! after it took its place under the cap, within
//! [`crate::tls::HTTP_HANDSHAKE_TIMEOUT`]. With client CAs, a connection
//! without a verified client certificate is answered only on the probe
//! paths ([`PROBES`]); anything else is 401.
//!
//! `axum::serve` sets no timer (so hyper's header-read timeout never fires)
//! and accepts connections until the process runs out of file descriptors;
//! then the gRPC port cannot accept either.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Time a client has to send a request's headers, from the moment the
/// connection is ready for them: its start, or the end of the previous
/// response. So it also closes a keep-alive connection idle this long
/// (hyper starts the timer when the connection goes idle).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Most HTTP connections open at once, whatever the open-files limit. The
/// HTTP port serves probes, metrics and the admin REST facades: a few
/// dozen connections in normal use. See [`connection_cap`].
pub const CONNECTIONS_MAX: usize = 512;

/// The HTTP port may use at most this fraction (1/n) of the open-files
/// limit, so the gRPC port, the store and the logs keep the rest.
const FD_SHARE: u64 = 4;

/// Evicted connections allowed to be closing at once; beyond that a new
/// connection waits for them (and is refused after [`ADMIT_WAIT`]). Keeps
/// the HTTP port's file descriptors within the cap plus this.
const CLOSING_MAX: usize = 16;

/// How long a new connection may wait for a place when every open one is
/// busy (or too many are still closing) before it is refused: busy
/// connections finish within milliseconds, and evicted ones close as soon
/// as their task runs.
const ADMIT_WAIT: Duration = Duration::from_millis(100);

/// How long an evicted connection may take to finish a response it is
/// writing before it is dropped.
const EVICT_GRACE: Duration = Duration::from_millis(100);

/// How long shutdown waits for open connections to finish their request.
const DRAIN_MAX: Duration = Duration::from_secs(10);

/// Connections the kernel may hold for us before we accept them. Tokio's
/// `bind` asks for std's 128, which a burst of connections overflows; a
/// dropped SYN costs the client (a probe, say) a 1 s retransmission.
/// (Linux caps it at `net.core.somaxconn`, 4,096 by default.)
const ACCEPT_BACKLOG: i32 = 1024;

/// Connections accepted before the accept loop lets other tasks run.
const ACCEPT_BURST: usize = 8;

/// What a refused connection is told (best effort: it is closed at once).
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 48\r\n\r\n\
{\"error\":\"too many open connections; try again\"}";

/// The paths served to a TLS client without a verified client certificate
/// when client certificates are verified: kubelet's HTTPS probes present
/// none, and these tell only whether keyward serves.
pub const PROBES: [&str; 2] = ["/healthz", "/readyz"];

/// The answer to anything else without a verified client certificate.
const CLIENT_CERT_REQUIRED: &str =
    "{\"error\":\"a client certificate is required (only /healthz and /readyz answer without one)\"}";

/// The process's open-files limit (`RLIMIT_NOFILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit before [`raise_fd_limit`] (the one inherited).
    pub was: u64,
    /// The soft limit now: what the process may open.
    pub soft: u64,
    /// The hard limit: how far the soft limit may be raised.
    pub hard: u64,
}

/// Raises the soft open-files limit to the hard limit, so idle or hostile
/// connections cannot use up the descriptors the gRPC port needs (Linux
/// defaults to a soft limit of 1,024 under a much higher hard one). Returns
/// the limits, or the error that kept them.
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn raise_fd_limit() -> std::io::Result<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let was = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own and pass by pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    // rlim_t is u64 on Linux, but not on every unix.
    #[allow(clippy::useless_conversion)]
    Ok(OpenFiles {
        was: u64::from(was),
        soft: u64::from(limit.rlim_cur),
        hard: u64::from(limit.rlim_max),
    })
}

/// Not on this platform: the limits are left as they are (unknown).
#[cfg(not(unix))]
pub fn raise_fd_limit() -> std::io::Result<OpenFiles> {
    Err(std::io::Error::other("no RLIMIT_NOFILE on this platform"))
}

/// The process's soft open-files limit, if known.
#[allow(unsafe_code)]
fn soft_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own and pass by pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            #[allow(clippy::useless_conversion)]
            return Some(u64::from(limit.rlim_cur));
        }
    }
    None
}

/// The HTTP connection cap under the current open-files limit: a quarter
/// of the soft limit, at most [`CONNECTIONS_MAX`] (256 under the usual
/// 1,024), so at least three quarters stay for the gRPC port.
pub fn connection_cap() -> usize {
    cap_for(soft_fd_limit())
}

/// Raises the open-files limit ([`raise_fd_limit`]), logs the outcome at
/// info, and returns the HTTP connection cap under the limit now in force.
pub fn fd_headroom() -> usize {
    let raised = raise_fd_limit();
    let cap = connection_cap();
    match raised {
        Ok(l) => tracing::info!(
            open_files = l.soft,
            was = l.was,
            hard = l.hard,
            http_connections_max = cap,
            "open-files limit"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            http_connections_max = cap,
            "could not raise the open-files limit"
        ),
    }
    cap
}

fn cap_for(soft: Option<u64>) -> usize {
    let share = soft.map_or(CONNECTIONS_MAX as u64, |s| s / FD_SHARE);
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .clamp(1, CONNECTIONS_MAX)
}

/// Serves `app` on `listener`, at most `cap` connections at once, until
/// `shutdown` resolves; then stops accepting, lets each connection finish
/// its request (at most `DRAIN_MAX`) and returns. With `tls`, connections
/// speak TLS only.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cap: usize,
    tls: Option<Arc<crate::tls::Tls>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    deepen_accept_queue(&listener);
    let registry = Arc::new(Registry::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    let mut failing = false;
    let mut taken = 0usize;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        while tasks.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => {
                failing = false;
                stream
            }
            // The client gave up before we accepted: nothing to do.
            Err(e) if crate::net::is_client_error(&e) => continue,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "HTTP port: cannot accept connections; retrying");
                    failing = true;
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(crate::net::ACCEPT_RETRY) => continue,
                }
            }
        };
        // New connections wait here meanwhile, in the kernel's backlog;
        // a connection closing or going idle wakes us.
        let deadline = tokio::time::Instant::now() + ADMIT_WAIT;
        let admitted = loop {
            if let Some(conn) = registry.admit(cap) {
                break Some(conn);
            }
            if tokio::time::timeout_at(deadline, registry.freed.notified())
                .await
                .is_err()
            {
                break registry.admit(cap);
            }
        };
        match admitted {
            Some(conn) => {
                tasks.spawn(connection(
                    stream,
                    app.clone(),
                    tls.clone(),
                    conn,
                    registry.clone(),
                    stop_rx.clone(),
                ));
            }
            None => {
                registry.refusals.increment(1);
                refuse(stream);
            }
        }
        // A burst of connections is taken a few at a time, between the
        // tasks already waiting (gRPC calls among them), not all ahead.
        taken += 1;
        if taken % ACCEPT_BURST == 0 {
            tokio::task::yield_now().await;
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_MAX, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = tasks.len(),
            "HTTP port: connections still open after {DRAIN_MAX:?}; closing them"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    Ok(())
}

/// Raises the listening socket's backlog to `ACCEPT_BACKLOG` (listen(2)
/// again on a listening socket only changes its backlog).
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn deepen_accept_queue(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a socket this listener owns, already listening.
    if unsafe { libc::listen(listener.as_raw_fd(), ACCEPT_BACKLOG) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "HTTP port: could not deepen the accept queue"
        );
    }
}

#[cfg(not(unix))]
pub fn deepen_accept_queue(_listener: &TcpListener) {}

/// Tells a connection over the cap why, if its socket takes the bytes at
/// once, and closes it.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(REFUSED);
    drop(stream);
}

/// Serves one connection until it ends, is evicted, or the server stops;
/// with `tls`, after its handshake.
async fn connection(
    stream: TcpStream,
    app: Router,
    tls: Option<Arc<crate::tls::Tls>>,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    stop: watch::Receiver<bool>,
) {
    let _leave = Leave {
        registry: registry.clone(),
        conn: conn.clone(),
    };
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return http(stream, app, false, conn, registry, stop).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.http_config());
    let peer = stream.peer_addr().ok();
    let handshake =
        tokio::time::timeout(crate::tls::HTTP_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let mut stopped = stop.clone();
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                crate::tls::handshake_failed("http");
                tracing::debug!(error = %e, peer = ?peer, "HTTP port: TLS handshake failed");
                return;
            }
            Err(_) => {
                crate::tls::handshake_failed("http");
                tracing::debug!(peer = ?peer, "HTTP port: TLS handshake timed out");
                return;
            }
        },
        // Handshaking counts as idle: evicted first, like any idle one.
        _ = conn.evict.notified() => return,
        _ = stopped.wait_for(|s| *s) => return,
    };
    // The verifier refused a bad certificate in the handshake: one
    // presented here chains to the client CAs.
    let probes_only = tls.verifies_clients() && stream.get_ref().1.peer_certificates().is_none();
    http(stream, app, probes_only, conn, registry, stop).await;
}

/// Serves HTTP/1 on one connection (plaintext or TLS); `probes_only`: a
/// client without a verified certificate where one is required gets only
/// the [`PROBES`].
async fn http<IO>(
    io: IO,
    app: Router,
    probes_only: bool,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    mut stop: watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let app = TowerToHyperService::new(app);
    let tracked = conn.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = Busy::start(&tracked, &registry);
        let response = (!probes_only || PROBES.contains(&req.uri().path()))
            .then(|| hyper::service::Service::call(&app, req));
        async move {
            let response = match response {
                Some(response) => response.await,
                None => Ok(client_cert_required()),
            };
            drop(busy);
            response
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let served = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    let (mut finishing, mut evicted) = (false, false);
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended");
                }
                return;
            }
            // An idle connection closes at once; a busy one finishes its
            // request first.
            _ = conn.evict.notified(), if !finishing => {
                served.as_mut().graceful_shutdown();
                finishing = true;
                evicted = true;
                grace.as_mut().reset(tokio::time::Instant::now() + EVICT_GRACE);
            }
            _ = stop.wait_for(|s| *s), if !finishing => {
                served.as_mut().graceful_shutdown();
                finishing = true;
            }
            // Still open after the grace: a request whose headers never
            // ended (hyper waits for them), or a response the client does
            // not read. No handler runs, so drop it.
            _ = &mut grace, if evicted => {
                if conn.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                evicted = false;
            }
        }
    }
}

/// 401 for a request that needs a verified client certificate.
fn client_cert_required() -> axum::response::Response {
    let mut response = axum::response::Response::new(axum::body::Body::from(CLIENT_CERT_REQUIRED));
    *response.status_mut() = hyper::StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

mod registry;

use registry::{Busy, Conn, Leave, Registry};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_three_quarters_of_the_descriptors() {
        assert_eq!(cap_for(Some(1024)), 256);
        assert_eq!(cap_for(Some(1_048_576)), CONNECTIONS_MAX);
        assert_eq!(cap_for(Some(2)), 1);
        assert_eq!(cap_for(None), CONNECTIONS_MAX);
    }
}
