//! Backup: a consistent snapshot of this node's store, written as a backup
//! file ([`crate::store::archive`]) for `keyward.v1.Admin/Backup`. Root
//! only, audited. On sled the snapshot is read under the writer lock (no
//! commit lands while it is read; audit events appended meanwhile may or
//! may not be in it); on PostgreSQL it is one REPEATABLE READ snapshot and
//! writers go on.

use std::io::Write;

use super::AuditSubject;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::store::archive::{write_export, Header};
use crate::store::records::Tally;

impl Engine {
    /// Writes a snapshot of the store into `out` for `caller` (root only);
    /// returns what it holds.
    pub async fn backup<W: Write + Send>(&self, caller: u64, out: W) -> Result<(W, Tally)> {
        let result = self.backup_unaudited(caller, out).await;
        self.audit(caller, "Backup", AuditSubject::default(), result, |_| {
            (0, 0)
        })
        .await
    }

    /// Whether `caller` may take a backup here (root, and a node with a
    /// store); a refusal is audited.
    pub async fn may_back_up(&self, caller: u64) -> Result<()> {
        match self.backup_allowed(caller) {
            Ok(()) => Ok(()),
            refused => {
                self.audit(caller, "Backup", AuditSubject::default(), refused, |()| {
                    (0, 0)
                })
                .await
            }
        }
    }

    fn backup_allowed(&self, caller: u64) -> Result<()> {
        {
            let idx = self.view();
            crate::access::Access::of(&idx, caller, self.now_ms())?
                .require_root("back up the store")?;
        }
        if self.follower().is_some() {
            return Err(Error::FailedPrecondition(
                "a follower keeps no store: back up its primary".into(),
            ));
        }
        Ok(())
    }

    async fn backup_unaudited<W: Write + Send>(&self, caller: u64, out: W) -> Result<(W, Tally)> {
        self.backup_allowed(caller)?;
        // sled has no snapshots: keep every commit out while it is read. A
        // shared store's export is one snapshot of its own.
        let _writes = match self.shared() {
            None => Some(self.hold_writes().await),
            Some(_) => None,
        };
        let header = Header {
            created_at_ms: self.now_ms(),
            source: if self.shared().is_some() {
                "postgres"
            } else {
                "sled"
            }
            .into(),
            digest_key_id: self.key().id().to_vec(),
            position: None,
        };
        let failed = |e: crate::store::StoreError| {
            tracing::error!(error = %e, "backup failed");
            Error::Unavailable(format!("the backup could not be taken: {e}"))
        };
        let mut export = self.store().export_all().await.map_err(failed)?;
        write_export(export.as_mut(), &header, out, &mut |_| {})
            .await
            .map_err(failed)
    }
}
