//! Generates the Rust code of `steep.repl.v1` from `proto/steep/repl/v1/repl.proto`
//! (Coordinator) and `raft.proto` (the consensus transport).
//!
//! protoc comes from the `protoc-bin-vendored` crate, never from the system:
//! machines and CI need no apt package, and every build uses the same protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // The well-known types (google/protobuf/timestamp.proto) ship beside it.
    let well_known = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);

    tonic_prost_build::configure()
        // Exported as FILE_DESCRIPTOR_SET for reflection and other stacks.
        .file_descriptor_set_path(out_dir.join("steep_repl_v1_descriptor.bin"))
        .compile_with_config(
            config,
            &[
                PathBuf::from("proto/steep/repl/v1/repl.proto"),
                PathBuf::from("proto/steep/repl/v1/raft.proto"),
            ],
            &[PathBuf::from("proto"), well_known],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
