//! Variable resolution for one environment.
//!
//! Precedence, lowest to highest: `[vars]`, `[env.NAME].vars`, `PIPE_VAR_<name>`, `--var`.
