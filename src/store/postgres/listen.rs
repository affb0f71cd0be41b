//! `LISTEN keyward_changes` on a connection of its own, outside the pool,
//! to wake a node's sync loop as soon as another node commits. May import
//! what `store` may.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::NoTls;

use super::{chain, db, Tls, CHANNEL};
use crate::store::StoreError;

/// Wakes `notify` on every `NOTIFY keyward_changes`, over a connection of
/// its own; reconnects with backoff until `stop` resolves. The poll in the
/// node's sync loop covers the gaps while it is down.
pub async fn listen(
    config: tokio_postgres::Config,
    tls: Tls,
    notify: Arc<tokio::sync::Notify>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut backoff = Duration::from_millis(100);
    loop {
        let once = async {
            match &tls {
                Tls::Off => listen_once(&config, NoTls, &notify).await,
                Tls::On(t) => listen_once(&config, t.clone(), &notify).await,
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            r = once => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, retry_in = ?backoff, "LISTEN connection failed; polling meanwhile");
                }
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One `LISTEN` connection, until it fails.
async fn listen_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    notify: &tokio::sync::Notify,
) -> Result<(), StoreError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + Unpin + 'static,
{
    let (client, mut connection) = config
        .connect(tls)
        .await
        .map_err(|e| db("listen", chain(&e)))?;
    let driver = async {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                    notify.notify_one();
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return db("listen", e),
                None => return db("listen", "connection closed"),
            }
        }
    };
    let subscribe = async {
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| db("listen", e))?;
        // Whatever was committed while we were not listening.
        notify.notify_one();
        std::future::pending::<Result<(), StoreError>>().await
    };
    tokio::select! {
        e = driver => Err(e),
        r = subscribe => r,
    }
}
