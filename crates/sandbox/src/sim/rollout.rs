//! The arithmetic of a Deployment's RollingUpdate, as upstream's
//! `pkg/controller/deployment/rolling.go` and `util/deployment_util.go`: how far the new
//! ReplicaSet may grow (maxSurge) and how far the old ones may shrink (maxUnavailable).

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::int_or_percent::scaled;

/// maxSurge and maxUnavailable resolved against the desired replicas (ResolveFenceposts):
/// surge rounds up, unavailability rounds down, and both zero means unavailable 1 so the
/// rollout can move at all.
pub(crate) fn fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    replicas: i32,
) -> Result<(i32, i32), String> {
    let quarter = IntOrString::String("25%".into());
    let surge = scaled(max_surge.unwrap_or(&quarter), replicas, true)
        .map_err(|e| format!("maxSurge: {e}"))?;
    let unavailable = scaled(max_unavailable.unwrap_or(&quarter), replicas, false)
        .map_err(|e| format!("maxUnavailable: {e}"))?;
    Ok(if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    })
}

/// One ReplicaSet as the rollout sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Set {
    /// spec.replicas.
    pub replicas: i32,
    /// Available pods, capped at `replicas` (pods beyond it are about to go).
    pub available: i32,
}

/// The new ReplicaSet's replicas (NewRSNewReplicas): grow towards `replicas` without the
/// total of all ReplicaSets exceeding `replicas + surge`; shrink straight to `replicas`.
pub(crate) fn new_replicas(replicas: i32, surge: i32, new: Set, old: &[Set]) -> i32 {
    if new.replicas >= replicas {
        return replicas;
    }
    let current: i32 = new.replicas + old.iter().map(|s| s.replicas).sum::<i32>();
    let room = (replicas + surge - current).max(0);
    new.replicas + room.min(replicas - new.replicas)
}

/// The old ReplicaSets' replicas after one scale-down step (reconcileOldReplicaSets): first
/// drop their unavailable pods, then available ones while the available total stays at or
/// above `replicas - unavailable`. `old` is ordered oldest first.
pub(crate) fn old_replicas(replicas: i32, unavailable: i32, new: Set, old: &[Set]) -> Vec<i32> {
    let mut target: Vec<i32> = old.iter().map(|s| s.replicas).collect();
    let all: i32 = new.replicas + target.iter().sum::<i32>();
    let min_available = replicas - unavailable;
    let new_unavailable = new.replicas - new.available;
    let mut budget = all - min_available - new_unavailable;
    if budget <= 0 {
        return target;
    }
    for (t, set) in target.iter_mut().zip(old) {
        if budget <= 0 {
            break;
        }
        let unhealthy = (set.replicas - set.available).min(budget).max(0);
        *t -= unhealthy;
        budget -= unhealthy;
    }
    let available: i32 = new.available + old.iter().map(|s| s.available).sum::<i32>();
    let mut excess = available - min_available;
    for (t, set) in target.iter_mut().zip(old) {
        if excess <= 0 {
            break;
        }
        let down = (*t).min(excess).min(set.available);
        *t -= down;
        excess -= down;
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(replicas: i32, available: i32) -> Set {
        Set {
            replicas,
            available,
        }
    }

    #[test]
    fn fenceposts_round_like_upstream() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(fenceposts(None, None, 10), Ok((3, 2)));
        assert_eq!(
            fenceposts(Some(&IntOrString::Int(0)), Some(&pct("10%")), 5),
            Ok((0, 1))
        );
        assert!(
            fenceposts(Some(&pct("x")), None, 5)
                .unwrap_err()
                .contains("maxSurge")
        );
    }

    #[test]
    fn new_set_grows_within_surge() {
        assert_eq!(new_replicas(3, 1, set(0, 0), &[set(3, 3)]), 1);
        assert_eq!(new_replicas(3, 1, set(1, 0), &[set(3, 3)]), 1);
        assert_eq!(new_replicas(3, 1, set(2, 2), &[set(1, 1)]), 3);
        assert_eq!(new_replicas(3, 1, set(5, 5), &[]), 3);
    }

    #[test]
    fn old_sets_shrink_without_breaking_min_available() {
        // 3 replicas, maxUnavailable 0: only as many old pods go as new ones are available.
        assert_eq!(old_replicas(3, 0, set(1, 0), &[set(3, 3)]), vec![3]);
        assert_eq!(old_replicas(3, 0, set(1, 1), &[set(3, 3)]), vec![2]);
        // maxUnavailable 1: one old pod may go before any new one is available.
        assert_eq!(old_replicas(3, 1, set(1, 0), &[set(3, 3)]), vec![2]);
        // Unavailable old pods go first; available ones only above min available.
        assert_eq!(
            old_replicas(3, 0, set(1, 1), &[set(2, 0), set(2, 2)]),
            vec![0, 2]
        );
    }
}
