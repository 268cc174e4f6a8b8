//! Names and ports of the machines that serve an environment, the same on every local target.
//!
//! Each service is published on 127.0.0.1 at its host port plus the environment's position
//! among the Pipelinefile's `[env.*]` tables (first = +0), so that dev (`pipe up`), staging and
//! production can run side by side on one machine (8080, 8081, 8082 in the example).

use crate::config::Pipelinefile;
use crate::error::{Error, Result};

/// The serving machine's name for a release in an environment:
/// `pipe-<pipeline>-<env>-<release alias>` (so the old and the new one can exist side by side).
pub fn serving_name(pipeline: &str, env: &str, alias: &str) -> String {
    format!("pipe-{pipeline}-{env}-{alias}")
}

/// A published service: name, port in the machine, port on 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub service: String,
    pub port: u16,
    pub host_port: u16,
}

/// The host ports an environment's serving machine publishes (see the module doc).
pub fn host_ports(pf: &Pipelinefile, env: &str) -> Result<Vec<ServicePort>> {
    let offset = pf.envs.get_index_of(env).unwrap_or(0) as u32;
    let mut out = Vec::new();
    for s in &pf.services {
        if let (Some(port), Some(host)) = (&s.port, s.published_port()) {
            let host_port = u16::try_from(host as u32 + offset).map_err(|_| {
                Error::usage(
                    format!(
                        "service `{}`: host port {host} + {offset} (env `{env}`) is above 65535",
                        s.name.value
                    ),
                    Some("choose a lower host_port".to_string()),
                )
            })?;
            out.push(ServicePort {
                service: s.name.value.clone(),
                port: port.value,
                host_port,
            });
        }
    }
    Ok(out)
}

/// The ports a `pipe up` machine publishes: each service's published port, as declared.
pub fn dev_ports(pf: &Pipelinefile) -> Vec<ServicePort> {
    pf.services
        .iter()
        .filter_map(|s| {
            Some(ServicePort {
                service: s.name.value.clone(),
                port: s.port.as_ref()?.value,
                host_port: s.published_port()?,
            })
        })
        .collect()
}
