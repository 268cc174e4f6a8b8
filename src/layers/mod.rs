//! Layers and their digests: what determines a layer, hashed, so that an existing image with
//! the same digest is reused on every target.

pub mod digest;
mod encode;
mod error;
pub mod key;
pub mod tree;
mod value;

pub use digest::{
    BoxIdentity, Digest, DigestError, DigestInputs, HostEnv, KeptTrust, LayerDigests, VarValue,
    compute, compute_with_transcripts,
};
pub use key::DigestKey;

/// The host variable that, when set, is the digest key.
pub const KEY_ENV: &str = "PIPE_DIGEST_KEY";
