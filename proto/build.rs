//! Compiles ledger/v1/*.proto with the protoc that ships inside `protoc-bin-vendored`, so building needs
//! nothing installed and nothing downloaded.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = ["ledger/v1/logs.proto", "ledger/v1/ingest.proto", "ledger/v1/query.proto"].map(PathBuf::from);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        // Requests are scanned for their batch size before prost decodes them.
        .codec_path("crate::codec::BoundedCodec")
        .file_descriptor_set_path(out_dir.join("ledger_v1_descriptor.bin"))
        .compile_with_config(config, &protos, &[PathBuf::from("."), include])?;
    // Loki's push messages: plain prost, no service (the Loki front is HTTP).
    let loki = PathBuf::from("loki/push.proto");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().build_client(false).build_server(false).compile_with_config(
        config,
        std::slice::from_ref(&loki),
        &[PathBuf::from("."), protoc_bin_vendored::include_path()?],
    )?;
    for proto in protos.iter().chain([&loki]) {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    Ok(())
}
