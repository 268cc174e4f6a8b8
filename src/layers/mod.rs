//! Layers and their digests: what determines a layer, hashed, so that an existing image with
//! the same digest is reused on every target.

pub mod digest;
mod encode;
pub mod key;
pub mod tree;

pub use digest::{
    Digest, DigestError, DigestInputs, HostEnv, LayerDigests, VarValue, compute,
    compute_with_transcripts,
};
pub use key::DigestKey;
