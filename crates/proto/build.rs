//! Compiles every file under `proto/` with protox (no protoc needed) and
//! writes the descriptor set that the reflection service serves.

use std::path::{Path, PathBuf};

fn protos(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            protos(root, &p, out)?;
        } else if p.extension().is_some_and(|e| e == "proto") {
            out.push(p.strip_prefix(root).expect("under root").to_string_lossy().into_owned());
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: a build script
    // compiled in another checkout (a target directory shared or copied
    // between worktrees) must still compile this checkout's protos.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let mut files = Vec::new();
    protos(&root, &root, &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed={}", root.display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("duet_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().build_client(true).build_server(true).skip_protoc_run().compile_fds(fds)?;
    Ok(())
}
