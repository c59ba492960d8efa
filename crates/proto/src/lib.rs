//! Generated code for lienthong's protobuf contract (`proto/lienthong/v1`).
//!
//! This crate holds no logic: the `.proto` files are the contract that other languages read, and
//! everything here is produced from them at build time by `build.rs`: the messages (prost), the
//! gRPC servers and clients (tonic), and the encoded descriptor set that server reflection serves.

/// Version 1 of the contract: the stored and published events, and the gRPC API (dossier, agency,
/// audit and report services).
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/lienthong.v1.rs"));
}

/// The encoded `FileDescriptorSet` of every file under `proto/` (plus the well-known types they
/// import), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/lienthong_descriptor.bin"));
