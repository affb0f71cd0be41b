//! The gRPC port's TLS accept loop ([`grpc_incoming`]): TCP accepted in a
//! task, each handshake in a task of its own under
//! [`GRPC_HANDSHAKE_TIMEOUT`] with the config in force, at most
//! [`GRPC_HANDSHAKES_MAX`] in progress (the oldest dropped for a new one),
//! finished connections handed to tonic as [`TlsConn`]s. Imports only
//! `tls` and the accept helpers of `http::serve`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{handshake_failed, Tls, GRPC_HANDSHAKES_MAX, GRPC_HANDSHAKE_TIMEOUT};

/// Finished gRPC handshakes waiting for the server to take them.
const HANDED_OVER_MAX: usize = 128;

/// A gRPC connection whose TLS handshake is done. Tells tonic the TCP
/// addresses, as a plaintext connection does (the admission layer keys
/// on the peer's address).
pub struct TlsConn {
    /// The TLS stream.
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    /// Its TCP addresses.
    info: TcpConnectInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The gRPC port's connections over TLS, for tonic's
/// `serve_with_incoming_shutdown`: a task accepts TCP (no Nagle), runs
/// each handshake in a task of its own under [`GRPC_HANDSHAKE_TIMEOUT`]
/// with the config in force, and hands finished ones over. It stops when
/// `stop` resolves or the server drops the stream.
pub fn grpc_incoming(
    listener: TcpListener,
    tls: Arc<Tls>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(HANDED_OVER_MAX);
    tokio::spawn(accept_grpc(listener, tls, tx, stop));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn accept_grpc(
    listener: TcpListener,
    tls: Arc<Tls>,
    tx: mpsc::Sender<io::Result<TlsConn>>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut handshakes = JoinSet::new();
    // Handshakes in the order they started, to drop the oldest at the cap.
    let mut started: std::collections::VecDeque<tokio::task::AbortHandle> =
        std::collections::VecDeque::new();
    let mut failing = false;
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            _ = tx.closed() => break,
            accepted = listener.accept() => accepted,
        };
        while handshakes.try_join_next().is_some() {}
        let (stream, remote) = match accepted {
            Ok(accepted) => {
                failing = false;
                accepted
            }
            Err(e) if crate::net::is_client_error(&e) => continue,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "gRPC port: cannot accept connections; retrying");
                    failing = true;
                }
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(crate::net::ACCEPT_RETRY) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let info = TcpConnectInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(remote),
        };
        // At the cap, the oldest handshake still in progress makes room.
        while handshakes.len() >= GRPC_HANDSHAKES_MAX {
            let Some(oldest) = started.pop_front() else {
                break;
            };
            if !oldest.is_finished() {
                oldest.abort();
                handshake_failed("grpc");
                break;
            }
        }
        if started.len() > 4 * GRPC_HANDSHAKES_MAX {
            started.retain(|h| !h.is_finished());
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.grpc_config());
        let tx = tx.clone();
        // The deadline covers the hand-over to the server too: a finished
        // connection waits for it at most as long as a handshake may take.
        let handshake = async move {
            let stream = acceptor.accept(stream).await?;
            let _ = tx.send(Ok(TlsConn { stream, info })).await;
            Ok::<(), io::Error>(())
        };
        started.push_back(handshakes.spawn(async move {
            match tokio::time::timeout(GRPC_HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    handshake_failed("grpc");
                    tracing::debug!(error = %e, peer = %remote, "gRPC port: TLS handshake failed");
                }
                Err(_) => {
                    handshake_failed("grpc");
                    tracing::debug!(peer = %remote, "gRPC port: TLS handshake timed out");
                }
            }
        }));
    }
    // Dropping the set aborts the handshakes still running.
}
