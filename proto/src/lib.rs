//! Ledger's gRPC contract, package `ledger.v1`, and the tonic/prost code generated from `ledger/v1/*.proto`;
//! and Loki's push messages (`loki/push.proto`) for the Loki front.

pub mod codec;

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("ledger.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ledger_v1_descriptor");
}

/// Loki's push messages (package `logproto`).
pub mod loki {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("logproto");
}
