//! The caller's credential, as every surface reads it: gRPC metadata, the
//! REST facades' headers, ext_authz's request headers and a follower's
//! replication call.
//!
//! Layer L2: depends on nothing in the crate.

use tonic::metadata::MetadataMap;

/// The caller's credential: `authorization: Bearer <token>` or
/// `api-token: <token>`. Values that are not visible ASCII are ignored (and
/// so read as missing).
pub fn credential(metadata: &MetadataMap) -> Option<&str> {
    pick_credential(
        metadata.get("authorization").and_then(|v| v.to_str().ok()),
        metadata.get("api-token").and_then(|v| v.to_str().ok()),
    )
}

/// The credential from the values of the `authorization` and `api-token`
/// headers (gRPC metadata and HTTP alike): `Bearer <token>` (any case), a
/// bare `authorization` value, else `api-token`.
pub fn pick_credential<'a>(
    authorization: Option<&'a str>,
    api_token: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(v) = authorization {
        let v = v.trim();
        if let Some((scheme, token)) = v.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some(token.trim());
            }
        }
        return Some(v);
    }
    api_token.map(str::trim)
}
