//! Generated protobuf and gRPC code, fenced in one module.

/// The public contract, `keyward.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("keyward.v1");

    /// Encoded descriptor set of `keyward.v1`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("keyward_descriptor");
}

/// The records kept in the store, `keyward.store.v1`. Never served.
pub mod store {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("keyward.store.v1");
}
