//! `keyward.v1.Admin`: Backup, the store's snapshot streamed as the bytes
//! of a backup file. The snapshot is written to an unnamed temp file
//! first (mode 0600, never linked in a directory, gone when closed), so the
//! writer lock is held only for as long as the store takes to read, never
//! for a slow client. The file goes into the data dir (writable wherever
//! keyward runs: the root file system may be read-only, as in `deploy/`),
//! else the system's temp dir.

use std::pin::Pin;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::error::Error;
use crate::pb::v1::{self as pb, admin_server::Admin};
use crate::service::caller;

/// Bytes per streamed chunk.
pub const BACKUP_CHUNK: usize = 64 * 1024;

/// The Admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    /// Shared engine.
    pub engine: Arc<Engine>,
    /// Where the snapshot's temp file goes first (`--data-dir`).
    pub temp_dir: std::path::PathBuf,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    type BackupStream = ChunkStream;

    async fn backup(
        &self,
        req: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let caller = caller(&self.engine, &req).await?;
        // Refused callers are answered (and audited) before the stream
        // starts; the snapshot itself is taken in the stream's task, out of
        // the per-request deadline.
        self.engine.may_back_up(caller).await?;
        let engine = self.engine.clone();
        let temp_dir = self.temp_dir.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut file = match snapshot(&engine, caller, &temp_dir).await {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; BACKUP_CHUNK];
                let n = match file.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::unavailable(format!("backup temp file: {e}"))))
                            .await;
                        return;
                    }
                };
                buf.truncate(n);
                if tx.send(Ok(pb::BackupChunk { data: buf })).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// The snapshot, written to an unnamed temp file and rewound.
async fn snapshot(
    engine: &Engine,
    caller: u64,
    dir: &std::path::Path,
) -> Result<tokio::fs::File, Status> {
    let temp = |e: std::io::Error| Error::Unavailable(format!("backup temp file: {e}"));
    let file = tempfile::tempfile_in(dir)
        .or_else(|_| tempfile::tempfile())
        .map_err(temp)?;
    let (file, _) = engine.backup(caller, std::io::BufWriter::new(file)).await?;
    let mut file = file.into_inner().map_err(|e| temp(e.into_error()))?;
    std::io::Seek::rewind(&mut file).map_err(temp)?;
    Ok(tokio::fs::File::from_std(file))
}
