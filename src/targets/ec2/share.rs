//! Cross-account promotion: an environment that runs in another AWS account
//! (`account_id`, `role_arn`) gets launch permission on the release's AMI and create-volume
//! permission on each of its snapshots, granted by the account that baked it (which owns
//! them), before a launch template version there names the AMI. Each grant is read back and
//! recorded in the ledger (`share`), per account, as soon as it is made: the permission stays
//! whatever happens to the promotion. The promotion's Auto Scaling, launch template and SSM
//! calls go through `role_arn`, assumed with STS ([`role`]).
//!
//! A KMS-encrypted AMI also needs a grant on its key for that account, which pipe does not
//! make: it warns.

use crate::config::{Ec2Settings, Pipelinefile};
use crate::engine::aws::{AssumedRole, AwsClient};
use crate::error::Result;
use crate::ledger::{Event, Ledger, Release};
use crate::ui::Printer;

/// The role `env`'s promotion calls assume, if it runs in another account; the session name
/// (`pipe-PIPELINE-ENV`, as IAM allows it) says who it is in that account's CloudTrail.
pub fn role(pipeline: &str, env: &str, s: &Ec2Settings) -> Option<AssumedRole> {
    let arn = s.role_arn.clone()?;
    let session_name: String = format!("pipe-{pipeline}-{env}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    Some(AssumedRole { arn, session_name })
}

/// What is missing for `account` to launch `ami`: whether the image lacks its launch
/// permission, and the snapshots that lack their create-volume permission.
struct Missing {
    image: bool,
    snapshots: Vec<String>,
    all_snapshots: Vec<String>,
    encrypted: bool,
}

fn missing(home: &AwsClient, account: &str, ami: &str) -> Result<Missing> {
    let image = home.image(ami)?.ok_or_else(|| {
        crate::error::Error::runtime(
            format!(
                "AMI {ami} is not in {} for the account that bakes, so it cannot be shared",
                home.region()
            ),
            Some(
                "the AMI must be owned by the credentials pipe runs with (not the role's account)"
                    .into(),
            ),
        )
    })?;
    let image_ok = home
        .image_launch_accounts(ami)
        .map_err(super::failed(format_args!(
            "reading the launch permissions of {ami}"
        )))?
        .iter()
        .any(|a| a == account);
    let mut snapshots = Vec::new();
    for snap in &image.snapshots {
        let ok = home
            .snapshot_volume_accounts(snap)
            .map_err(super::failed(format_args!(
                "reading the create-volume permissions of snapshot {snap} of {ami}"
            )))?
            .iter()
            .any(|a| a == account);
        if !ok {
            snapshots.push(snap.clone());
        }
    }
    Ok(Missing {
        image: !image_ok,
        snapshots,
        all_snapshots: image.snapshots,
        encrypted: image.encrypted,
    })
}

/// For `--plan`: what sharing `ami` (or, `None`, the copy the promotion would make) with
/// `account` would do; nothing when the environment runs in the account that bakes.
pub fn plan(client: &AwsClient, account: Option<&str>, ami: Option<&str>) -> Result<Vec<String>> {
    let Some(account) = account else {
        return Ok(Vec::new());
    };
    let role = client.role().unwrap_or("no role");
    let Some(ami) = ami else {
        return Ok(vec![format!(
            "grant account {account} launch permission on the copy and create-volume permission on its snapshots, record it in the ledger; the calls in that account assume {role}"
        )]);
    };
    let m = missing(client.home(), account, ami)?;
    let mut steps = Vec::new();
    if !m.image && m.snapshots.is_empty() {
        steps.push(format!(
            "account {account} may already launch {ami} (launch permission on it and its snapshots {}): nothing to share",
            m.all_snapshots.join(", ")
        ));
    } else {
        steps.push(format!(
            "grant account {account} launch permission on {ami}{} and create-volume permission on snapshots {}, record it in the ledger",
            if m.image { "" } else { " (it has it already)" },
            if m.snapshots.is_empty() {
                "(none missing)".to_string()
            } else {
                m.snapshots.join(", ")
            }
        ));
    }
    if m.encrypted {
        steps.push(format!(
            "{ami} is encrypted: account {account} also needs a grant on its KMS key, which pipe does not make"
        ));
    }
    steps.push(format!(
        "assume {role} for the Auto Scaling, launch template and SSM calls in account {account}"
    ));
    Ok(steps)
}

/// Shares `ami` (in `client`'s region) with `account`, when the environment runs in one:
/// grants what is missing with the credentials of the account that owns it
/// ([`AwsClient::home`]), reads the permissions back, records the grant in the ledger, and
/// warns when the AMI is encrypted.
pub fn grant(
    client: &AwsClient,
    pf: &Pipelinefile,
    env: &str,
    account: Option<&str>,
    release: &Release,
    ami: &str,
    printer: &Printer,
) -> Result<()> {
    let Some(account) = account else {
        return Ok(());
    };
    let home = client.home();
    let m = missing(home, account, ami)?;
    if m.encrypted {
        printer.warn(
            format!(
                "{ami} is encrypted: instances in account {account} start from it only if that account may use its KMS key, which pipe does not grant"
            ),
            Some(format!(
                "grant account {account} kms:Decrypt, kms:DescribeKey, kms:CreateGrant and kms:ReEncrypt* on the key (a customer managed key: AWS's default aws/ebs key cannot be shared); see the README (\"Cross-account promotion\")"
            )),
        );
    }
    if !m.image && m.snapshots.is_empty() {
        printer.info(format!(
            "account {account} may already launch {ami} and use its snapshots"
        ));
        return Ok(());
    }
    if m.image {
        home.grant_image_launch(ami, account)
            .map_err(super::failed(format_args!(
                "granting account {account} launch permission on {ami}"
            )))?;
    }
    for snap in &m.snapshots {
        home.grant_snapshot_volume(snap, account)
            .map_err(super::failed(format_args!(
                "granting account {account} create-volume permission on snapshot {snap} of {ami}"
            )))?;
    }
    let after = missing(home, account, ami)?;
    if after.image || !after.snapshots.is_empty() {
        return Err(crate::error::Error::runtime(
            format!(
                "account {account} still lacks permission on {} after the grant",
                if after.image {
                    ami.to_string()
                } else {
                    format!("snapshots {}", after.snapshots.join(", "))
                }
            ),
            Some("look at the AMI's permissions in the EC2 console (an organization policy may block sharing)".into()),
        ));
    }
    Ledger::of(pf)?.append(
        &crate::ledger::who(),
        Event::Share {
            release: release.id.clone(),
            env: env.to_string(),
            account: account.to_string(),
            region: home.region().to_string(),
            image: ami.to_string(),
            snapshots: m.all_snapshots.clone(),
        },
    )?;
    printer.info(format!(
        "shared {ami} and its snapshots {} with account {account} (recorded in the ledger)",
        m.all_snapshots.join(", ")
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_name_is_one_iam_accepts() {
        let s = Ec2Settings {
            account_id: Some("210987654321".into()),
            role_arn: Some("arn:aws:iam::210987654321:role/pipe-promote".into()),
            ..Ec2Settings::default()
        };
        let r = role("ponyfoo", "production", &s).unwrap();
        assert_eq!(r.arn, "arn:aws:iam::210987654321:role/pipe-promote");
        assert_eq!(r.session_name, "pipe-ponyfoo-production");
        let long = role(&"p".repeat(80), "prod_eu", &s).unwrap();
        assert_eq!(long.session_name.len(), 64);
        assert!(role("p", "e", &Ec2Settings::default()).is_none());
        let odd = role("p", "eu west", &s).unwrap();
        assert_eq!(odd.session_name, "pipe-p-eu-west");
    }
}
