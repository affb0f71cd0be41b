//! The digest key in a store move: read the source's key file, put it
//! into a sled destination (or check the one there), and tell the operator
//! what the nodes need. Part of `storemove`.

use std::path::Path;

use super::{Location, MoveError};
use crate::token::DigestKey;

/// The key file's key, if the file exists.
pub(super) fn read_key(path: &Path) -> Result<Option<DigestKey>, MoveError> {
    if !path.exists() {
        return Ok(None);
    }
    DigestKey::load_or_create(path, false)
        .map(Some)
        .map_err(|source| MoveError::Io {
            what: format!("digest key file {}", path.display()),
            source,
        })
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        use std::fmt::Write as _;
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// Puts the key into a sled destination (or checks the one there), and
/// says what the operator must do.
pub(super) fn place_key(
    to: &Location,
    key_file: Option<&Path>,
    key: Option<&DigestKey>,
    digests: &[(Vec<u8>, u64)],
) -> Result<String, MoveError> {
    let with: u64 = digests.iter().map(|(_, n)| n).sum();
    let ids: Vec<String> = digests
        .iter()
        .map(|(k, n)| format!("{} ({n} tokens)", hex(k)))
        .collect();
    let made = if digests.is_empty() {
        "no token carries a verified digest yet".to_string()
    } else {
        format!(
            "{with} tokens carry verified digests made with key id {}",
            ids.join(", ")
        )
    };
    let (Some(key), Some(file)) = (key, key_file) else {
        return Ok(format!(
            "digest key: {made}; the source's key file was not found (give --digest-key-file): \
             nodes on the destination must use that same key (--digest-key-file), or each token \
             costs one argon2 verify at its first use"
        ));
    };
    let id = hex(&key.id());
    match to {
        Location::Sled(dir) => {
            let dest = dir.join("digest.key");
            if let Some(there) = read_key(&dest)? {
                if there.id() != key.id() {
                    return Ok(format!(
                        "digest key: WARNING: {} holds another key (id {}) than {} (id {id}); \
                         {made}. Replace it with {} or start the node with --digest-key-file {}",
                        dest.display(),
                        hex(&there.id()),
                        file.display(),
                        file.display(),
                        file.display()
                    ));
                }
            } else {
                std::fs::copy(file, &dest).map_err(|source| MoveError::Io {
                    what: format!("copy the digest key to {}", dest.display()),
                    source,
                })?;
                set_private(&dest)?;
            }
            Ok(format!(
                "digest key: {} (id {id}) is in place as {}; {made}",
                file.display(),
                dest.display()
            ))
        }
        Location::Postgres(_) => Ok(format!(
            "digest key: start every node on the database with --digest-key-file pointing to a \
             copy of {} (id {id}, recorded in the database); {made}",
            file.display()
        )),
    }
}

#[cfg(unix)]
pub(super) fn set_private(path: &Path) -> Result<(), MoveError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        MoveError::Io {
            what: format!("chmod 0600 {}", path.display()),
            source,
        }
    })
}

#[cfg(not(unix))]
pub(super) fn set_private(_: &Path) -> Result<(), MoveError> {
    Ok(())
}
