//! Generated code for lienthong's protobuf contract (`proto/lienthong/v1`).
//!
//! This crate holds no logic: the `.proto` files are the contract that other languages read, and
//! everything here is produced from them at build time by `build.rs`.

/// Version 1 of the contract: the stored and published events.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/lienthong.v1.rs"));
}
