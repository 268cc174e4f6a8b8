//! A blue/green switch between two Auto Scaling groups on the same target groups, as far as it
//! must be undone from what AWS shows: an incoming group carries tags naming the group it
//! replaces and the capacity that group served with, so [`AwsClient::undo_incoming_group`]
//! (a run's cleanup, `pipe clean`, `pipe rollback` from another terminal) can bring the old
//! group back, wait until it serves, and only then remove the incoming one. And the waits a
//! switch makes: a group serving (InService and healthy at every target group), drained from
//! its target groups, empty.

use std::time::Duration;

use super::client::AwsClient;
use super::error::AwsError;
use super::wait::{self, Seen, WaitPolicy, Waiting};

/// `launching` while a promotion brings the group in, `serving` once it serves, `previous`
/// once it was scaled to zero and kept.
pub const TAG_STATE: &str = "pipe:state";
/// On an incoming group: the group it replaces, and that group's `min/max/desired`.
pub const TAG_REPLACES: &str = "pipe:replaces";
pub const TAG_REPLACES_CAPACITY: &str = "pipe:replaces-capacity";
/// On a group scaled to zero: the `min/max/desired` it served with, and when it stopped
/// serving (seconds since the epoch; retention keeps the latest).
pub const TAG_CAPACITY: &str = "pipe:capacity";
pub const TAG_RETIRED: &str = "pipe:retired-at";
/// On an incoming group that was kept before (a rollback): cleanup scales it to zero again
/// instead of deleting it.
pub const TAG_REUSED: &str = "pipe:reused";

/// A group's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub min: i32,
    pub max: i32,
    pub desired: i32,
}

impl Capacity {
    pub fn of(g: &super::GroupInfo) -> Self {
        Self {
            min: g.min,
            max: g.max,
            desired: g.desired,
        }
    }

    /// `min/max/desired`, as tagged.
    pub fn tag(&self) -> String {
        format!("{}/{}/{}", self.min, self.max, self.desired)
    }

    /// Reads `min/max/desired`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('/').map(|n| n.trim().parse::<i32>().ok());
        let (min, max, desired) = (it.next()??, it.next()??, it.next()??);
        (it.next().is_none() && min <= desired && desired <= max && min >= 0).then_some(Self {
            min,
            max,
            desired,
        })
    }
}

/// Instance states that are not gone.
const LIVE: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];

impl AwsClient {
    /// Brings back the group the incoming group `name` was to replace (attached to the
    /// incoming group's target groups, at the capacity it served with) and waits until it
    /// serves; then detaches the incoming group, waits until it drained, and deletes it (or
    /// scales it to zero again when it was a kept group). False when there was nothing to
    /// undo: no such group, or one that finished coming in.
    pub fn undo_incoming_group(
        &self,
        name: &str,
        limit: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<bool, AwsError> {
        let Some(incoming) = self.group(name)? else {
            return Ok(false);
        };
        if incoming.tag(TAG_STATE) != Some("launching") {
            return Ok(false);
        }
        let tgs = incoming.target_groups.clone();
        let capacity = incoming
            .tag(TAG_REPLACES_CAPACITY)
            .and_then(Capacity::parse);
        if let (Some(old), Some(cap)) = (incoming.tag(TAG_REPLACES), capacity)
            && let Some(g) = self.group(old)?
        {
            let missing: Vec<String> = tgs
                .iter()
                .filter(|t| !g.target_groups.contains(t))
                .cloned()
                .collect();
            self.attach_target_groups(old, &missing)?;
            if g.desired < cap.desired || g.min != cap.min {
                self.set_capacity(old, cap.min, cap.max.max(g.max), cap.desired)?;
            }
            self.wait_group_serving(old, cap.desired, &tgs, limit, stop, &mut |_| {})?;
            if g.tag(TAG_STATE).is_some() {
                self.tag_group(old, &[(TAG_STATE, "serving")])?;
            }
        }
        self.detach_target_groups(name, &tgs)?;
        self.wait_group_drained(name, &tgs, limit, stop)?;
        if incoming.tag(TAG_REUSED) == Some("yes") {
            self.set_capacity(name, 0, incoming.max, 0)?;
            self.tag_group(name, &[(TAG_STATE, "previous")])?;
        } else {
            self.delete_group(name)?;
        }
        self.wait_group_empty(name, limit, stop)?;
        Ok(true)
    }

    /// Waits until group `name` has `desired` instances InService and Healthy, each healthy
    /// at every target group in `tgs`; `progress` gets each new state line
    /// (`2/2 InService, 1/2 healthy at web`).
    pub fn wait_group_serving(
        &self,
        name: &str,
        desired: i32,
        tgs: &[String],
        limit: Duration,
        stop: &dyn Fn() -> bool,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), AwsError> {
        let state = format!("serving ({desired} instances healthy at every target group)");
        let mut shown = String::new();
        let want = usize::try_from(desired).unwrap_or(0);
        wait::until(
            Waiting {
                what: "Auto Scaling group",
                id: name,
                state: &state,
            },
            fast(limit),
            stop,
            || {
                let Some(g) = self.group(name)? else {
                    return Ok(Seen::Failed {
                        state: "gone".into(),
                        reason: String::new(),
                    });
                };
                let in_service: Vec<&str> = g
                    .instances
                    .iter()
                    .filter(|i| i.lifecycle == "InService" && i.health == "Healthy")
                    .map(|i| i.id.as_str())
                    .collect();
                let mut everywhere = in_service.clone();
                let mut line = format!("{}/{desired} InService", in_service.len().min(want));
                for tg in tgs {
                    let health = self.target_health(tg)?;
                    let ok: Vec<&str> = in_service
                        .iter()
                        .copied()
                        .filter(|id| health.iter().any(|(t, s)| t == id && s == "healthy"))
                        .collect();
                    line.push_str(&format!(
                        ", {}/{desired} healthy at {}",
                        ok.len().min(want),
                        tg.split('/').nth(1).unwrap_or(tg)
                    ));
                    everywhere.retain(|id| ok.contains(id));
                }
                if line != shown {
                    progress(&line);
                    shown = line.clone();
                }
                Ok(if everywhere.len() >= want {
                    Seen::Done
                } else {
                    Seen::Pending(line)
                })
            },
        )
    }

    /// Waits until no instance of group `name` is registered with a target group in `tgs`
    /// (their deregistration delay has passed).
    pub fn wait_group_drained(
        &self,
        name: &str,
        tgs: &[String],
        limit: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), AwsError> {
        wait::until(
            Waiting {
                what: "Auto Scaling group",
                id: name,
                state: "drained from its target groups",
            },
            fast(limit),
            stop,
            || {
                let ids: Vec<String> = self
                    .group(name)?
                    .map(|g| g.instances.into_iter().map(|i| i.id).collect())
                    .unwrap_or_default();
                let mut still = 0;
                for tg in tgs {
                    still += self
                        .target_health(tg)?
                        .iter()
                        .filter(|(t, _)| ids.contains(t))
                        .count();
                }
                Ok(if still == 0 {
                    Seen::Done
                } else {
                    Seen::Pending(format!("{still} still registered"))
                })
            },
        )
    }

    /// Waits until group `name` has no instance left (or is gone, its instances terminated).
    pub fn wait_group_empty(
        &self,
        name: &str,
        limit: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), AwsError> {
        wait::until(
            Waiting {
                what: "Auto Scaling group",
                id: name,
                state: "without instances",
            },
            fast(limit),
            stop,
            || {
                let left = self.group(name)?.map_or(0, |g| g.instances.len());
                let live = self
                    .instances(&[
                        (
                            "tag:aws:autoscaling:groupName".into(),
                            vec![name.to_string()],
                        ),
                        (
                            "instance-state-name".into(),
                            LIVE.map(String::from).to_vec(),
                        ),
                    ])?
                    .len();
                Ok(if left == 0 && live == 0 {
                    Seen::Done
                } else {
                    Seen::Pending(format!("{} instances", left.max(live)))
                })
            },
        )
    }
}

/// Polls from half a second (a switch is watched closely) up to every 10 s.
fn fast(limit: Duration) -> WaitPolicy {
    WaitPolicy {
        first: Duration::from_millis(500),
        max_interval: Duration::from_secs(10),
        limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_reads_back_what_it_writes_and_refuses_nonsense() {
        let c = Capacity {
            min: 1,
            max: 4,
            desired: 2,
        };
        assert_eq!(Capacity::parse(&c.tag()), Some(c));
        for bad in ["", "1/2", "1/4/2/3", "3/4/2", "a/b/c", "-1/4/2", "1/2/4"] {
            assert_eq!(Capacity::parse(bad), None, "{bad}");
        }
    }
}
