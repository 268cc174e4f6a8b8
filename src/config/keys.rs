//! Every key a Pipelinefile table may have, with the type of its value: the one table the
//! parser checks keys against (each section's module in `parse/` takes its list of names from
//! here) and the JSON Schema is generated from (`config::schema`), so the two cannot drift.
//!
//! [`keys!`] declares both views from one list: `NAMES: &[&str]` for the parser's unknown-key
//! checks and did-you-mean hints, and `NAMES_SHAPE: &[Key]` for the schema.

/// The type of a key's value, as the schema states it. The parser checks the values itself
/// (with spans and hints); the schema says the same for editors.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// A string (may hold `{{ ... }}` where the parser reads a template).
    Str,
    /// An integer, at least `min`.
    Int {
        min: i64,
        max: Option<i64>,
    },
    /// A TCP port, 1..=65535.
    Port,
    Bool,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A string, an integer or a boolean (var values).
    Scalar,
    Array(&'static Ty),
    /// A table with exactly these keys.
    Table(&'static [Key]),
    /// A table with free keys whose values are all of this type.
    Map(&'static Ty),
    /// Any of these.
    AnyOf(&'static [Ty]),
    /// One provisioner: a table with exactly one of the kinds' keys (`file`, `shell`,
    /// `inline`, `ansible`) and the settings of that kind.
    Provisioner,
}

/// One key: its name, its value's type and a one-line description (the schema's
/// `description`, which editors show on hover).
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub ty: Ty,
    pub doc: &'static str,
}

/// Declares `$names: &[&str]` and `$shape: &[Key]` from one list of `"key": Ty, "doc"`.
macro_rules! keys {
    ($(#[$meta:meta])* $names:ident, $shape:ident { $($key:literal : $ty:expr, $doc:literal;)* }) => {
        $(#[$meta])*
        pub const $names: &[&str] = &[$($key),*];
        $(#[$meta])*
        pub const $shape: &[Key] = &[$(Key { name: $key, ty: $ty, doc: $doc }),*];
    };
}

/// The target kinds, as `[box]` keys and `target` values.
pub const TARGET_KINDS: &[&str] = &["docker", "qemu", "ec2"];
/// `accel` of a qemu environment.
pub const ACCELS: &[&str] = &["auto", "kvm", "tcg"];
/// `root_volume.type` of an ec2 environment.
pub const VOLUME_TYPES: &[&str] = &["gp3", "gp2", "io1", "io2", "st1", "sc1", "standard"];
/// `strategy` of an ec2 environment.
pub const STRATEGIES: &[&str] = &["refresh", "blue-green"];
/// `ssh_interface` of an ec2 environment.
pub const SSH_INTERFACES: &[&str] = &["public_ip", "private_ip"];

const STR: Ty = Ty::Str;
const STRINGS: Ty = Ty::Array(&Ty::Str);
const BOOL: Ty = Ty::Bool;
const SECONDS: Ty = Ty::Int { min: 1, max: None };
/// Environment variables for a process: names to templates.
const ENV: Ty = Ty::Map(&Ty::Str);

keys!(
    /// The top-level keys of a Pipelinefile.
    SECTIONS, SECTIONS_SHAPE {
        "pipeline": Ty::Table(PIPELINE_SHAPE), "The pipeline: its name and description.";
        "vars": Ty::Map(&Ty::AnyOf(&[Ty::Scalar, Ty::Table(VAR_SHAPE)])), "Variables, used as `{{ vars.NAME }}`: a value, or a table with `value` or `env`.";
        "box": Ty::Table(BOX_KINDS_SHAPE), "The base OS per target kind.";
        "build": Ty::Table(BUILD_SHAPE), "How provisioning reaches the network and whom it trusts.";
        "base": Ty::Table(LAYER_SHAPE), "The base layer (primal): OS packages, runtimes, precached dependencies.";
        "app": Ty::Table(LAYER_SHAPE), "The app layer (carnivore): the application, its config and services.";
        "service": Ty::Array(&Ty::Table(SERVICE_SHAPE)), "Long-running processes the app declares ([[service]]).";
        "verify": Ty::Table(VERIFY_SHAPE), "Checks run on a fresh machine from a baked image.";
        "env": Ty::Map(&Ty::Table(ENV_SHAPE)), "Environments ([env.NAME]): a target, its settings, variable overrides, promotion source.";
        "ledger": Ty::Table(LEDGER_SHAPE), "Where the ledger is kept: `.pipe/` (default) or S3, shared by a team.";
        "notify": Ty::Table(NOTIFY_SHAPE), "Where bakes and promotions are announced.";
    }
);

keys!(
    /// `[ledger]`.
    LEDGER_KEYS, LEDGER_SHAPE {
        "backend": Ty::OneOf(LEDGER_BACKENDS), "`local` (`.pipe/ledger.jsonl`, the default) or `s3`.";
        "bucket": STR, "The S3 bucket of a shared ledger.";
        "prefix": STR, "The key prefix under which its entries live.";
        "region": STR, "The bucket's region.";
        "endpoint_url": STR, "The S3 endpoint to use instead of AWS's.";
    }
);

/// `backend` of `[ledger]`.
pub const LEDGER_BACKENDS: &[&str] = &["local", "s3"];

keys!(
    /// `[notify]`.
    NOTIFY_KEYS, NOTIFY_SHAPE {
        "sns_topic_arn": STR, "An SNS topic that gets a JSON message with the AMI ids after each bake, promotion and rollback.";
    }
);

keys!(
    /// `[pipeline]`.
    PIPELINE_KEYS, PIPELINE_SHAPE {
        "name": STR, "Lowercase letters, digits and `-`: names images, containers and AMIs.";
        "description": STR, "What the pipeline is.";
    }
);

keys!(
    /// A `[vars]` entry written as a table.
    VAR_KEYS, VAR_SHAPE {
        "value": Ty::Scalar, "A fixed value.";
        "env": STR, "Read the value from this host environment variable.";
        "default": Ty::Scalar, "The value when the host variable named by `env` is unset.";
        "sensitive": BOOL, "Never printed, logged, recorded or baked into an image.";
        "description": STR, "What the variable is for.";
    }
);

keys!(
    /// `[box]`: one entry per target kind.
    BOX_KIND_KEYS, BOX_KINDS_SHAPE {
        "docker": Ty::Table(BOX_SHAPE), "The docker box: `{ box = \"debian-12\" }` or `{ image = \"debian:bookworm\" }`.";
        "qemu": Ty::Table(QEMU_BOX_SHAPE), "The qemu box: a recipe, or a cloud image with its checksum.";
        "ec2": Ty::Table(BOX_SHAPE), "The ec2 box: `{ ami = \"ami-...\" }` or `{ ami_filter = { name, owners } }`.";
    }
);

keys!(
    /// A `[box]` entry.
    BOX_KEYS, BOX_SHAPE {
        "box": STR, "A recipe under boxes/ (its file name without `.toml`), built by pipe.";
        "image": STR, "A Docker image, or (qemu) a cloud image URL or path.";
        "ami": STR, "An explicit AMI id (ec2).";
        "ami_filter": Ty::Table(AMI_FILTER_SHAPE), "The newest AMI matching a name pattern from these owners (ec2).";
    }
);

keys!(
    /// A qemu `[box]` entry: it may also pin its downloaded `image` with a checksum.
    QEMU_BOX_KEYS, QEMU_BOX_SHAPE {
        "box": STR, "A recipe under boxes/ (its file name without `.toml`), built by pipe.";
        "image": STR, "A cloud image with cloud-init: an http(s) URL or a path.";
        "ami": STR, "An explicit AMI id (ec2 only).";
        "ami_filter": Ty::Table(AMI_FILTER_SHAPE), "An AMI filter (ec2 only).";
        "checksum": STR, "`sha256:` and the image's 64 hex digits; required for URLs.";
    }
);

keys!(
    /// `ami_filter = { ... }`.
    AMI_FILTER_KEYS, AMI_FILTER_SHAPE {
        "name": STR, "An AMI name pattern, e.g. `debian-12-amd64-*`.";
        "owners": STRINGS, "The AWS accounts that publish the image.";
    }
);

keys!(
    /// `[build]`.
    BUILD_KEYS, BUILD_SHAPE {
        "ca_certificates": STRINGS, "PEM files or folders the build machine trusts while provisioning.";
        "proxy": Ty::AnyOf(&[Ty::OneOf(&["inherit", "none"]), Ty::Table(PROXY_SHAPE)]), "`inherit` (the host's HTTP(S)_PROXY), `none`, or explicit values.";
        "keep_build_trust": BOOL, "Keep the injected certificates and proxy settings in committed layers.";
        "host_paths": STRINGS, "Absolute host paths outside the project that the Pipelinefile may read.";
        "package_cache": BOOL, "Share apt, npm and pip caches kept on the host with build machines (default true).";
    }
);

keys!(
    /// `proxy = { ... }` in `[build]`.
    PROXY_KEYS, PROXY_SHAPE {
        "http": STR, "HTTP_PROXY.";
        "https": STR, "HTTPS_PROXY.";
        "no_proxy": STR, "NO_PROXY.";
    }
);

keys!(
    /// `[base]` and `[app]`.
    LAYER_KEYS, LAYER_SHAPE {
        "precache": Ty::Table(PRECACHE_SHAPE), "Dependency manifests installed into the base layer (only in [base]).";
        "provision": Ty::Array(&Ty::Provisioner), "Provisioners, run in order.";
    }
);

keys!(
    /// `[base].precache`.
    PRECACHE_KEYS, PRECACHE_SHAPE {
        "files": STRINGS, "Dependency manifests, relative to the Pipelinefile.";
        "to": STR, "Folder on the machine they go to, where `run` runs (default /opt/precache).";
        "run": STR, "The install command.";
        "env": ENV, "Environment variables for `run`.";
    }
);

/// The keys that name a provisioner's kind.
pub const PROVISIONER_KINDS: &[&str] = &["file", "shell", "inline", "ansible"];

keys!(
    /// A `file` provisioner.
    FILE_KEYS, FILE_SHAPE {
        "file": STR, "A file or folder relative to the Pipelinefile (a trailing `/` uploads the folder's contents).";
        "to": STR, "Where it goes on the machine.";
        "owner": STR, "The owner of what is uploaded.";
        "restart_only": Ty::AnyOf(&[BOOL, STRINGS]), "`pipe up --watch` syncs its changes (`true`, or those to paths these gitignore-style patterns match) and restarts services without running provisioners again.";
    }
);

keys!(
    /// The settings `shell` and `inline` provisioners share.
    SHELL_SETTINGS, SHELL_SETTINGS_SHAPE {
        "env": ENV, "Environment variables for the script.";
        "run_as": STR, "Run as this user (default root).";
        "workdir": STR, "Working directory on the machine.";
        "retries": Ty::Int { min: 0, max: None }, "How many times to re-run on failure.";
        "valid_exit_codes": Ty::Array(&Ty::Int { min: 0, max: Some(255) }), "Exit codes that count as success (default [0]).";
        "timeout": SECONDS, "Seconds before the script is killed.";
    }
);

/// The kind key of a `shell` provisioner.
pub const SHELL_KEY: Key = Key {
    name: "shell",
    ty: Ty::Str,
    doc: "A script relative to the Pipelinefile.",
};

/// The kind key of an `inline` provisioner.
pub const INLINE_KEY: Key = Key {
    name: "inline",
    ty: STRINGS,
    doc: "Commands run in order by one `sh -e`.",
};

keys!(
    /// An `ansible` provisioner.
    ANSIBLE_KEYS, ANSIBLE_SHAPE {
        "ansible": STR, "A playbook relative to the Pipelinefile; its folder is uploaded and run on the machine.";
        "extra_vars": Ty::Map(&Ty::Str), "Extra variables for the playbook.";
        "env": ENV, "Environment variables for ansible-playbook.";
    }
);

keys!(
    /// `[[service]]`.
    SERVICE_KEYS, SERVICE_SHAPE {
        "name": STR, "The service's name.";
        "command": STR, "The command line that runs it.";
        "user": STR, "User the process runs as (default root).";
        "workdir": STR, "Working directory.";
        "env": ENV, "Environment variables.";
        "port": Ty::Port, "The port it listens on inside the machine.";
        "host_port": Ty::Port, "Port on the host's 127.0.0.1 (default: `port`).";
        "publish": BOOL, "Publish `port` on the host (default true when `port` is set).";
    }
);

keys!(
    /// `[verify]`.
    VERIFY_KEYS, VERIFY_SHAPE {
        "commands": STRINGS, "Shell commands run inside the machine; each must exit 0.";
        "http": Ty::Array(&Ty::Table(HTTP_CHECK_SHAPE)), "HTTP checks made from inside the machine.";
        "timeout": SECONDS, "Seconds to keep retrying until the checks pass (default 60).";
    }
);

keys!(
    /// An HTTP check of `[verify]`.
    HTTP_CHECK_KEYS, HTTP_CHECK_SHAPE {
        "url": STR, "The URL, as seen from inside the machine.";
        "status": Ty::Int { min: 100, max: Some(599) }, "Expected status (default 200).";
        "contains": STR, "Text the body must contain.";
    }
);

keys!(
    /// The keys of `[env.NAME]` every target takes.
    ENV_COMMON_KEYS, ENV_COMMON_SHAPE {
        "target": Ty::OneOf(TARGET_KINDS), "Where it runs: docker, qemu or ec2.";
        "vars": Ty::Map(&Ty::Scalar), "Overrides of [vars] values for this environment.";
        "promote_from": STR, "The environment whose verified releases this one promotes.";
        "min_soak": STR, "How long a release must have been verified before promotion, e.g. \"2h\".";
        "require_approval": BOOL, "A promotion needs `pipe approve` by another user.";
    }
);

keys!(
    /// The keys of a docker environment.
    DOCKER_ENV_KEYS, DOCKER_ENV_SHAPE {
        "container_name": STR, "Container name prefix (default pipe-<pipeline>-<env>).";
    }
);

keys!(
    /// The keys of a qemu environment.
    QEMU_ENV_KEYS, QEMU_ENV_SHAPE {
        "cpus": Ty::Int { min: 1, max: None }, "Virtual CPUs (default 2).";
        "memory": Ty::Int { min: 1, max: None }, "MiB (default 1024).";
        "accel": Ty::OneOf(ACCELS), "`auto` (KVM if it works, else TCG), `kvm` or `tcg`.";
        "disk_size": STR, "Disk size, e.g. \"8G\".";
    }
);

keys!(
    /// Every key an ec2 environment may have.
    EC2_ENV_KEYS, EC2_ENV_SHAPE {
        "region": STR, "The AWS region it bakes in.";
        "instance_type": STR, "The build instances' type.";
        "subnet_id": STR, "The subnet build instances start in.";
        "ssh_username": STR, "The user pipe logs in as.";
        "auto_scaling_group": STR, "The group a promotion refreshes.";
        "launch_template": STR, "The launch template a promotion points at the release's AMI.";
        "ssm_parameter": STR, "An SSM parameter a promotion writes the AMI id to.";
        "endpoint_url": STR, "The EC2 API endpoint to use instead of AWS's.";
        "wait_timeout": SECONDS, "Seconds a wait for an instance or an image may take.";
        "ssh_timeout": SECONDS, "Seconds SSH to a running instance may take to answer (default 300).";
        "security_group_ids": STRINGS, "Security groups build instances join besides pipe's temporary one.";
        "iam_instance_profile": STR, "An instance profile for build instances: a name or an ARN.";
        "associate_public_ip": BOOL, "Give the build instance a public IP (needs `subnet_id`).";
        "root_volume": Ty::Table(ROOT_VOLUME_SHAPE), "The build instance's root volume.";
        "ssh_cidrs": STRINGS, "Where SSH to the build instance may come from (default: this host's /32).";
        "ssh_interface": Ty::OneOf(SSH_INTERFACES), "Which of the instance's addresses pipe connects to.";
        "ssh_host": STR, "Connect to this address instead of the instance's.";
        "ssh_port": Ty::Port, "sshd's port on the instance (default 22).";
        "bastion": Ty::Table(BASTION_SHAPE), "A jump host to reach the instance through.";
        "ami_regions": STRINGS, "Regions the app AMI is copied to after the bake.";
        "region_kms_key_ids": Ty::Map(&Ty::Str), "A KMS key per copy region.";
        "refresh": Ty::Table(REFRESH_SHAPE), "How a promotion's instance refresh replaces instances.";
        "kms_key_id": STR, "The KMS key a promoted AMI copied into this region is encrypted with.";
        "account_id": STR, "The AWS account the environment runs in, when not the baking one (12 digits).";
        "role_arn": STR, "The role pipe assumes in `account_id` to promote there.";
        "strategy": Ty::OneOf(STRATEGIES), "How a promotion moves the environment: `refresh` (an instance refresh of one group, the default) or `blue-green` (a new group per promotion).";
        "keep_previous": Ty::Int { min: 0, max: Some(10) }, "Blue/green: groups that served before kept at zero for rollback (default 1).";
    }
);

keys!(
    /// `root_volume = { ... }` of an ec2 environment.
    ROOT_VOLUME_KEYS, ROOT_VOLUME_SHAPE {
        "size_gb": Ty::Int { min: 1, max: Some(65536) }, "GiB.";
        "type": Ty::OneOf(VOLUME_TYPES), "The volume type.";
        "encrypted": BOOL, "Encrypt the volume.";
        "kms_key_id": STR, "A key id, alias or ARN (implies `encrypted`).";
    }
);

keys!(
    /// `bastion = { ... }` of an ec2 environment.
    BASTION_KEYS, BASTION_SHAPE {
        "host": STR, "The jump host.";
        "port": Ty::Port, "Its SSH port (default 22).";
        "user": STR, "Its user (default: `ssh_username`).";
        "key": STR, "The private key for the bastion; only used to log in, never uploaded.";
    }
);

keys!(
    /// `refresh = { ... }` of an ec2 environment.
    REFRESH_KEYS, REFRESH_SHAPE {
        "min_healthy_percentage": Ty::Int { min: 0, max: Some(100) }, "Percent of desired capacity that stays healthy.";
        "max_healthy_percentage": Ty::Int { min: 100, max: Some(200) }, "Percent it may grow to while replacing.";
        "instance_warmup": Ty::Int { min: 0, max: None }, "Seconds a new instance warms up before it counts as healthy.";
        "checkpoints": Ty::Array(&Ty::Int { min: 1, max: Some(100) }), "Percentages at which the refresh pauses.";
        "alarms": STRINGS, "CloudWatch alarms that fail (and roll back) the refresh.";
    }
);

/// Every key of `[env.NAME]`, whichever its target (the parser then says which target a key
/// belongs to).
pub fn env_keys() -> Vec<&'static str> {
    [
        ENV_COMMON_KEYS,
        DOCKER_ENV_KEYS,
        QEMU_ENV_KEYS,
        EC2_ENV_KEYS,
    ]
    .concat()
}

/// [`env_keys`] with their types.
pub const ENV_SHAPE: &[Key] = &concat_shapes::<{ ENV_LEN }>([
    ENV_COMMON_SHAPE,
    DOCKER_ENV_SHAPE,
    QEMU_ENV_SHAPE,
    EC2_ENV_SHAPE,
]);

const ENV_LEN: usize =
    ENV_COMMON_SHAPE.len() + DOCKER_ENV_SHAPE.len() + QEMU_ENV_SHAPE.len() + EC2_ENV_SHAPE.len();

/// Four key lists as one, at compile time.
const fn concat_shapes<const N: usize>(parts: [&[Key]; 4]) -> [Key; N] {
    let mut out = [Key {
        name: "",
        ty: Ty::Bool,
        doc: "",
    }; N];
    let mut n = 0;
    let mut p = 0;
    while p < parts.len() {
        let mut i = 0;
        while i < parts[p].len() {
            out[n] = parts[p][i];
            n += 1;
            i += 1;
        }
        p += 1;
    }
    out
}
