//! The gRPC services: thin layers that decode the request, take the caller's
//! credential from metadata, call the engine, and encode the answer.

pub mod accounts;
pub mod audit;
pub mod authorizer;
pub mod resources;
pub mod tokens;

use tonic::metadata::MetadataMap;

/// The caller's credential: `authorization: Bearer <token>` or
/// `api-token: <token>`. Values that are not visible ASCII are ignored (and
/// so read as missing).
pub fn credential(metadata: &MetadataMap) -> Option<&str> {
    if let Some(v) = metadata.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some((scheme, token)) = v.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some(token.trim());
            }
        }
        return Some(v);
    }
    metadata
        .get("api-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}
