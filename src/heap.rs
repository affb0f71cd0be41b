//! Giving freed heap memory back to the operating system after bulk work.
//!
//! Loading a million tokens (a state file, a snapshot, a start) decodes
//! every record into short-lived buffers; glibc keeps the freed memory in
//! its arenas, so a follower's resident size would stay at its loading
//! peak. [`trim`] returns it after such a load (a few ms; never on the hot
//! path).
//!
//! Part of the vocabulary (layer L0).

/// Returns the heap's free memory to the OS (glibc's `malloc_trim`; a
/// no-op elsewhere). Called after bulk loads, off the hot path.
#[allow(unsafe_code)]
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the allocator's own
    // arenas; it is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
