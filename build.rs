//! Generates the gRPC code and the descriptor set for reflection, with the
//! vendored `protoc` so that a fresh machine needs no system protoc.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let include = protoc_bin_vendored::include_path()?;
    let out = PathBuf::from(env::var("OUT_DIR")?);

    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("keyward_descriptor.bin"))
        // Messages that carry a secret get a hand-written, redacted Debug
        // (src/pb.rs).
        .skip_debug([
            "keyward.v1.TokenWithSecret",
            "keyward.v1.AuthorizeRequest",
            "keyward.v1.IntrospectRequest",
            "keyward.v1.ReportLeakRequest",
        ])
        .compile_protos(
            &[PathBuf::from("proto/keyward/v1/keyward.proto")],
            &[PathBuf::from("proto"), include.clone()],
        )?;
    tonic_prost_build::configure()
        .skip_debug(["keyward.store.v1.TokenRecord"])
        .build_client(false)
        .build_server(false)
        .compile_protos(
            &[PathBuf::from("proto/keyward/store/v1/records.proto")],
            &[PathBuf::from("proto"), include.clone()],
        )?;
    tonic_prost_build::configure()
        .extern_path(".keyward.store.v1", "crate::pb::store")
        .compile_protos(
            &[PathBuf::from(
                "proto/keyward/replication/v1/replication.proto",
            )],
            &[PathBuf::from("proto"), include],
        )?;
    // Envoy's ext_authz service, for reflection only (the code comes from
    // envoy-types): its proto and imports are vendored under
    // proto/third_party (see the README there).
    let status = std::process::Command::new(protoc_bin_vendored::protoc_bin_path()?)
        .arg("--include_imports")
        .arg(format!(
            "--descriptor_set_out={}",
            out.join("envoy_authz_descriptor.bin").display()
        ))
        .arg("-Iproto/third_party")
        .arg(format!(
            "-I{}",
            protoc_bin_vendored::include_path()?.display()
        ))
        .arg("envoy/service/auth/v3/external_auth.proto")
        .status()?;
    if !status.success() {
        return Err(format!(
            "protoc failed on envoy/service/auth/v3/external_auth.proto: {status}"
        )
        .into());
    }
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
