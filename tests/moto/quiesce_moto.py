#!/usr/bin/env python3
"""moto's server, with Amazon EC2 Auto Scaling lifecycle hooks that behave like AWS.

moto 5.2.5 terminates at once, sends no lifecycle notification and answers
CompleteLifecycleAction / RecordLifecycleActionHeartbeat with 500 NotImplemented, so the drainer
(which consumes lifecycle notifications, heartbeats and completes the hook) could not be tested
against it. This launcher patches moto's Auto Scaling backend and responses, then serves all of
moto on 127.0.0.1 and prints one line, `moto ready: http://127.0.0.1:PORT`.

    python3 tests/moto/quiesce_moto.py --port 0      # 0: any free port

Behaviour follows the Amazon EC2 Auto Scaling User Guide and API Reference:
  - lifecycle hooks, wait states and timeouts:
    https://docs.aws.amazon.com/autoscaling/ec2/userguide/lifecycle-hooks.html
    https://docs.aws.amazon.com/autoscaling/ec2/userguide/lifecycle-hooks-overview.html
  - the notification sent to an SQS/SNS target, and the test notification:
    https://docs.aws.amazon.com/autoscaling/ec2/userguide/prepare-for-lifecycle-notifications.html
    https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_PutLifecycleHook.html
  - the EventBridge event:
    https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-event-reference.html
  - heartbeat and completion:
    https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_RecordLifecycleActionHeartbeat.html
    https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CompleteLifecycleAction.html

Tests can see every lifecycle action ever started at `GET /_quiesce/lifecycle-actions`, and
inject errors into SQS and Auto Scaling calls at `/_quiesce/faults`: `POST` a JSON object
`{"action": "ReceiveMessage", "count": 3, "status": 400, "code": "ThrottlingException"}` makes
the next `count` calls of that API action fail with that status and error code, in the
protocol's own error shape (SQS's JSON protocol, Auto Scaling's query XML); `GET` lists what is
still armed; `DELETE` disarms everything.

ELBv2 deregistration delays, paging and a stand-in for the AWS Load Balancer Controller are in
elbv2_ext.py (installed below, served under `/_quiesce/elbv2`).

Known simplifications: scale-in picks the first InService
unprotected instance instead of the default termination policy; SNS targets get the same JSON;
warm pools, Standby, detach and EC2 TerminateInstances bypass the hooks.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

import moto

# The patches below replace moto internals by name; they were written against 5.2.5
# (tests/requirements.txt) and another version may differ silently.
if moto.__version__ != "5.2.5":
    sys.exit(
        f"quiesce_moto: moto {moto.__version__} found at {moto.__file__}, 5.2.5 needed: "
        "run scripts/test --setup and put ~/.cache/quiesce/venv/bin first on PATH"
    )

from moto.autoscaling import models as as_models  # noqa: E402
from moto.autoscaling import responses as as_responses  # noqa: E402
from moto.autoscaling.exceptions import ValidationError  # noqa: E402
from moto.core.responses import ActionResult, EmptyResult  # noqa: E402

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"

# One lock for Auto Scaling requests and the timeout thread: moto's backends are not thread-safe
# and the server is threaded. SQS requests are not under it (long polls would block everything).
LOCK = threading.RLock()

# Every lifecycle action ever started, oldest first (the introspection endpoint lists them).
ACTIONS: list[Action] = []

# Set while a group is being deleted: AWS deletes the instances without running hooks then.
_BYPASS = threading.local()


def _iso_ms(t: float) -> str:
    """The timestamp format of the docs' notification example: 2021-01-19T00:36:26.533Z."""
    d = datetime.fromtimestamp(t, tz=timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def _log(msg: str) -> None:
    print(f"quiesce_moto: {msg}", file=sys.stderr, flush=True)


class Action:
    """One hook's lifecycle action on one instance (AWS: one token per hook and transition)."""

    def __init__(self, backend, group, state, hook) -> None:
        self.backend = backend
        self.group = group
        self.state = state
        self.hook = hook
        self.token = str(uuid.uuid4())
        self.transition = hook.lifecycle_transition
        self.started = time.monotonic()
        # GlobalTimeout: heartbeats cannot keep the instance waiting past it (API_LifecycleHook).
        self.global_deadline = self.started + hook.global_timeout
        self.deadline = min(self.started + hook.heartbeat_timeout, self.global_deadline)
        self.heartbeats = 0
        self.result: str | None = None
        self.completed_by: str | None = None
        self.completions = 0
        self.active = True

    def to_json(self) -> dict[str, Any]:
        return {
            "instanceId": self.state.instance.id,
            "group": self.group.name,
            "hook": self.hook.name,
            "token": self.token,
            "transition": self.transition,
            "heartbeats": self.heartbeats,
            "result": self.result,
            "completedBy": self.completed_by,
            "completions": self.completions,
        }


# --- PutLifecycleHook / DescribeLifecycleHooks keep the real fields --------------------------

_orig_hook_init = as_models.LifecycleHook.__init__


def _hook_init(self, name, as_name, transition, timeout, result, **extra) -> None:
    _orig_hook_init(self, name, as_name, transition, timeout, result)
    # moto hard-codes these two; AWS returns what was put (absent when not set).
    self.role_arn = extra.get("role_arn")
    self.notification_target_arn = extra.get("notification_target_arn")
    self.notification_metadata = extra.get("notification_metadata")
    self._set_global_timeout()


def _set_global_timeout(self) -> None:
    # "The maximum time ... is 48 hours or 100 times HeartbeatTimeout, whichever is smaller."
    # (API_LifecycleHook, GlobalTimeout; lifecycle-hooks-overview "wait state").
    self.global_timeout = min(172800, 100 * self.heartbeat_timeout)


as_models.LifecycleHook.__init__ = _hook_init
as_models.LifecycleHook._set_global_timeout = _set_global_timeout


def _create_lifecycle_hook(self, name, as_name, transition, timeout, result, **extra):
    # PutLifecycleHook "creates or updates": on update, only the parameters given change.
    key = f"{as_name}_{name}"
    hook = self.lifecycle_hooks.get(key)
    if hook is None:
        # HeartbeatTimeout below AWS's minimum of 30 s is accepted on purpose: tests need it short.
        hook = as_models.LifecycleHook(name, as_name, transition, timeout, result, **extra)
        self.lifecycle_hooks[key] = hook
    else:
        if transition:
            hook.lifecycle_transition = transition
        if timeout is not None:
            hook.heartbeat_timeout = timeout
            hook._set_global_timeout()
        if result:
            hook.default_result = result
        for k, v in extra.items():
            if v is not None:
                # "If you specify an empty string, this overrides the current ARN."
                setattr(hook, k, v or None)
    if extra.get("notification_target_arn"):
        _send_test_notification(self, hook)
    return hook


def _put_lifecycle_hook(self) -> ActionResult:
    self.autoscaling_backend.create_lifecycle_hook(
        name=self._get_param("LifecycleHookName"),
        as_name=self._get_param("AutoScalingGroupName"),
        transition=self._get_param("LifecycleTransition"),
        timeout=self._get_int_param("HeartbeatTimeout"),
        result=self._get_param("DefaultResult"),
        role_arn=self._get_param("RoleARN"),
        notification_target_arn=self._get_param("NotificationTargetARN"),
        notification_metadata=self._get_param("NotificationMetadata"),
    )
    return EmptyResult()


as_models.AutoScalingBackend.create_lifecycle_hook = _create_lifecycle_hook
as_responses.AutoScalingResponse.put_lifecycle_hook = _put_lifecycle_hook


def _hooks(backend, group_name: str, transition: str) -> list:
    return [
        h
        for h in backend.lifecycle_hooks.values()
        if h.auto_scaling_group_name == group_name and h.lifecycle_transition == transition
    ]


# --- notifications ----------------------------------------------------------------------------


def _deliver(backend, target_arn: str, body: dict[str, Any]) -> None:
    """Sends to the hook's SQS queue (or SNS topic) in moto, as Auto Scaling would."""
    parts = target_arn.split(":")
    if len(parts) < 6:
        _log(f"notification target {target_arn!r} is not an ARN; nothing sent")
        return
    service, region, account, name = parts[2], parts[3], parts[4], parts[5]
    text = json.dumps(body)
    try:
        if service == "sqs":
            from moto.sqs.models import sqs_backends

            sqs_backends[account][region].send_message(queue_name=name, message_body=text)
        elif service == "sns":
            from moto.sns.models import sns_backends

            sns_backends[account][region].publish(text, arn=target_arn)
        else:
            _log(f"notification target {target_arn} is neither SQS nor SNS; nothing sent")
    except Exception as e:  # a missing queue must not fail the Auto Scaling call
        _log(f"could not notify {target_arn}: {e!r}")


def _send_test_notification(backend, hook) -> None:
    # "When you specify a notification target, Amazon EC2 Auto Scaling sends it a test message.
    # Test messages contain the following additional key-value pair:
    # "Event": "autoscaling:TEST_NOTIFICATION"" (API_PutLifecycleHook, NotificationTargetARN).
    group = backend.autoscaling_groups.get(hook.auto_scaling_group_name)
    body = {
        "AccountId": backend.account_id,
        "RequestId": str(uuid.uuid4()),
        "AutoScalingGroupARN": group.arn if group else None,
        "AutoScalingGroupName": hook.auto_scaling_group_name,
        "Service": "AWS Auto Scaling",
        "Event": "autoscaling:TEST_NOTIFICATION",
        "Time": _iso_ms(time.time()),
    }
    _deliver(backend, hook.notification_target_arn, body)


def _origin_destination(transition: str) -> tuple[str, str]:
    # Event reference: launch goes EC2 -> AutoScalingGroup, terminate the other way round.
    if transition == LAUNCHING:
        return "EC2", "AutoScalingGroup"
    return "AutoScalingGroup", "EC2"


def _notify(action: Action) -> None:
    backend, hook, group = action.backend, action.hook, action.group
    now = time.time()
    origin, destination = _origin_destination(action.transition)
    # 1. The direct notification to the hook's target, as in prepare-for-lifecycle-notifications
    #    ("Receive notifications using Amazon SQS", example message).
    if hook.notification_target_arn:
        body = {
            "Origin": origin,
            "LifecycleHookName": hook.name,
            "Destination": destination,
            "AccountId": backend.account_id,
            "RequestId": str(uuid.uuid4()),
            "LifecycleTransition": action.transition,
            "AutoScalingGroupName": group.name,
            "Service": "AWS Auto Scaling",
            "Time": _iso_ms(now),
            "EC2InstanceId": action.state.instance.id,
            "LifecycleActionToken": action.token,
        }
        if hook.notification_metadata is not None:
            body["NotificationMetadata"] = hook.notification_metadata
        _deliver(backend, hook.notification_target_arn, body)
    # 2. The EventBridge event, sent for every lifecycle action whatever the hook's target
    #    (ec2-auto-scaling-event-reference: "EC2 Instance-terminate Lifecycle Action").
    detail = {
        "LifecycleActionToken": action.token,
        "AutoScalingGroupName": group.name,
        "LifecycleHookName": hook.name,
        "EC2InstanceId": action.state.instance.id,
        "LifecycleTransition": action.transition,
        "Origin": origin,
        "Destination": destination,
    }
    if hook.notification_metadata is not None:
        detail["NotificationMetadata"] = hook.notification_metadata
    kind = "launch" if action.transition == LAUNCHING else "terminate"
    try:
        from moto.events.models import events_backends

        events_backends[backend.account_id][backend.region_name].put_events(
            [
                {
                    "Source": "aws.autoscaling",
                    "DetailType": f"EC2 Instance-{kind} Lifecycle Action",
                    "Detail": json.dumps(detail),
                    "Resources": [group.arn],
                    "Time": now,  # moto formats it as yyyy-mm-ddThh:mm:ssZ on delivery
                }
            ]
        )
    except Exception as e:
        _log(f"could not put the EventBridge event: {e!r}")


# --- starting and finishing lifecycle actions ---------------------------------------------------


def _start(backend, group, state, transition: str, hooks: list) -> None:
    # "Terminating:Wait" / "Pending:Wait": the instance waits for every hook of the transition.
    state.lifecycle_state = "Pending:Wait" if transition == LAUNCHING else "Terminating:Wait"
    for hook in hooks:
        action = Action(backend, group, state, hook)
        ACTIONS.append(action)
        _log(
            f"{transition} hook {hook.name}: {state.instance.id} waits, token {action.token}, "
            f"heartbeat timeout {hook.heartbeat_timeout}s"
        )
        _notify(action)


def _finish(action: Action, result: str, by: str) -> None:
    action.active = False
    action.result = result
    action.completed_by = by
    if by == "api":
        action.completions += 1
    _log(f"{action.hook.name} on {action.state.instance.id}: {result} by {by}")
    siblings = [
        a
        for a in ACTIONS
        if a.state is action.state and a.transition == action.transition and a is not action
    ]
    # "ABANDON ... stops any remaining actions, such as other lifecycle hooks" (lifecycle-hooks
    # overview); otherwise the instance moves on once every hook has answered.
    if result == "ABANDON":
        for a in siblings:
            if a.active:
                a.active = False
    elif any(a.active for a in siblings):
        return
    abandoned = result == "ABANDON" or any(a.result == "ABANDON" for a in siblings)
    if abandoned and action.transition == TERMINATING and _retains(action):
        return
    backend, group, state = action.backend, action.group, action.state
    if action.transition == LAUNCHING and not abandoned:
        state.lifecycle_state = "InService"
        return
    # Terminate (CONTINUE or ABANDON alike), or a launch that was abandoned: the instance goes.
    group.instance_states = [s for s in group.instance_states if s is not state]
    backend.ec2_backend.terminate_instances([state.instance.id])
    if group.name in backend.autoscaling_groups:
        backend.update_attached_elbs(group.name)
        backend.update_attached_target_groups(group.name)
        if action.transition == LAUNCHING:
            # An abandoned launch is replaced: desired capacity has not changed.
            group.set_desired_capacity(group.desired_capacity)


def _retains(action: Action) -> bool:
    """Whether the group's instance lifecycle policy keeps the abandoned instance
    (refresh_ext.py models it; without it every instance goes)."""
    return False


def _timeouts() -> None:
    """Applies DefaultResult when HeartbeatTimeout (or GlobalTimeout) passes without an answer."""
    while True:
        time.sleep(0.2)
        with LOCK:
            now = time.monotonic()
            for action in list(ACTIONS):
                if action.active and now >= action.deadline:
                    _finish(action, action.hook.default_result, "timeout")


# --- where instances enter the wait states ------------------------------------------------------

_IN_GROUP = ("Pending", "Pending:Wait", "Pending:Proceed", "InService")
_orig_set_desired = as_models.FakeAutoScalingGroup.set_desired_capacity
_orig_replace = as_models.FakeAutoScalingGroup.replace_autoscaling_group_instances
_orig_terminate = as_models.AutoScalingBackend.terminate_instance
_orig_delete_group = as_models.AutoScalingBackend.delete_auto_scaling_group


def _active_instances(self) -> list:
    # Instances waiting to launch count toward capacity (else a scale-out would launch twice);
    # those in Terminating:Wait do not (they are already leaving).
    return [s for s in self.instance_states if s.lifecycle_state in _IN_GROUP]


def _set_desired_capacity(self, new_capacity) -> None:
    backend = self.autoscaling_backend
    hooks = _hooks(backend, self.name, TERMINATING)
    if not hooks or getattr(_BYPASS, "on", False) or self.mixed_instances_policy:
        return _orig_set_desired(self, new_capacity)
    desired = self.min_size if new_capacity is None else new_capacity
    excess = len(self.active_instances()) - (desired or 0)
    if excess <= 0:
        return _orig_set_desired(self, new_capacity)
    # Scale-in: the chosen instances wait in Terminating:Wait instead of vanishing.
    self.desired_capacity = desired
    victims = [
        s
        for s in self.instance_states
        if s.lifecycle_state == "InService" and not s.protected_from_scale_in
    ][:excess]
    for state in victims:
        _start(backend, self, state, TERMINATING, hooks)
    if self.name in backend.autoscaling_groups:
        backend.update_attached_elbs(self.name)
        backend.update_attached_target_groups(self.name)


def _replace_instances(self, count_needed, propagated_tags) -> None:
    before = set(id(s) for s in self.instance_states)
    _orig_replace(self, count_needed, propagated_tags)
    backend = self.autoscaling_backend
    hooks = _hooks(backend, self.name, LAUNCHING)
    if not hooks:
        return
    for state in self.instance_states:
        if id(state) not in before:
            _start(backend, self, state, LAUNCHING, hooks)


def _terminate_instance(self, instance_id, should_decrement):
    state = next(
        (s for g in self.autoscaling_groups.values() for s in g.instance_states
         if s.instance.id == instance_id),
        None,
    )
    if state is None:
        # moto raises StopIteration (HTTP 500) here; AWS answers with a ValidationError.
        raise ValidationError(
            f"Instance Id not found - No managed instance found for instance ID: {instance_id}"
        )
    group = state.instance.autoscaling_group
    hooks = _hooks(self, group.name, TERMINATING)
    if not hooks:
        return _orig_terminate(self, instance_id, should_decrement)
    original_size = group.desired_capacity
    if state.lifecycle_state.startswith("Terminating"):
        return as_models.TerminateInstanceActivity(state.instance, original_size)
    if should_decrement:
        group.desired_capacity -= 1
    _start(self, group, state, TERMINATING, hooks)
    # Without the decrement a replacement launches now, while the old one waits.
    group.set_desired_capacity(group.desired_capacity)
    return as_models.TerminateInstanceActivity(state.instance, original_size)


def _delete_group(self, group_name) -> None:
    for a in ACTIONS:
        if a.active and a.group.name == group_name:
            a.active = False
    _BYPASS.on = True
    try:
        return _orig_delete_group(self, group_name)
    finally:
        _BYPASS.on = False


as_models.FakeAutoScalingGroup.active_instances = _active_instances
as_models.FakeAutoScalingGroup.set_desired_capacity = _set_desired_capacity
as_models.FakeAutoScalingGroup.replace_autoscaling_group_instances = _replace_instances
as_models.AutoScalingBackend.terminate_instance = _terminate_instance
as_models.AutoScalingBackend.delete_auto_scaling_group = _delete_group


# --- RecordLifecycleActionHeartbeat / CompleteLifecycleAction ------------------------------------


def _find_action(resp) -> Action:
    group = resp._get_param("AutoScalingGroupName")
    hook = resp._get_param("LifecycleHookName")
    token = resp._get_param("LifecycleActionToken")
    instance_id = resp._get_param("InstanceId")
    for a in ACTIONS:
        if not a.active or a.group.name != group or a.hook.name != hook:
            continue
        if token and a.token == token:
            return a
        if not token and instance_id and a.state.instance.id == instance_id:
            return a
    # AWS's wording names what the caller gave: "No active Lifecycle Action found with token
    # <uuid>" or "... with instance ID i-..." (both seen in real CompleteLifecycleAction errors).
    if token:
        raise ValidationError(f"No active Lifecycle Action found with token {token}")
    if instance_id:
        raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")
    raise ValidationError("Either LifecycleActionToken or InstanceId must be specified")


def _record_heartbeat(self) -> ActionResult:
    a = _find_action(self)
    a.heartbeats += 1
    # "restarts the timeout" (API_RecordLifecycleActionHeartbeat), never past GlobalTimeout.
    a.deadline = min(time.monotonic() + a.hook.heartbeat_timeout, a.global_deadline)
    return EmptyResult()


def _complete(self) -> ActionResult:
    result = self._get_param("LifecycleActionResult")
    if result not in ("CONTINUE", "ABANDON"):
        raise ValidationError(
            f"Value '{result}' at 'lifecycleActionResult' failed to satisfy constraint: "
            "Member must be CONTINUE or ABANDON"
        )
    _finish(_find_action(self), result, "api")
    return EmptyResult()


as_responses.AutoScalingResponse.record_lifecycle_action_heartbeat = _record_heartbeat
as_responses.AutoScalingResponse.complete_lifecycle_action = _complete

_orig_call_action = as_responses.AutoScalingResponse.call_action


def _locked_call_action(self):
    with LOCK:
        return _orig_call_action(self)


as_responses.AutoScalingResponse.call_action = _locked_call_action


import elbv2_ext  # noqa: E402  (this directory is the script's, so first on sys.path)

elbv2_ext.install(sys.modules[__name__])

# --- the server ----------------------------------------------------------------------------------


# Armed faults, oldest first: {"action", "count", "status", "code"}.
FAULTS: list[dict[str, Any]] = []
FAULTS_LOCK = threading.Lock()


def _api_action(environ) -> tuple[str | None, bool]:
    """The API action a request calls and whether it speaks the JSON protocol. The body is
    read and put back, so moto still sees it."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.rsplit(".", 1)[-1], True
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    query = environ.get("QUERY_STRING", "") + "&" + body.decode("utf-8", "replace")
    action = parse_qs(query).get("Action", [None])[0]
    return action, False


def _injected(environ, start_response):
    """The armed fault this request hits, answered; None when it hits none."""
    action, json_protocol = _api_action(environ)
    with FAULTS_LOCK:
        fault = next((f for f in FAULTS if f["action"] == action and f["count"] > 0), None)
        if fault is None:
            return None
        fault["count"] -= 1
        if fault["count"] == 0:
            FAULTS.remove(fault)
    code, status = fault["code"], int(fault["status"])
    message = fault.get("message", "injected by quiesce_moto")
    _log(f"injected {status} {code} into {action}")
    if json_protocol:
        # The AWS JSON protocol's error shape; SQS also names the query-compatible code.
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("x-amzn-query-error", f"{code};Sender"),
        ]
    else:
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml")]
    headers.append(("Content-Length", str(len(body))))
    start_response(f"{status} Injected", headers)
    return [body]


def _faults_endpoint(environ, start_response):
    method = environ.get("REQUEST_METHOD")
    with FAULTS_LOCK:
        if method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            fault = json.loads(environ["wsgi.input"].read(length) or b"{}")
            missing = [k for k in ("action", "count", "status", "code") if k not in fault]
            if missing:
                body = json.dumps({"error": f"fault needs {missing}"}).encode()
                start_response("400 Bad Request", [("Content-Type", "application/json")])
                return [body]
            FAULTS.append(fault)
        elif method == "DELETE":
            FAULTS.clear()
        body = json.dumps(FAULTS).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


class Introspection:
    """WSGI middleware: `/_quiesce/…` here, injected faults, everything else to moto."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/_quiesce/faults":
            return _faults_endpoint(environ, start_response)
        if environ.get("PATH_INFO", "").startswith("/_quiesce/elbv2"):
            return elbv2_ext.endpoint(environ, start_response)
        if FAULTS:
            answered = _injected(environ, start_response)
            if answered is not None:
                return answered
        if environ.get("PATH_INFO") == "/_quiesce/lifecycle-actions":
            with LOCK:
                body = json.dumps([a.to_json() for a in ACTIONS]).encode()
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return self.app(environ, start_response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()

    from werkzeug.serving import make_server

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    app = Introspection(DomainDispatcherApplication(create_backend_app))
    server = make_server(
        "127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    port = server.server_port
    # moto builds some URLs (e.g. Lambda's endpoint) from MOTO_PORT.
    os.environ["MOTO_PORT"] = str(port)
    threading.Thread(target=_timeouts, name="lifecycle-timeouts", daemon=True).start()
    # The socket listens already (make_server binds and listens), so connections made from now
    # on are accepted.
    print(f"moto ready: http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


# Instance Refresh and instance lifecycle policies (tests/moto/refresh_ext.py).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refresh_ext  # noqa: E402

refresh_ext.install(sys.modules[__name__])

if __name__ == "__main__":
    main()
