//! Images in and out of the store: import (docker-archive, legacy v1, OCI
//! layout and archive, rootfs tar), export (the merged tree as one tar),
//! save (docker-archive, OCI), commit (a read-write branch as a new layer)
//! and the tar writer they share. The pure parts of image formats
//! (digests, chain ids, references, config fields) are in [`crate::oci`].

pub mod check;
pub mod commit;
pub mod export;
pub mod import;
pub mod tarw;
