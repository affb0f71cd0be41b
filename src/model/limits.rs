//! Limits on every input (names, ids, grants, batches, pages, tokens,
//! expiry), shared by every surface. Imports nothing.

/// Longest display name, in characters.
pub const NAME_MAX: usize = 100;
/// Longest resource id, in bytes.
pub const RESOURCE_ID_MAX: usize = 100;
/// Most grants on one token.
pub const GRANTS_MAX: usize = 100;
/// Most checks in one AuthorizeBatch.
pub const BATCH_MAX: usize = 1000;
/// Largest page of a list call.
pub const PAGE_MAX: u32 = 1000;
/// Page size when none is asked for.
pub const PAGE_DEFAULT: u32 = 100;
/// Longest token string accepted anywhere, in bytes.
pub const TOKEN_MAX: usize = 128;
/// Farthest allowed expiry: 5 years (of 365.25 days), in milliseconds.
pub const EXPIRY_MAX_MS: i64 = 1826 * 24 * 3600 * 1000;
