//! Generates the service protocol messages from `proto/restate/service_protocol/`.
//!
//! Messages only (no gRPC services), so the crate needs `prost` at run time and nothing of tonic.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = root.join("restate/service_protocol/protocol.proto");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        // Payloads (values, parameters, state) stay zero-copy slices of the received frame.
        .bytes(".")
        .compile_protos(std::slice::from_ref(&proto), std::slice::from_ref(&root))?;
    println!("cargo:rerun-if-changed={}", proto.display());
    Ok(())
}
