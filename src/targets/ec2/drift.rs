//! Drift of an ec2 environment: what the ledger says serves it, against what AWS runs and
//! would launch (the launch template's default version, the version the group names, the SSM
//! parameter, the AMIs of the group's instances), and setups that defeat rollback.

use serde_json::json;

use super::promote::{Rollout, release_ami};
use crate::engine::aws::AwsClient;
use crate::error::Result;
use crate::ledger::Release;
use crate::targets::fleet::FleetStatus;

/// Versions that move by themselves: AWS cannot roll a refresh back to them.
const MOVING: &[&str] = &["$Latest", "$Default"];
/// An image written as an SSM lookup, resolved at launch.
const SSM_IMAGE: &str = "resolve:ssm:";

/// Compares `env` on AWS with the ledger's current release there (`None`: none yet).
pub fn status(
    client: &AwsClient,
    pipeline: &str,
    r: &Rollout,
    current: Option<&Release>,
) -> Result<FleetStatus> {
    let expected = match current {
        Some(rel) => release_ami(client.home(), pipeline, rel)?,
        None => None,
    };
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut drift: Vec<String> = Vec::new();
    let differs = |what: &str, found: &str, drift: &mut Vec<String>| {
        if let Some(want) = &expected
            && found != want
        {
            drift.push(format!(
                "{what} is {found}, the ledger's current release has {want}"
            ));
        }
    };
    rows.push((
        "ledger".into(),
        match (current, &expected) {
            (Some(rel), Some(ami)) => format!("release {} ({ami})", rel.alias),
            (Some(rel), None) => format!("release {} (no AMI in {})", rel.alias, client.region()),
            (None, _) => "nothing promoted yet".into(),
        },
    ));

    // Blue/green: the group to look at is the one of the family that serves.
    let blue_green;
    let r = if r.strategy == crate::config::Strategy::BlueGreen {
        let family = super::bluegreen::family(client, pipeline, r)?;
        let s = super::bluegreen::serving(&family);
        rows.push((
            "groups".into(),
            family
                .iter()
                .map(|g| {
                    format!(
                        "{} ({}, {})",
                        g.name,
                        g.desired,
                        g.tag(crate::engine::aws::switch::TAG_STATE)
                            .unwrap_or("not made by pipe")
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        ));
        for g in &s.launching {
            drift.push(format!(
                "group {} is being brought in by a promotion that has not finished (`pipe rollback` or `pipe clean` undoes it)",
                g.name
            ));
        }
        if s.serving.len() > 1 {
            drift.push(format!(
                "{} groups serve at once: {}",
                s.serving.len(),
                s.serving
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        blue_green = Rollout {
            group: s
                .serving
                .first()
                .map_or_else(|| r.group.clone(), |g| g.name.clone()),
            ..r.clone()
        };
        &blue_green
    } else {
        r
    };
    let group = client.group(&r.group)?;
    let template = client.launch_template(&r.template)?;
    match &template {
        None => drift.push(format!("launch template {} does not exist", r.template)),
        Some(t) => {
            let v = client.template_version(&t.id, &t.default_version.to_string())?;
            let image = v.and_then(|v| v.image).unwrap_or_else(|| "no image".into());
            rows.push((
                "template default".into(),
                format!("{} version {}: {image}", r.template, t.default_version),
            ));
            if image.starts_with(SSM_IMAGE) {
                drift.push(format!(
                    "launch template {} version {} takes its image from SSM ({image}): it is resolved at launch, so AWS cannot roll back to it",
                    r.template, t.default_version
                ));
            } else {
                differs("the launch template's default image", &image, &mut drift);
            }
        }
    }
    match &group {
        None => drift.push(format!("Auto Scaling group {} does not exist", r.group)),
        Some(g) => {
            let version = g
                .template
                .as_ref()
                .and_then(|t| t.version.clone())
                .unwrap_or_else(|| "$Default".into());
            if MOVING.contains(&version.as_str()) {
                drift.push(format!(
                    "group {} runs launch template version {version}: a new version reaches new instances without a refresh, and AWS cannot roll back to it",
                    r.group
                ));
            }
            let image = match (&template, g.template.is_some()) {
                (Some(t), true) => client
                    .template_version(&t.id, &version)?
                    .and_then(|v| v.image),
                _ => None,
            }
            .unwrap_or_else(|| "no image".into());
            rows.push((
                "group".into(),
                format!("{} version {version}: {image}", r.group),
            ));
            if !image.starts_with(SSM_IMAGE) {
                differs("the group's configured image", &image, &mut drift);
            }
            let serving: Vec<String> = g
                .instances
                .iter()
                .filter(|i| i.lifecycle == "InService")
                .map(|i| i.id.clone())
                .collect();
            let images: Vec<(String, String)> = if serving.is_empty() {
                Vec::new()
            } else {
                client
                    .instances(&[("instance-id".to_string(), serving)])?
                    .into_iter()
                    .map(|i| (i.id, i.image))
                    .collect()
            };
            rows.push((
                "instances".into(),
                if images.is_empty() {
                    "none in service".into()
                } else {
                    images
                        .iter()
                        .map(|(id, ami)| format!("{id} {ami}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ));
            for (id, ami) in &images {
                differs(&format!("instance {id}'s AMI"), ami, &mut drift);
            }
        }
    }
    if let Some(p) = &r.ssm_parameter {
        let value = client
            .parameter(p)?
            .map_or_else(|| "not set".to_string(), |p| p.value);
        rows.push(("ssm".into(), format!("{p}: {value}")));
        differs(&format!("SSM parameter {p}"), &value, &mut drift);
    }
    let json = json!({
        "region": client.region(),
        "expected_image": expected,
        "rows": rows.iter().map(|(k, v)| json!({"what": k, "value": v})).collect::<Vec<_>>(),
        "drift": drift,
    });
    Ok(FleetStatus { rows, drift, json })
}
