//! Compiles `proto/` with the pure-Rust `protox` compiler (no system `protoc`), generates the
//! tonic/prost code, and writes the encoded descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // `sqlx::migrate!` embeds these files; a build script disables cargo's default tracking.
    println!("cargo:rerun-if-changed=migrations");

    let protos = [
        "proto/gatehouse/v1/auth.proto",
        "proto/gatehouse/v1/profile.proto",
        "proto/gatehouse/v1/token.proto",
        "proto/gatehouse/v1/admin.proto",
    ];
    let fds = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(protos)?
        .file_descriptor_set();

    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("gatehouse_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
