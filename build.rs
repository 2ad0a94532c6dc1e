//! Compiles `proto/` with the pure-Rust `protox` compiler (no system `protoc`), generates the
//! tonic/prost code, and writes the encoded descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // `sqlx::migrate!` embeds these files; a build script disables cargo's default tracking.
    println!("cargo:rerun-if-changed=migrations");
    test_backends();

    let protos = [
        "proto/gatehouse/v1/auth.proto",
        "proto/gatehouse/v1/profile.proto",
        "proto/gatehouse/v1/token.proto",
        "proto/gatehouse/v1/admin.proto",
        "proto/gatehouse/v1/factor.proto",
    ];
    let fds = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(protos)?
        .file_descriptor_set();

    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("gatehouse_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // prost's codec, but a malformed request is INVALID_ARGUMENT (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::ProtoCodec")
        .compile_fds(fds)?;
    Ok(())
}

/// The integration tests' PostgreSQL and Redis twins are marked ignored, not silently passed,
/// when no server is configured. CI=true keeps them on, so a missing URL fails there.
fn test_backends() {
    const PGBOUNCER: &str = "/usr/sbin/pgbouncer";
    let ci = env::var("CI").is_ok_and(|v| v == "true");
    for (var, cfg) in [("TEST_POSTGRES_URL", "gatehouse_test_postgres"), ("TEST_REDIS_URL", "gatehouse_test_redis")] {
        println!("cargo:rerun-if-env-changed={var}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if ci || env::var_os(var).is_some_and(|v| !v.is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    // The PgBouncer twins start their own pooler in front of TEST_POSTGRES_URL.
    println!("cargo::rustc-check-cfg=cfg(gatehouse_test_pgbouncer)");
    // Debian's package path (not PATH: a changed PATH would rerun this and rebuild the crate).
    let pgbouncer = std::path::Path::new(PGBOUNCER).exists();
    if ci || (pgbouncer && env::var_os("TEST_POSTGRES_URL").is_some_and(|v| !v.is_empty())) {
        println!("cargo::rustc-cfg=gatehouse_test_pgbouncer");
    }
    // The full-disk test mounts a tmpfs, which needs root: without it the test is ignored
    // (and reported so), except under CI, where it must run.
    println!("cargo::rustc-check-cfg=cfg(gatehouse_test_mount)");
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status.lines().any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(2) == Some("0"))
    });
    if ci || root {
        println!("cargo::rustc-cfg=gatehouse_test_mount");
    }
    println!("cargo:rerun-if-env-changed=CI");
}
