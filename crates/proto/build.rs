//! Compiles `proto/lienthong/v1/*.proto` with protox (pure Rust, so no system `protoc` is needed),
//! generates prost messages and tonic servers and clients from the resulting descriptor set, and
//! keeps the encoded descriptor set for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "lienthong/v1/events.proto",
        "lienthong/v1/dossier.proto",
        "lienthong/v1/agency.proto",
        "lienthong/v1/audit.proto",
        "lienthong/v1/report.proto",
        "lienthong/v1/bus.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("lienthong_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
