//! pipe: one Pipelinefile drives identical provisioning on local Docker or QEMU machines and on
//! EC2 bakes, and promotes the exact image verified in staging to production.
//!
//! The module tree follows the vocabulary of the design: `config` (the Pipelinefile), `layers`
//! (digests), `communicators` and `provisioners` (the one provisioning path), `targets`,
//! `runner` (journaled steps), `ledger`, `ui` and `commands`.

pub mod boxes;
pub mod cli;
pub mod commands;
pub mod communicators;
pub mod config;
pub mod engine;
pub mod error;
pub mod import;
pub mod interrupt;
pub mod layers;
pub mod ledger;
pub mod lint;
pub mod plan;
pub mod process;
pub mod provisioners;
pub mod runner;
pub mod services;
pub mod state;
pub mod targets;
pub mod ui;
