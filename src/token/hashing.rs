//! argon2id hashing and verification on reused memory.
//!
//! Each argon2id call at OWASP cost needs 19 MiB of blocks. Allocated per
//! call, glibc serves them from the calling thread's arena after the first
//! free (its mmap threshold adapts upwards), and every blocking thread that
//! ever hashed keeps its 19 MiB: a burst of hashes left the process at
//! 580-810 MB for good. Here the blocks come from a small pool, are
//! returned after use, and a buffer idle for long is freed; the mmap
//! threshold is fixed once (glibc) so a freed buffer goes back to the
//! kernel instead of an arena.

use std::time::{Duration, Instant};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use parking_lot::Mutex;
use rand::rngs::OsRng;
use subtle::ConstantTimeEq;

/// Buffers kept for reuse: enough for the verifies and hashes that run at
/// once on a small node; more concurrent calls allocate and free their own.
const POOL_MAX: usize = 4;

/// Largest argon2 memory a stored hash may ask for (64 MiB): a hash with a
/// larger cost is refused rather than allowed to take the memory.
const MAX_BLOCKS: usize = 64 * 1024;

/// Allocations at least this large are served by mmap and returned to the
/// kernel on free (glibc would otherwise raise the threshold to the size of
/// the first freed argon2 buffer and keep later ones in its arenas).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 4 << 20;

/// A buffer of argon2 blocks, and when it was last given back.
struct Idle {
    blocks: Vec<Block>,
    since: Instant,
}

static POOL: Mutex<Vec<Idle>> = Mutex::new(Vec::new());

/// Fixes glibc's mmap threshold, once per process.
#[allow(unsafe_code)]
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator tunables; it is safe to
            // call at any time from any thread.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
        });
    }
}

/// Runs `f` on at least `count` zeroed-or-reused blocks. argon2 overwrites
/// every block it reads before reading it, so reused contents never leak
/// into a result; they are wiped before the buffer is pooled anyway.
fn with_blocks<R>(count: usize, f: impl FnOnce(&mut [Block]) -> R) -> R {
    fix_mmap_threshold();
    let reused = {
        let mut pool = POOL.lock();
        pool.iter()
            .position(|b| b.blocks.len() >= count)
            .map(|i| pool.swap_remove(i).blocks)
    };
    let mut blocks = reused.unwrap_or_else(|| vec![Block::default(); count]);
    let result = f(&mut blocks);
    // The blocks hold values derived from a secret: wipe before keeping.
    for b in &mut blocks {
        *b = Block::default();
    }
    let mut pool = POOL.lock();
    if pool.len() < POOL_MAX {
        pool.push(Idle {
            blocks,
            since: Instant::now(),
        });
    }
    result
}

/// Frees pooled buffers unused for `idle` or longer (the server calls this
/// periodically, so memory returns to where it was after a burst).
/// Returns how many were freed.
pub fn trim_argon2_memory(idle: Duration) -> usize {
    let freed = take_idle(&mut POOL.lock(), idle);
    freed.len()
}

/// Takes the buffers idle for `idle` or longer out of `pool` (dropped by
/// the caller, outside the lock).
fn take_idle(pool: &mut Vec<Idle>, idle: Duration) -> Vec<Idle> {
    let (old, keep): (Vec<Idle>, Vec<Idle>) =
        pool.drain(..).partition(|b| b.since.elapsed() >= idle);
    *pool = keep;
    old
}

/// Hashes `secret` with argon2id at OWASP cost (19 MiB, t=2, p=1) into a
/// PHC string. CPU heavy (~30 ms): call from a blocking thread.
pub fn hash_secret(secret: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes)?;
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    with_blocks(params.block_count(), |blocks| {
        argon2.hash_password_into_with_memory(secret, salt_raw, &mut out, blocks)
    })?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out)?),
    };
    Ok(hash.to_string())
}

/// Verifies `secret` against a PHC hash, comparing in constant time. False
/// for anything that is not an argon2 hash keyward could have made.
/// CPU heavy: call from a blocking thread.
pub fn verify_secret(secret: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if params.block_count() > MAX_BLOCKS {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_raw) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    let computed = with_blocks(params.block_count(), |blocks| {
        argon2.hash_password_into_with_memory(secret, salt_raw, &mut out, blocks)
    });
    computed.is_ok() && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pooled path makes the same PHC strings argon2's own API verifies,
    /// and verifies argon2's own strings: nothing changed on disk.
    #[test]
    fn pooled_hashes_match_argon2s_own() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash_secret(b"secret-a").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(Argon2::default()
            .verify_password(b"secret-a", &parsed)
            .is_ok());
        let theirs = Argon2::default()
            .hash_password(b"secret-b", &SaltString::generate(&mut OsRng))
            .expect("hash")
            .to_string();
        assert!(verify_secret(b"secret-b", &theirs));
        assert!(!verify_secret(b"secret-a", &theirs));
        assert!(!verify_secret(b"secret-b", &ours));
        assert!(!verify_secret(b"secret-b", "not a hash"));
    }

    /// At most POOL_MAX buffers are kept, however many calls ran.
    #[test]
    fn the_pool_is_bounded() {
        let phc = hash_secret(b"x").expect("hash");
        let threads: Vec<_> = (0..POOL_MAX + 2)
            .map(|_| {
                let phc = phc.clone();
                std::thread::spawn(move || verify_secret(b"x", &phc))
            })
            .collect();
        for t in threads {
            assert!(t.join().expect("verify thread"));
        }
        assert!(POOL.lock().len() <= POOL_MAX);
    }

    /// Only buffers idle for the given time are taken out.
    #[test]
    fn only_idle_buffers_are_trimmed() {
        let now = Instant::now();
        let old = now.checked_sub(Duration::from_secs(60)).unwrap_or(now);
        let mut pool = vec![
            Idle {
                blocks: vec![Block::default(); 1],
                since: old,
            },
            Idle {
                blocks: vec![Block::default(); 2],
                since: now,
            },
        ];
        let freed = take_idle(&mut pool, Duration::from_secs(30));
        assert_eq!((freed.len(), pool.len()), (1, 1));
        assert_eq!(pool[0].blocks.len(), 2);
    }
}
