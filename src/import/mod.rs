//! `pipe import`: a Pipelinefile written from another tool's templates. Only Packer's legacy
//! JSON templates for now ([`packer`]).

pub mod packer;
