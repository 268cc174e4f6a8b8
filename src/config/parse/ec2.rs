//! The keys of an `[env.NAME]` table with `target = "ec2"`: where it bakes, how its build
//! instances are launched and reached, and where the app AMI is copied.

use std::collections::BTreeMap;

use crate::config::model::{
    Ec2Bastion, Ec2Settings, RefreshSettings, RootVolume, Spanned, SshInterface, Strategy,
};
use crate::config::suggest;
use crate::config::walk::{self, Tbl, Walker};

use crate::config::keys::{
    BASTION_KEYS, REFRESH_KEYS, ROOT_VOLUME_KEYS, SSH_INTERFACES, STRATEGIES, VOLUME_TYPES,
};

/// The settings of an ec2 environment; problems become diagnostics.
pub fn settings(w: &mut Walker, t: &Tbl<'_, '_>) -> Ec2Settings {
    let s = |w: &mut Walker, key: &str| t.str(w, key).map(|s| s.value);
    let region = t.str(w, "region");
    if let Some(r) = &region {
        check_region(w, r);
    }
    let subnet_id = s(w, "subnet_id");
    let associate_public_ip = t.get("associate_public_ip").and_then(|v| {
        let b = crate::config::walk::boolean(w, v, "`associate_public_ip`")?;
        if subnet_id.is_none() && !t.has("subnet_id") {
            w.error_hint(
                "`associate_public_ip` needs `subnet_id`".to_string(),
                t.key_span("associate_public_ip").unwrap_or(b.span),
                "the public IP is asked for on a network interface, which is made in a subnet: add `subnet_id = \"subnet-...\"`",
            );
        }
        Some(b.value)
    });
    let ami_regions = ami_regions(w, t, region.as_ref());
    let (account_id, role_arn) = account(w, t);
    let strategy = strategy(w, t);
    let keep_previous = keep_previous(w, t, strategy);
    Ec2Settings {
        region: region.map(|r| r.value),
        instance_type: s(w, "instance_type"),
        subnet_id,
        ssh_username: s(w, "ssh_username"),
        auto_scaling_group: s(w, "auto_scaling_group"),
        launch_template: s(w, "launch_template"),
        ssm_parameter: s(w, "ssm_parameter"),
        endpoint_url: endpoint_url(w, t),
        wait_timeout: positive_seconds(w, t, "wait_timeout"),
        ssh_timeout: positive_seconds(w, t, "ssh_timeout"),
        security_group_ids: security_group_ids(w, t),
        iam_instance_profile: iam_instance_profile(w, t),
        associate_public_ip,
        root_volume: root_volume(w, t),
        ssh_cidrs: ssh_cidrs(w, t),
        ssh_interface: ssh_interface(w, t),
        ssh_host: s(w, "ssh_host"),
        ssh_port: port(w, t, "ssh_port"),
        bastion: bastion(w, t),
        region_kms_key_ids: region_kms_key_ids(w, t, &ami_regions),
        ami_regions: ami_regions.into_iter().map(|r| r.value).collect(),
        keep_previous,
        strategy: strategy.unwrap_or_default(),
        refresh: refresh(w, t),
        kms_key_id: t
            .str(w, "kms_key_id")
            .filter(|k| check_kms_key(w, k))
            .map(|k| k.value),
        account_id,
        role_arn,
    }
}

/// An AWS account id: 12 digits.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.chars().all(|c| c.is_ascii_digit())
}

/// The account of an IAM role ARN (`arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`), `None`
/// when it is not one.
pub fn role_account(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [arn, partition, "iam", "", account, resource] = parts[..] else {
        return None;
    };
    let name = resource.strip_prefix("role/")?.rsplit('/').next()?;
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    (arn == "arn" && partition.starts_with("aws") && is_account_id(account) && name_ok)
        .then_some(account)
}

/// `account_id` and `role_arn`, which come together: the account a cross-account promotion
/// shares the AMI with, and the role in that same account pipe assumes there.
fn account(w: &mut Walker, t: &Tbl<'_, '_>) -> (Option<String>, Option<String>) {
    let account = t.str(w, "account_id").filter(|a| {
        let ok = is_account_id(a);
        if !ok {
            w.error_hint(
                format!("invalid AWS account id `{}`", a.value),
                a.span,
                "12 digits, e.g. `account_id = \"123456789012\"` (as a string: leading zeros count)",
            );
        }
        ok
    });
    let role = t.str(w, "role_arn").filter(|r| match role_account(r) {
        None => {
            w.error_hint(
                format!("invalid role ARN `{}`", r.value),
                r.span,
                "an IAM role ARN, `arn:aws:iam::123456789012:role/NAME`",
            );
            false
        }
        Some(of) => match &account {
            Some(a) if a.value != of => {
                w.error_hint(
                    format!(
                        "role `{}` is in account {of}, not in `account_id` {}",
                        r.value, a.value
                    ),
                    r.span,
                    "pipe assumes a role in the account the environment runs in: use a role of that account",
                );
                false
            }
            _ => true,
        },
    });
    match (&account, &role) {
        (Some(a), None) if !t.has("role_arn") => w.error_hint(
            "`account_id` needs `role_arn`".to_string(),
            t.key_span("account_id").unwrap_or(a.span),
            format!(
                "the role pipe assumes in account {} for the promotion's Auto Scaling, launch template and SSM calls, e.g. `role_arn = \"arn:aws:iam::{}:role/pipe-promote\"`",
                a.value, a.value
            ),
        ),
        (None, Some(r)) if !t.has("account_id") => w.error_hint(
            "`role_arn` needs `account_id`".to_string(),
            t.key_span("role_arn").unwrap_or(r.span),
            format!(
                "the account that gets launch permission on the release's AMI: `account_id = \"{}\"`",
                role_account(r).unwrap_or_default()
            ),
        ),
        _ => {}
    }
    (account.map(|a| a.value), role.map(|r| r.value))
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-4`: letters, then dashes,
/// ending in a number.
pub fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

pub(super) fn check_region(w: &mut Walker, r: &Spanned<String>) -> bool {
    if is_region(r) {
        return true;
    }
    w.error_hint(
        format!("invalid region `{}`", r.value),
        r.span,
        "a region code such as `us-east-1` or `eu-west-2`",
    );
    false
}

/// `ami_regions`: valid, distinct regions other than the bake's own.
fn ami_regions(
    w: &mut Walker,
    t: &Tbl<'_, '_>,
    region: Option<&Spanned<String>>,
) -> Vec<Spanned<String>> {
    let mut out: Vec<Spanned<String>> = Vec::new();
    for r in t.str_array(w, "ami_regions").unwrap_or_default() {
        if !check_region(w, &r) {
            continue;
        }
        if region.is_some_and(|b| b.value == r.value) {
            w.error_hint(
                format!("`{}` is where the environment bakes", r.value),
                r.span,
                "the app AMI is already there: list only the other regions it is copied to",
            );
        } else if out.iter().any(|o| o.value == r.value) {
            w.error_hint(
                format!("`{}` is listed twice in `ami_regions`", r.value),
                r.span,
                "remove one",
            );
        } else {
            out.push(r);
        }
    }
    out
}

/// `region_kms_key_ids = { "us-west-2" = "alias/x" }`: a key for copies in `ami_regions`.
fn region_kms_key_ids(
    w: &mut Walker,
    t: &Tbl<'_, '_>,
    regions: &[Spanned<String>],
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(keys) = t.table(w, "region_kms_key_ids", None) else {
        return out;
    };
    for (region, span, v) in keys.entries() {
        let Some(key) = crate::config::walk::string(w, v, &format!("`{region}`")) else {
            continue;
        };
        if !regions.iter().any(|r| r.value == region) {
            let hint = suggest::did_you_mean(region, regions.iter().map(|r| r.value.as_str()))
                .unwrap_or_else(|| format!("add `{region}` to `ami_regions`, or remove this key"));
            w.error_hint(
                format!("`{region}` in `region_kms_key_ids` is not in `ami_regions`"),
                span,
                hint,
            );
            continue;
        }
        if check_kms_key(w, &key) {
            out.insert(region.to_string(), key.value);
        }
    }
    out
}

/// A KMS key: an id (UUID or `mrk-...`), an alias (`alias/...`) or an ARN (`arn:...:kms:...`).
fn check_kms_key(w: &mut Walker, key: &Spanned<String>) -> bool {
    let k = key.value.as_str();
    let uuid = k.len() == 36
        && k.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    let mrk = k
        .strip_prefix("mrk-")
        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
    let alias = k.strip_prefix("alias/").is_some_and(|a| {
        !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c))
    });
    let arn = k.starts_with("arn:") && k.split(':').nth(2) == Some("kms");
    if uuid || mrk || alias || arn {
        return true;
    }
    w.error_hint(
        format!("invalid KMS key `{k}`"),
        key.span,
        "a key id (`1234abcd-12ab-34cd-56ef-1234567890ab`), an alias (`alias/my-key`) or a key ARN",
    );
    false
}

/// `security_group_ids`: `sg-` ids.
fn security_group_ids(w: &mut Walker, t: &Tbl<'_, '_>) -> Vec<String> {
    let mut out = Vec::new();
    for g in t.str_array(w, "security_group_ids").unwrap_or_default() {
        let ok = g
            .strip_prefix("sg-")
            .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
        if ok {
            out.push(g.value);
        } else {
            w.error_hint(
                format!("invalid security group id `{}`", g.value),
                g.span,
                "an id such as `sg-0123456789abcdef0` (group names are not accepted)",
            );
        }
    }
    out
}

/// `iam_instance_profile`: a name or an instance-profile ARN.
fn iam_instance_profile(w: &mut Walker, t: &Tbl<'_, '_>) -> Option<String> {
    let p = t.str(w, "iam_instance_profile")?;
    let ok = if p.starts_with("arn:") {
        p.split(':').nth(2) == Some("iam") && p.contains(":instance-profile/")
    } else {
        !p.is_empty()
            && p.len() <= 128
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
    };
    if !ok {
        w.error_hint(
            format!("invalid instance profile `{}`", p.value),
            p.span,
            "an instance profile name (letters, digits and `+=,.@_-`, up to 128) or its ARN, `arn:aws:iam::123456789012:instance-profile/NAME`",
        );
        return None;
    }
    Some(p.value)
}

/// `root_volume = { size_gb, type, encrypted, kms_key_id }`.
fn root_volume(w: &mut Walker, t: &Tbl<'_, '_>) -> Option<RootVolume> {
    let v = t.table(w, "root_volume", None)?;
    v.check_keys(w, ROOT_VOLUME_KEYS);
    let mut out = RootVolume::default();
    if let Some(n) = v.int(w, "size_gb") {
        if (1..=65_536).contains(&n.value) {
            out.size_gb = Some(n.value as u32);
        } else {
            w.error_hint(
                format!(
                    "`size_gb` must be between 1 and 65536 GiB, found {}",
                    n.value
                ),
                n.span,
                "the size of the root volume in GiB; at least the source AMI's snapshot",
            );
        }
    }
    if let Some(ty) = v.str(w, "type") {
        if VOLUME_TYPES.contains(&ty.as_str()) {
            out.volume_type = Some(ty.value);
        } else {
            let hint =
                suggest::did_you_mean(&ty, VOLUME_TYPES.iter().copied()).unwrap_or_else(|| {
                    format!(
                        "EBS volume types are {}",
                        suggest::list(VOLUME_TYPES.iter().copied())
                    )
                });
            w.error_hint(format!("unknown volume type `{}`", ty.value), ty.span, hint);
        }
    }
    let encrypted = v
        .get("encrypted")
        .and_then(|e| crate::config::walk::boolean(w, e, "`encrypted`"));
    out.encrypted = encrypted.as_ref().map(|e| e.value);
    if let Some(key) = v.str(w, "kms_key_id")
        && check_kms_key(w, &key)
    {
        match &encrypted {
            Some(e) if !e.value => w.error_hint(
                "`kms_key_id` is set but `encrypted = false`".to_string(),
                e.span,
                "a KMS key encrypts the volume: write `encrypted = true`, or drop `kms_key_id`",
            ),
            _ => out.encrypted = Some(true),
        }
        out.kms_key_id = Some(key.value);
    }
    Some(out)
}

/// `ssh_cidrs`: IPv4 CIDRs, network addresses only.
fn ssh_cidrs(w: &mut Walker, t: &Tbl<'_, '_>) -> Vec<String> {
    let Some(items) = t.str_array(w, "ssh_cidrs") else {
        return Vec::new();
    };
    if items.is_empty()
        && let Some(span) = t.key_span("ssh_cidrs")
    {
        w.error_hint(
            "`ssh_cidrs` is empty: nothing could reach the build instance",
            span,
            "leave it out for this host's /32, or list the CIDRs SSH comes from",
        );
    }
    let mut out = Vec::new();
    for c in items {
        match parse_cidr(&c) {
            Ok(()) => out.push(c.value),
            Err(hint) => w.error_hint(format!("invalid CIDR `{}`", c.value), c.span, hint),
        }
    }
    out
}

/// Checks an IPv4 CIDR; the error is the hint (with the network address when host bits are
/// set).
pub fn parse_cidr(c: &str) -> Result<(), String> {
    let usage = "an IPv4 network and prefix length, e.g. `203.0.113.0/24` or `198.51.100.7/32`";
    let Some((ip, len)) = c.split_once('/') else {
        return Err(format!("{usage}; a single address is `{c}/32`"));
    };
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| usage.to_string())?;
    let len: u32 = match len.parse() {
        Ok(n) if n <= 32 && !len.starts_with('+') => n,
        _ => return Err(format!("{usage}; the prefix length is 0 to 32")),
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let net = u32::from(ip) & mask;
    if net != u32::from(ip) {
        return Err(format!(
            "did you mean `{}/{len}`? (the address has bits set past the prefix)",
            std::net::Ipv4Addr::from(net)
        ));
    }
    Ok(())
}

/// `ssh_interface`: `public_ip` or `private_ip`.
fn ssh_interface(w: &mut Walker, t: &Tbl<'_, '_>) -> SshInterface {
    let Some(i) = t.str(w, "ssh_interface") else {
        return SshInterface::default();
    };
    match i.as_str() {
        "public_ip" => SshInterface::PublicIp,
        "private_ip" => SshInterface::PrivateIp,
        _ => {
            let hint =
                suggest::did_you_mean(&i, SSH_INTERFACES.iter().copied()).unwrap_or_else(|| {
                    format!("use {}", suggest::list(SSH_INTERFACES.iter().copied()))
                });
            w.error_hint(format!("unknown ssh_interface `{}`", i.value), i.span, hint);
            SshInterface::default()
        }
    }
}

/// `strategy = "refresh" | "blue-green"` (`None` when the value is not one of them);
/// `refresh = { ... }` belongs to the first.
fn strategy(w: &mut Walker, t: &Tbl<'_, '_>) -> Option<Strategy> {
    let Some(v) = t.str(w, "strategy") else {
        return (!t.has("strategy")).then_some(Strategy::default());
    };
    let strategy = match v.as_str() {
        "refresh" => Strategy::Refresh,
        "blue-green" => Strategy::BlueGreen,
        _ => {
            let hint = suggest::did_you_mean(&v, STRATEGIES.iter().copied())
                .unwrap_or_else(|| format!("use {}", suggest::list(STRATEGIES.iter().copied())));
            w.error_hint(format!("unknown strategy `{}`", v.value), v.span, hint);
            return None;
        }
    };
    if strategy == Strategy::BlueGreen
        && let Some(span) = t.key_span("refresh")
    {
        w.error_hint(
            "`refresh` settings do not apply to strategy = \"blue-green\"".to_string(),
            span,
            "a blue/green promotion makes a new group instead of refreshing one: remove `refresh`, or use strategy = \"refresh\"",
        );
    }
    Some(strategy)
}

/// `keep_previous`: 0 to 10 groups kept after a blue/green promotion; only with that strategy.
fn keep_previous(w: &mut Walker, t: &Tbl<'_, '_>, strategy: Option<Strategy>) -> Option<u32> {
    let n = t.int(w, "keep_previous")?;
    if strategy == Some(Strategy::Refresh) {
        w.error_hint(
            "`keep_previous` applies to strategy = \"blue-green\"".to_string(),
            t.key_span("keep_previous").unwrap_or(n.span),
            "add `strategy = \"blue-green\"`, or remove `keep_previous` (a refresh keeps no old group)",
        );
        return None;
    }
    match u32::try_from(n.value) {
        Ok(k) if k <= 10 => Some(k),
        _ => {
            w.error_hint(
                format!("`keep_previous` must be between 0 and 10, found {}", n.value),
                n.span,
                "the number of groups that served before which stay, scaled to zero, for `pipe rollback` (default 1)",
            );
            None
        }
    }
}

/// A TCP port, 1 to 65535.
fn port(w: &mut Walker, t: &Tbl<'_, '_>, key: &str) -> Option<u16> {
    let n = t.int(w, key)?;
    match u16::try_from(n.value) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            w.error_hint(
                format!(
                    "`{key}` must be a port between 1 and 65535, found {}",
                    n.value
                ),
                n.span,
                "leave it out for 22",
            );
            None
        }
    }
}

/// `bastion = { host, port, user, key }`.
fn bastion(w: &mut Walker, t: &Tbl<'_, '_>) -> Option<Ec2Bastion> {
    let b = t.table(w, "bastion", None)?;
    b.check_keys(w, BASTION_KEYS);
    for (key, hint) in [
        (
            "host",
            "the bastion's name or address, e.g. `host = \"bastion.example.com\"`",
        ),
        (
            "key",
            "the private key that logs in to the bastion, e.g. `key = \"~/.ssh/bastion\"`",
        ),
    ] {
        if !b.has(key) {
            b.missing(w, key, Some(hint.to_string()));
        }
    }
    let host = b.str(w, "host");
    let key = b.str(w, "key");
    let port = port(w, &b, "port");
    let user = b.str(w, "user").map(|u| u.value);
    Some(Ec2Bastion {
        host: host?.value,
        port: port.unwrap_or(22),
        user,
        key: key?.value,
    })
}

/// `endpoint_url`: an http(s) URL.
pub(super) fn endpoint_url(w: &mut Walker, t: &Tbl<'_, '_>) -> Option<String> {
    let url = t.str(w, "endpoint_url")?;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
        w.error_hint(
            format!("invalid endpoint URL `{}`", url.value),
            url.span,
            "an http:// or https:// URL, e.g. `http://127.0.0.1:5000` for the local EC2",
        );
        return None;
    }
    Some(url.value)
}

/// `wait_timeout`, `ssh_timeout`: positive seconds.
fn positive_seconds(w: &mut Walker, t: &Tbl<'_, '_>, key: &str) -> Option<u64> {
    let n = t.int(w, key)?;
    if n.value <= 0 {
        w.error_hint(
            format!(
                "`{key}` must be a positive number of seconds, found {}",
                n.value
            ),
            n.span,
            "leave it out for the default",
        );
        return None;
    }
    Some(n.value as u64)
}

/// `refresh = { ... }`: how a promotion's instance refresh replaces instances, in the ranges
/// AWS accepts, checked here rather than by a failed StartInstanceRefresh.
fn refresh(w: &mut Walker, t: &Tbl<'_, '_>) -> RefreshSettings {
    let mut out = RefreshSettings::default();
    let Some(r) = t.table(w, "refresh", Some(format!("{}.refresh", t.name))) else {
        return out;
    };
    r.check_keys(w, REFRESH_KEYS);
    let percent = |w: &mut Walker, key: &str, lo: i64, hi: i64| {
        r.int(w, key).and_then(|n| {
            if n.value < lo || n.value > hi {
                w.error_hint(
                    format!("`{key}` must be between {lo} and {hi}, found {}", n.value),
                    n.span,
                    "a percentage of the group's desired capacity",
                );
                None
            } else {
                Some(n)
            }
        })
    };
    let min = percent(w, "min_healthy_percentage", 0, 100);
    let max = percent(w, "max_healthy_percentage", 100, 200);
    if let (Some(min), Some(max)) = (&min, &max)
        && max.value - min.value > 100
    {
        w.error_hint(
            format!(
                "`max_healthy_percentage` ({}) may be at most 100 above `min_healthy_percentage` ({})",
                max.value, min.value
            ),
            max.span,
            "AWS refuses a wider range",
        );
    }
    out.min_healthy_percentage = min.map(|n| n.value as i32);
    out.max_healthy_percentage = max.map(|n| n.value as i32);
    if let Some(n) = r.int(w, "instance_warmup") {
        if n.value < 0 || n.value > i64::from(i32::MAX) {
            w.error_hint(
                format!(
                    "`instance_warmup` must be 0 or more seconds, found {}",
                    n.value
                ),
                n.span,
                "leave it out to use the group's default warm-up",
            );
        } else {
            out.instance_warmup = Some(n.value as i32);
        }
    }
    if let Some(items) = r.array(w, "checkpoints") {
        let mut last = 0;
        for v in items {
            let Some(n) = walk::integer(w, v, "a checkpoint") else {
                continue;
            };
            if n.value <= last || n.value > 100 {
                w.error_hint(
                    format!("checkpoint {} is out of order or range", n.value),
                    n.span,
                    "percentages of instances replaced, rising, each at most 100: `checkpoints = [50, 100]`",
                );
                continue;
            }
            last = n.value;
            out.checkpoints.push(n.value as i32);
        }
    }
    if let Some(alarms) = r.str_array(w, "alarms") {
        out.alarms = alarms.into_iter().map(|a| a.value).collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_regions() {
        for ok in ["0.0.0.0/0", "10.0.0.0/8", "203.0.113.7/32", "127.0.0.0/8"] {
            assert_eq!(parse_cidr(ok), Ok(()), "{ok}");
        }
        assert!(
            parse_cidr("10.0.0.1/8")
                .unwrap_err()
                .contains("`10.0.0.0/8`")
        );
        for bad in [
            "10.0.0.0",
            "10.0.0/8",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "::/0",
            "a/8",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "ap-southeast-4",
        ] {
            assert!(is_region(ok), "{ok}");
        }
        for bad in ["us-east", "us_east_1", "US-EAST-1", "us-east-1a", "east-1"] {
            assert!(!is_region(bad), "{bad}");
        }
    }
}
