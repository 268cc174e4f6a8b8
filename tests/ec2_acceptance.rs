//! Opt-in acceptance test in a real AWS account: `PIPE_AWS_ACCEPTANCE=1` (with credentials and
//! `AWS_REGION` in the environment) bakes a tiny pipeline from Debian's newest debian-12 AMI,
//! checks the base and app AMIs and their tags and the release, verifies it again with
//! `pipe verify`, then deregisters what it made and checks that nothing tagged with its
//! pipeline (unique per run) is left: no instance, key pair, security group or AMI.
//!
//! Without `PIPE_AWS_ACCEPTANCE=1` it says why it is skipped and returns before touching
//! anything: it never runs by default and never reaches the network in CI. What it costs and
//! which permissions it needs: the README ("Baking on EC2", acceptance test).
//!
//! `AWS_ENDPOINT_URL` is honoured like everywhere in pipe: pointed at the local EC2
//! (`scripts/local-ec2`) the test runs without an account.

mod common;

use pipe::engine::aws::{AwsClient, AwsSettings, ImageInfo, filter_tags};

/// The tags every layer AMI carries.
const AMI_TAGS: &[&str] = &[
    "pipe:pipeline",
    "pipe:layer",
    "pipe:digest",
    "pipe:env",
    "pipe:git-commit",
    "pipe:parent",
    "Name",
];

const DEBIAN_OWNER: &str = "136693071363";
const DEBIAN_12: &str = "debian-12-amd64-*";

fn pipelinefile(region: &str, instance_type: &str, subnet: Option<&str>) -> String {
    let subnet = subnet
        .map(|s| format!("subnet_id = \"{s}\"\n"))
        .unwrap_or_default();
    format!(
        r#"[pipeline]
name = "@NAME@"

[box]
ec2 = {{ ami_filter = {{ name = "{DEBIAN_12}", owners = ["{DEBIAN_OWNER}"] }} }}

[base]
provision = [ {{ inline = ["echo base-layer > /etc/pipe-acceptance-base"] }} ]

[app]
provision = [ {{ inline = ["cat /etc/pipe-acceptance-base > /etc/pipe-acceptance-app", "echo app-layer >> /etc/pipe-acceptance-app"] }} ]

[verify]
commands = ["grep -qx base-layer /etc/pipe-acceptance-base", "grep -qx app-layer /etc/pipe-acceptance-app"]
timeout = 120

[env.staging]
target = "ec2"
region = "{region}"
instance_type = "{instance_type}"
ssh_username = "admin"
{subnet}"#
    )
}

/// Whatever the test ends like: every AMI tagged with its pipeline deregistered (snapshots
/// too), and `pipe clean` for what a failed run left (instances, key pairs, groups).
struct Cleanup<'a> {
    client: &'a AwsClient,
    project: &'a common::Project,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Ok(images) = self.client.describe_images(
            &["self".into()],
            &filter_tags(&[("pipe:pipeline", &self.project.name)]),
        ) {
            for i in images {
                if let Err(e) = self.client.delete_image(&i.id) {
                    eprintln!("acceptance: could not deregister {}: {e}", i.id);
                }
            }
        }
        let clean = self.project.pipe(&["clean", "--no-progress"]);
        if clean.code != 0 {
            eprintln!("acceptance: pipe clean failed:\n{}", clean.all());
        }
    }
}

fn layer<'a>(images: &'a [ImageInfo], name: &str) -> &'a ImageInfo {
    let found: Vec<&ImageInfo> = images
        .iter()
        .filter(|i| i.tags.get("pipe:layer").map(String::as_str) == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "one {name} AMI: {images:#?}");
    found[0]
}

#[test]
fn bakes_verifies_and_removes_a_tiny_pipeline_in_a_real_account() {
    if std::env::var("PIPE_AWS_ACCEPTANCE").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set PIPE_AWS_ACCEPTANCE=1 (with AWS credentials and AWS_REGION) to bake in a real AWS account; it launches three short-lived instances and makes two AMIs, then removes them (README: acceptance test)"
        );
        return;
    }
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .expect("PIPE_AWS_ACCEPTANCE=1 needs AWS_REGION");
    let instance_type =
        std::env::var("PIPE_AWS_ACCEPTANCE_INSTANCE_TYPE").unwrap_or_else(|_| "t3.micro".into());
    let subnet = std::env::var("PIPE_AWS_ACCEPTANCE_SUBNET").ok();
    let client = AwsClient::connect(&AwsSettings {
        region: Some(region.clone()),
        ..AwsSettings::default()
    })
    .expect("AWS credentials (PIPE_AWS_ACCEPTANCE=1)");

    let p = common::Project::new(
        "acceptance",
        &pipelinefile(&region, &instance_type, subnet.as_deref()),
        &[],
    );
    let _cleanup = Cleanup {
        client: &client,
        project: &p,
    };
    let debian = client
        .newest_image(DEBIAN_12, &[DEBIAN_OWNER.into()])
        .unwrap()
        .expect("Debian's debian-12 AMI in this region");

    let started = std::time::Instant::now();
    let bake = p.pipe(&["bake", "--env", "staging", "--no-progress"]);
    eprintln!("{}", bake.all());
    bake.ok();
    eprintln!("acceptance: bake took {:.0?}", started.elapsed());

    let mine = filter_tags(&[("pipe:pipeline", &p.name)]);
    let images = client.describe_images(&["self".into()], &mine).unwrap();
    assert_eq!(images.len(), 2, "{images:#?}");
    let (base, app) = (layer(&images, "base"), layer(&images, "app"));
    for image in [base, app] {
        assert_eq!(image.state, "available", "{image:#?}");
        for key in AMI_TAGS {
            assert!(image.tags.contains_key(*key), "{} lacks {key}", image.id);
        }
        assert_eq!(image.tags["pipe:pipeline"], p.name);
        assert_eq!(image.tags["pipe:env"], "staging");
        assert!(image.tags["pipe:digest"].starts_with("sha256:"));
        assert!(!image.snapshots.is_empty(), "{image:#?}");
    }
    assert_eq!(
        base.tags["pipe:parent"], debian.id,
        "built from the newest Debian AMI"
    );
    assert_eq!(app.tags["pipe:parent"], base.id);

    let release: serde_json::Value =
        serde_json::from_str(p.ledger_lines().last().expect("a release")).unwrap();
    let release = &release["release"];
    assert_eq!(
        release["artifacts"][format!("ec2:{region}")],
        app.id.as_str(),
        "{release}"
    );
    assert_eq!(release["verify"]["ok"], true, "{release}");

    p.pipe(&["verify", "--no-progress"]).ok();

    // Remove the AMIs (with their snapshots), then nothing of this pipeline may be left.
    for image in &images {
        assert!(client.delete_image(&image.id).unwrap(), "{}", image.id);
    }
    // pipe terminated its instances and waited for them; a terminated instance stays listed
    // for a while.
    let live: Vec<(String, String)> = client
        .instances(&mine)
        .unwrap()
        .into_iter()
        .filter(|i| i.state != "terminated")
        .map(|i| (i.id, i.state))
        .collect();
    assert_eq!(live, vec![], "instances left");
    assert_eq!(client.key_pairs(&mine).unwrap(), vec![], "key pairs left");
    assert_eq!(
        client.security_groups(&mine).unwrap(),
        vec![],
        "security groups left"
    );
    let left: Vec<String> = client
        .describe_images(&["self".into()], &mine)
        .unwrap()
        .into_iter()
        .filter(|i| i.state != "deregistered")
        .map(|i| i.id)
        .collect();
    assert_eq!(left, Vec::<String>::new(), "AMIs left");
}
