//! Layers and their digests: what determines a layer, hashed, so that an existing image with
//! the same digest is reused on every target.

pub mod tree;
