//! Generated protobuf and gRPC code, fenced in one module.

/// The public contract, `keyward.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("keyward.v1");

    /// Encoded descriptor set of `keyward.v1`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("keyward_descriptor");
}

/// Encoded descriptor set of Envoy's `envoy.service.auth.v3` (ext_authz
/// `Check`, served on the gRPC port from envoy-types' code), so that
/// reflection lists it and grpcurl can call `Check` without Envoy's protos.
pub const ENVOY_AUTHZ_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("envoy_authz_descriptor");

/// The records kept in the store, `keyward.store.v1`. Never served.
pub mod store {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("keyward.store.v1");
}

/// Primary → follower replication, `keyward.replication.v1`. Internal.
pub mod replication {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("keyward.replication.v1");
}

impl std::fmt::Debug for v1::TokenWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenWithSecret")
            .field("token", &self.token)
            .field("secret", &"REDACTED")
            .finish()
    }
}

impl std::fmt::Debug for v1::AuthorizeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizeRequest")
            .field("token", &"REDACTED")
            .field("resource", &self.resource)
            .field("level", &self.level)
            .field("scope", &self.scope)
            .finish()
    }
}

impl std::fmt::Debug for v1::IntrospectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectRequest")
            .field("token", &"REDACTED")
            .finish()
    }
}

impl std::fmt::Debug for v1::ReportLeakRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportLeakRequest")
            .field("secret", &"REDACTED")
            .field("url", &self.url)
            .finish()
    }
}

impl std::fmt::Debug for store::TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("name", &self.name)
            .field("phc_hash", &"REDACTED")
            .field("verified_digest", &"REDACTED")
            .field("paused", &self.paused)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("grants", &self.grants)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}
