"""Instance Refresh for quiesce_moto.py: moto 5.2.5 has none (no StartInstanceRefresh,
DescribeInstanceRefreshes, CancelInstanceRefresh, RollbackInstanceRefresh) and no instance
lifecycle policy, so `quiesce roll` could not be tested against it.

`install(quiesce_moto_module)` patches moto's Auto Scaling responses so that:
  - CreateAutoScalingGroup / UpdateAutoScalingGroup keep InstanceLifecyclePolicy and
    DescribeAutoScalingGroups returns it; with `TerminateHookAbandon: retain` an ABANDONed (or
    timed-out ABANDON) terminate action leaves the instance in `Terminating:Retained`, outside
    the group's capacity (a replacement launches), until TerminateInstanceInAutoScalingGroup
    (User Guide, "Control instance retention with instance lifecycle policies" and "Manage
    retained instances");
  - each instance remembers the launch template version it was launched from
    (DescribeAutoScalingGroups Instances[].LaunchTemplate.Version), for SkipMatching and
    rollback;
  - an Instance Refresh replaces the group's instances in batches through the lifecycle hooks
    quiesce_moto models: each old instance is terminated as TerminateInstanceInAutoScalingGroup
    without decrement does (its terminate hooks wait for the drainer; the replacement launches
    through the launch hooks), the next batch starts once the batch's instances are gone (or
    retained) and the group has its desired capacity InService, after InstanceWarmup; at each
    CheckpointPercentages it waits CheckpointDelay; after the last batch it bakes for BakeTime;
    an AlarmSpecification alarm in ALARM (moto's CloudWatch) fails it, or rolls it back with
    AutoRollback (API Reference: StartInstanceRefresh, RefreshPreferences,
    DescribeInstanceRefreshes, CancelInstanceRefresh, RollbackInstanceRefresh; User Guide,
    "Use an instance refresh to update instances in an Auto Scaling group" and "Undo changes
    with a rollback").

Simplifications: the batch size is size - ceil(size x MinHealthyPercentage / 100), at least one
(MaxHealthyPercentage above 100 launches that much extra instead); a replacement launches as
soon as its old instance enters Terminating:Wait (quiesce_moto's scale behaviour), not after it
is gone; a retained instance counts as replaced; warm pools and standby instances are not
modelled.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from moto.autoscaling import models as as_models
from moto.autoscaling import responses as as_responses
from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
from moto.core.responses import ActionResult

TICK = 0.2
# AWS's defaults (RefreshPreferences): CheckpointDelay 3600 s; InstanceWarmup falls back to the
# group's health check grace period, 0 here.
DEFAULT_CHECKPOINT_DELAY = 3600

# Every refresh ever started, per group name, oldest first.
REFRESHES: dict[str, list[Refresh]] = {}

_qm: Any = None  # the quiesce_moto module, set by install()

_GOING = ("Terminating", "Terminating:Wait", "Terminating:Proceed")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _resolve(template, version: str | None) -> str | None:
    """A version spelling ($Latest, $Default, "3") as the number it names."""
    if template is None:
        return None
    if version in (None, "", "$Default"):
        return str(template.default_version_number)
    if version == "$Latest":
        return str(template.latest_version_number)
    return str(version)


# --- instance lifecycle policy ------------------------------------------------------------------


def _policy_of(resp) -> dict | None:
    trigger = resp._get_param("InstanceLifecyclePolicy.RetentionTriggers.TerminateHookAbandon")
    if trigger is None:
        params = resp._get_params().get("InstanceLifecyclePolicy") or {}
        trigger = (params.get("RetentionTriggers") or {}).get("TerminateHookAbandon")
    if trigger is None:
        return None
    return {"RetentionTriggers": {"TerminateHookAbandon": trigger}}


def _wrap_group_call(name: str) -> None:
    original = getattr(as_responses.AutoScalingResponse, name)

    def call(self):
        result = original(self)
        policy = _policy_of(self)
        if policy is not None:
            group = self.autoscaling_backend.autoscaling_groups[
                self._get_param("AutoScalingGroupName")
            ]
            group.instance_lifecycle_policy = policy
        return result

    setattr(as_responses.AutoScalingResponse, name, call)


def _retains(action) -> bool:
    """Called by quiesce_moto when a terminate action ends abandoned: with the retain policy
    the instance stays, Terminating:Retained, and the group replaces it."""
    policy = getattr(action.group, "instance_lifecycle_policy", None) or {}
    if (policy.get("RetentionTriggers") or {}).get("TerminateHookAbandon") != "retain":
        return False
    action.state.lifecycle_state = "Terminating:Retained"
    _qm._log(f"{action.state.instance.id} retained (TerminateHookAbandon: retain)")
    action.group.set_desired_capacity(action.group.desired_capacity)
    return True


def _wrap_terminate() -> None:
    original = as_models.AutoScalingBackend.terminate_instance

    def terminate(self, instance_id, should_decrement):
        for group in self.autoscaling_groups.values():
            for state in group.instance_states:
                if state.instance.id == instance_id and state.lifecycle_state == "Terminating:Retained":
                    # A retained instance has been through its hooks: it just goes.
                    group.instance_states = [s for s in group.instance_states if s is not state]
                    self.ec2_backend.terminate_instances([instance_id])
                    return as_models.TerminateInstanceActivity(state.instance, group.desired_capacity)
        return original(self, instance_id, should_decrement)

    as_models.AutoScalingBackend.terminate_instance = terminate


# --- launch template version per instance -------------------------------------------------------


def _stamp_versions() -> None:
    original_init = as_models.InstanceState.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        group = self.auto_scaling_group
        self.launched_version = (
            _resolve(group.ec2_launch_template, group.launch_template_version)
            if group is not None and group.ec2_launch_template is not None
            else None
        )

    def launch_template(self):
        group = self.auto_scaling_group
        if group is None or group.ec2_launch_template is None:
            return None
        return {
            "LaunchTemplateId": group.ec2_launch_template.id,
            "LaunchTemplateName": group.ec2_launch_template.name,
            "Version": getattr(self, "launched_version", None)
            or str(group.ec2_launch_template.default_version_number),
        }

    as_models.InstanceState.__init__ = init
    as_models.InstanceState.launch_template = property(launch_template)


# --- the refresh ---------------------------------------------------------------------------------


class Refresh:
    def __init__(self, backend, group, desired: dict, prefs: dict, previous: dict, version: str) -> None:
        self.backend = backend
        self.group = group
        self.id = str(uuid.uuid4())
        self.status = "Pending"
        self.reason: str | None = None
        self.start_time = _now()
        self.end_time: datetime | None = None
        self.desired = desired
        self.prefs = prefs
        self.previous = previous
        self.rollback: dict | None = None
        self.version = version
        self._plan(version, skip=prefs.get("SkipMatching", False))

    def _plan(self, version: str, skip: bool) -> None:
        # Launching instances count too: a rollback replaces the new instances still starting.
        self.todo = [
            s.instance.id
            for s in self.group.instance_states
            if s.lifecycle_state in _qm._IN_GROUP
            and not (skip and getattr(s, "launched_version", None) == version)
        ]
        self.total = len(self.todo)
        self.done: list[str] = []
        # A batch in flight when a rollback starts finishes first.
        self.batch: list[str] = getattr(self, "batch", [])
        self.batch_done_at: float | None = None
        self.checkpoints = sorted(int(c) for c in self.prefs.get("CheckpointPercentages") or [])
        self.soak_until: float | None = None
        self.bake_until: float | None = None

    def percent(self) -> int:
        if self.total == 0:
            return 100
        return int(100 * len(self.done) / self.total)

    def to_json(self) -> dict[str, Any]:
        out = {
            "InstanceRefreshId": self.id,
            "AutoScalingGroupName": self.group.name,
            "Status": self.status,
            "StartTime": self.start_time,
            "PercentageComplete": self.percent() if self.rollback is None else 0,
            "InstancesToUpdate": len(self.todo) if self.rollback is None else 0,
            "Preferences": self.prefs,
            "DesiredConfiguration": self.desired,
        }
        if self.reason:
            out["StatusReason"] = self.reason
        if self.end_time:
            out["EndTime"] = self.end_time
        if self.rollback is not None:
            out["RollbackDetails"] = {
                "RollbackReason": self.rollback["reason"],
                "RollbackStartTime": self.rollback["start"],
                "PercentageCompleteOnRollback": self.percent(),
                "InstancesToUpdateOnRollback": len(self.todo),
            }
        return out

    def active(self) -> bool:
        return self.status in ("Pending", "InProgress", "Baking", "Cancelling", "RollbackInProgress")

    def _end(self, status: str, reason: str | None = None) -> None:
        self.status = status
        if reason is not None:
            self.reason = reason
        self.end_time = _now()
        _qm._log(f"instance refresh {self.id} of {self.group.name}: {status} {reason or ''}")

    def _state(self, instance_id: str):
        return next((s for s in self.group.instance_states if s.instance.id == instance_id), None)

    def _batch_finished(self) -> bool:
        for iid in self.batch:
            state = self._state(iid)
            if state is not None and state.lifecycle_state != "Terminating:Retained":
                return False
        in_service = [s for s in self.group.instance_states if s.lifecycle_state == "InService"]
        return len(in_service) >= (self.group.desired_capacity or 0)

    def _batch_size(self) -> int:
        size = len([s for s in self.group.instance_states if s.lifecycle_state in _qm._IN_GROUP])
        min_healthy = int(self.prefs.get("MinHealthyPercentage", 90))
        out = max(1, size - math.ceil(size * min_healthy / 100))
        max_healthy = self.prefs.get("MaxHealthyPercentage")
        if max_healthy is not None and int(max_healthy) > 100:
            out = max(out, max(1, size * (int(max_healthy) - 100) // 100))
        return min(out, max(size, 1))

    def _alarm(self) -> str | None:
        names = (self.prefs.get("AlarmSpecification") or {}).get("Alarms") or []
        if not names:
            return None
        from moto.cloudwatch.models import cloudwatch_backends

        cw = cloudwatch_backends[self.backend.account_id][self.backend.region_name]
        for name in names:
            alarm = cw.alarms.get(name)
            if alarm is not None and alarm.state_value == "ALARM":
                return name
        return None

    def start_rollback(self, reason: str) -> None:
        self.rollback = {"reason": reason, "start": _now()}
        self.status = "RollbackInProgress"
        self.reason = reason
        _set_template(self.group, self.previous)
        self._plan(_resolve(self.group.ec2_launch_template, self.previous["Version"]), skip=True)
        _qm._log(f"instance refresh {self.id}: rolling back to version {self.previous['Version']}")

    def tick(self, now: float) -> None:
        if self.status == "Pending":
            self.status = "InProgress"
        if self.status in ("InProgress", "Baking"):
            alarm = self._alarm()
            if alarm is not None:
                why = f"alarm {alarm} is in ALARM"
                if self.prefs.get("AutoRollback"):
                    self.start_rollback(why)
                else:
                    self._end("Failed", why)
                return
        if self.batch:
            if not self._batch_finished():
                return
            self.done.extend(self.batch)
            self.batch = []
            self.batch_done_at = now
        if self.status == "Cancelling":
            self._end("Cancelled", "cancelled by a user request")
            return
        warmup = int(self.prefs.get("InstanceWarmup") or 0)
        if self.batch_done_at is not None and now < self.batch_done_at + warmup:
            return
        rolling_back = self.status == "RollbackInProgress"
        if not rolling_back and self.checkpoints and self.percent() >= self.checkpoints[0]:
            if self.soak_until is None:
                delay = self.prefs.get("CheckpointDelay")
                delay = DEFAULT_CHECKPOINT_DELAY if delay is None else int(delay)
                self.soak_until = now + delay
                self.reason = f"Waiting for checkpoint at {self.checkpoints[0]}% ({delay}s)"
            if now < self.soak_until:
                return
            self.checkpoints.pop(0)
            self.soak_until = None
            self.reason = None
        if not self.todo:
            if rolling_back:
                self._end("RollbackSuccessful")
                return
            bake = int(self.prefs.get("BakeTime") or 0)
            if self.bake_until is None and bake > 0:
                self.bake_until = now + bake
                self.status = "Baking"
            if self.bake_until is not None and now < self.bake_until:
                return
            self._end("Successful")
            return
        count = self._batch_size()
        while self.todo and len(self.batch) < count:
            iid = self.todo[0]
            state = self._state(iid)
            if state is not None and state.lifecycle_state in _qm._IN_GROUP[:3]:
                break  # still launching: replaced once in service
            self.todo.pop(0)
            if state is None or state.lifecycle_state != "InService":
                self.done.append(iid)
                continue
            self.batch.append(iid)
            self.backend.terminate_instance(iid, False)


def _set_template(group, spec: dict) -> None:
    group._set_launch_configuration(None, spec, None)


def _refreshes_ticker() -> None:
    while True:
        time.sleep(TICK)
        with _qm.LOCK:
            now = time.monotonic()
            for refreshes in REFRESHES.values():
                for r in refreshes:
                    if r.active():
                        try:
                            r.tick(now)
                        except Exception as e:  # one bad refresh must not stop the others
                            r._end("Failed", f"internal error: {e!r}")


def _active(group_name: str) -> Refresh | None:
    return next((r for r in REFRESHES.get(group_name, []) if r.active()), None)


def _group(resp):
    name = resp._get_param("AutoScalingGroupName")
    group = resp.autoscaling_backend.autoscaling_groups.get(name)
    if group is None:
        raise ValidationError(f"AutoScalingGroup name not found - {name}")
    return group


def _prefs(resp) -> dict[str, Any]:
    params = resp._get_params().get("Preferences") or {}
    out: dict[str, Any] = {}
    for key in ("MinHealthyPercentage", "MaxHealthyPercentage", "InstanceWarmup",
                "CheckpointDelay", "BakeTime"):
        if params.get(key) is not None:
            out[key] = int(params[key])
    for key in ("SkipMatching", "AutoRollback"):
        if params.get(key) is not None:
            out[key] = str(params[key]).lower() == "true"
    checkpoints = params.get("CheckpointPercentages")
    if checkpoints:
        values = checkpoints.values() if isinstance(checkpoints, dict) else checkpoints
        out["CheckpointPercentages"] = [int(c) for c in values]
    alarms = (params.get("AlarmSpecification") or {}).get("Alarms")
    if alarms:
        values = alarms.values() if isinstance(alarms, dict) else alarms
        out["AlarmSpecification"] = {"Alarms": list(values)}
    out.setdefault("MinHealthyPercentage", 90)
    return out


def _start(self) -> ActionResult:
    group = _group(self)
    if _active(group.name) is not None:
        raise AutoscalingClientError(
            "InstanceRefreshInProgress",
            f"An Instance Refresh is already in progress and blocks the execution of this "
            f"Instance Refresh for group {group.name}.",
        )
    if group.ec2_launch_template is None:
        raise ValidationError("The group must use a launch template for an instance refresh.")
    desired = (self._get_params().get("DesiredConfiguration") or {}).get("LaunchTemplate") or {}
    previous = {
        "LaunchTemplateId": group.ec2_launch_template.id,
        "Version": group.provided_launch_template_version or "$Default",
    }
    if desired:
        spec = {"LaunchTemplateId": desired.get("LaunchTemplateId") or group.ec2_launch_template.id,
                "Version": desired.get("Version") or "$Default"}
        if desired.get("LaunchTemplateName") and not desired.get("LaunchTemplateId"):
            spec = {"LaunchTemplateName": desired["LaunchTemplateName"],
                    "Version": desired.get("Version") or "$Default"}
        _set_template(group, spec)
    version = _resolve(group.ec2_launch_template, group.launch_template_version)
    refresh = Refresh(
        self.autoscaling_backend,
        group,
        {"LaunchTemplate": {"LaunchTemplateId": group.ec2_launch_template.id,
                            "Version": group.provided_launch_template_version or "$Default"}},
        _prefs(self),
        previous,
        version,
    )
    REFRESHES.setdefault(group.name, []).append(refresh)
    _qm._log(f"instance refresh {refresh.id} of {group.name}: {refresh.total} to replace")
    return ActionResult({"InstanceRefreshId": refresh.id})


def _describe(self) -> ActionResult:
    name = self._get_param("AutoScalingGroupName")
    ids = self._get_param("InstanceRefreshIds", [])
    refreshes = list(reversed(REFRESHES.get(name, [])))  # newest first, as AWS lists them
    if ids:
        refreshes = [r for r in refreshes if r.id in ids]
    return ActionResult({"InstanceRefreshes": [r.to_json() for r in refreshes]})


def _cancel(self) -> ActionResult:
    group = _group(self)
    refresh = _active(group.name)
    if refresh is None or refresh.status == "RollbackInProgress":
        raise AutoscalingClientError(
            "ActiveInstanceRefreshNotFound",
            f"No in progress or pending Instance Refresh found for Auto Scaling group {group.name}",
        )
    refresh.status = "Cancelling"
    return ActionResult({"InstanceRefreshId": refresh.id})


def _rollback(self) -> ActionResult:
    group = _group(self)
    refresh = _active(group.name)
    if refresh is None or refresh.status in ("Cancelling", "RollbackInProgress"):
        raise AutoscalingClientError(
            "ActiveInstanceRefreshNotFound",
            f"No in progress or pending Instance Refresh found for Auto Scaling group {group.name}",
        )
    desired = refresh.desired["LaunchTemplate"]["Version"]
    if desired in ("$Latest", "$Default") or refresh.previous["Version"] in ("$Latest", "$Default"):
        # "IrreversibleInstanceRefresh": the desired or previous configuration names $Latest or
        # $Default, which cannot be rolled back to a known version (API_RollbackInstanceRefresh).
        raise AutoscalingClientError(
            "IrreversibleInstanceRefresh",
            "The request failed because a desired configuration was not found or an "
            "incompatible launch template version ($Latest or $Default) is present on the "
            "Auto Scaling group.",
        )
    refresh.start_rollback("rollback requested by a user")
    return ActionResult({"InstanceRefreshId": refresh.id})


def install(qm) -> None:
    """Patches moto (with quiesce_moto's module, whose lock and logger it shares) and starts
    the refreshes' clock."""
    global _qm
    _qm = qm
    qm._retains = _retains
    _wrap_group_call("create_auto_scaling_group")
    _wrap_group_call("update_auto_scaling_group")
    _wrap_terminate()
    _stamp_versions()
    as_responses.AutoScalingResponse.start_instance_refresh = _start
    as_responses.AutoScalingResponse.describe_instance_refreshes = _describe
    as_responses.AutoScalingResponse.cancel_instance_refresh = _cancel
    as_responses.AutoScalingResponse.rollback_instance_refresh = _rollback
    threading.Thread(target=_refreshes_ticker, name="instance-refreshes", daemon=True).start()


