//! Compiles the vendored Kubernetes `.proto` files (`proto/`) into one descriptor set that
//! `src/api/protobuf` embeds: the API server decodes protobuf request bodies by descriptor.

use std::path::{Path, PathBuf};

fn protos(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("proto/ is readable") {
        let path = entry.expect("proto/ is readable").path();
        if path.is_dir() {
            protos(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}

fn main() {
    let root = Path::new("proto");
    println!("cargo:rerun-if-changed=proto");
    let mut files = Vec::new();
    protos(root, &mut files);
    files.sort();
    let pool = protox::compile(&files, [root]).expect("the vendored protos compile");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(
        out.join("k8s.fds"),
        prost_reflect::prost::Message::encode_to_vec(&pool),
    )
    .expect("OUT_DIR is writable");
}
