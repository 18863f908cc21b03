//! The JSON documents of an image as import and pull parse them: a
//! docker-archive manifest.json, an image config (diff ids, history), an
//! OCI index.json or image manifest (and docker's manifest lists).
#![no_main]
use layerfs::image::import::fuzz_docker_manifest;
use layerfs::oci::{chain_ids, config_diff_ids, layer_created_by};
use layerfs::registry::manifest::parse_manifest;
use libfuzzer_sys::fuzz_target;

const TYPES: &[&str] = &[
    "",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

fuzz_target!(|data: &[u8]| {
    let _ = fuzz_docker_manifest(data);
    let ct = TYPES[data.first().copied().unwrap_or(0) as usize % TYPES.len()];
    let _ = parse_manifest(data, ct);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(ids) = config_diff_ids(&v) {
            let _ = chain_ids(&ids);
            let _ = layer_created_by(&v, ids.len());
        }
        let _ = layer_created_by(&v, 3);
    }
});
