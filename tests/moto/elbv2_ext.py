"""What moto 5.2.5 lacks for load-balancer-aware drains (issue 17), installed by quiesce_moto.py.

- Deregistration delay: moto forgets a deregistered target at once. AWS keeps it `draining`
  (reason `Target.DeregistrationInProgress`) for the group's `deregistration_delay.timeout_seconds`,
  then it is gone (`unused`, `Target.NotRegistered`, when asked by id):
  https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-target-groups.html#deregistration-delay
  https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetHealth.html
  The delay is multiplied by a scale (`POST /_quiesce/elbv2 {"delayScale": 0.5}`; 1 by default).
- Paging: moto answers DescribeTargetGroups in one page and ignores `PageSize`/`Marker`; AWS
  pages (at most 400 a page, `NextMarker` until the last; `POST /_quiesce/elbv2 {"maxPage": 2}`
  makes pages smaller than asked, so a client's paging is exercised with a few groups):
  https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DescribeTargetGroups.html
- The AWS Load Balancer Controller: it deregisters a node from the instance-mode target groups
  it owns (tag `elbv2.k8s.aws/cluster`) once the node carries the
  `node.kubernetes.io/exclude-from-external-load-balancers` label or the
  `ToBeDeletedByClusterAutoscaler` taint. `POST /_quiesce/elbv2/controller
  {"apiServer": "http://127.0.0.1:PORT", "cluster": NAME}` starts a stand-in that reads the
  Nodes of that (plain-HTTP, loopback) API server every 200 ms, as the controller watches them,
  and deregisters each fenced node's instance (from its `spec.providerID`) from the groups
  tagged with that cluster. It does not register nodes again when they are unfenced.

`GET /_quiesce/elbv2/log` lists what happened, oldest first, each with its Unix time `at`:
`{"event": "deregistered", "group": NAME, "target": ID, "by": "api"|"controller"}`,
`{"event": "drained", "group": NAME, "target": ID}` (at the end of its delay), and every
lifecycle completion `{"event": "completed", "result": "CONTINUE"|"ABANDON", "target": ID}`, so
a test checks the order of deregistrations and CONTINUE on one clock.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

from moto.elbv2 import models as elb_models
from moto.elbv2 import responses as elb_responses
from moto.core.responses import ActionResult

CONTROLLER_TAG = "elbv2.k8s.aws/cluster"
EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
FENCE_TAINT = "ToBeDeletedByClusterAutoscaler"
DELAY = "deregistration_delay.timeout_seconds"
MAX_PAGE = 400

SCALE = {"delay": 1.0, "maxPage": MAX_PAGE}
LOG: list[dict[str, Any]] = []
# Set by install(): quiesce_moto's lock, which serialises every backend call.
HOST: dict[str, Any] = {}


def _record(event: str, **fields: Any) -> None:
    entry = {"event": event, "at": fields.pop("at", time.time()), **fields}
    LOG.append(entry)
    HOST["log"](f"elbv2 {entry}")


# --- deregistration delay -------------------------------------------------------------------


def _delay_of(group) -> float:
    return float(group.attributes.get(DELAY, 300)) * SCALE["delay"]


def _draining(group) -> dict[str, tuple[dict[str, Any], float]]:
    if not hasattr(group, "quiesce_draining"):
        group.quiesce_draining = {}
    return group.quiesce_draining


def _settle(group) -> None:
    """Targets whose delay is over leave `draining` for good."""
    now = time.time()
    draining = _draining(group)
    for target_id, (target, until) in list(draining.items()):
        if now >= until:
            del draining[target_id]
            group.deregistered_targets[target_id] = target
            _record("drained", group=group.name, target=target_id, at=until)


def _deregister(group, targets, by: str = "api") -> None:
    for target in targets:
        found = group.targets.pop(target["Id"], None)
        if not found:
            raise elb_models.InvalidTargetError()
        until = time.time() + _delay_of(group)
        _draining(group)[target["Id"]] = (found, until)
        _record("deregistered", group=group.name, target=target["Id"], by=by)
    _settle(group)


_orig_register = elb_models.FakeTargetGroup.register


def _register(self, targets) -> None:
    for target in targets:
        _draining(self).pop(target["Id"], None)
    _orig_register(self, targets)


_orig_health_for = elb_models.FakeTargetGroup.health_for


def _health_for(self, target, ec2_backend):
    _settle(self)
    entry = _draining(self).get(target["Id"])
    if entry is not None:
        return elb_models.FakeHealthStatus(
            target["Id"],
            entry[0].get("Port", self.port),
            self.health_check_port,
            "draining",
            "Target.DeregistrationInProgress",
            "Target deregistration is in progress",
        )
    return _orig_health_for(self, target, ec2_backend)


# --- paging ---------------------------------------------------------------------------------


def _describe_target_groups(self) -> ActionResult:
    groups = self.elbv2_backend.describe_target_groups(
        self._get_param("LoadBalancerArn"),
        self._get_param("TargetGroupArns", []),
        self._get_param("Names", []),
    )
    size = min(int(self._get_param("PageSize") or MAX_PAGE), int(SCALE["maxPage"]))
    start = int(self._get_param("Marker") or 0)
    page = list(groups)[start : start + size]
    result: dict[str, Any] = {"TargetGroups": page}
    if start + size < len(groups):
        result["NextMarker"] = str(start + size)
    return ActionResult(result)


# --- the controller stand-in ----------------------------------------------------------------


def _fenced(node: dict[str, Any]) -> bool:
    labels = node.get("metadata", {}).get("labels") or {}
    taints = node.get("spec", {}).get("taints") or []
    return EXCLUDE_LABEL in labels or any(t.get("key") == FENCE_TAINT for t in taints)


def _controller(api_server: str, cluster: str) -> None:
    while True:
        try:
            with urllib.request.urlopen(f"{api_server}/api/v1/nodes", timeout=2) as answer:
                nodes = json.load(answer).get("items", [])
        except OSError:
            # The API server is gone (its test ended) or busy: try again, as the controller's
            # watch does.
            time.sleep(0.2)
            continue
        fenced = {
            (n.get("spec", {}).get("providerID") or "").rsplit("/", 1)[-1]
            for n in nodes
            if _fenced(n)
        }
        with HOST["lock"]:
            for backend in _backends():
                for group in list(backend.target_groups.values()):
                    tags = backend.tagging_service.get_tag_dict_for_resource(group.arn)
                    if tags.get(CONTROLLER_TAG) != cluster:
                        continue
                    gone = [t for t in list(group.targets.values()) if t["Id"] in fenced]
                    if gone:
                        _deregister(group, gone, by="controller")
        time.sleep(0.2)


def _backends():
    for account in list(elb_models.elbv2_backends.keys()):
        for region, backend in list(elb_models.elbv2_backends[account].items()):
            yield backend


# --- wiring ---------------------------------------------------------------------------------


def _json(start_response, body: Any, status: str = "200 OK"):
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def endpoint(environ, start_response):
    """`/_quiesce/elbv2…`: the scale, the controller stand-in, the log."""
    path = environ.get("PATH_INFO")
    method = environ.get("REQUEST_METHOD")
    body: dict[str, Any] = {}
    if method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}")
    if path == "/_quiesce/elbv2" and method == "POST":
        SCALE["delay"] = float(body.get("delayScale", SCALE["delay"]))
        SCALE["maxPage"] = int(body.get("maxPage", SCALE["maxPage"]))
        return _json(start_response, SCALE)
    if path == "/_quiesce/elbv2/controller" and method == "POST":
        missing = [k for k in ("apiServer", "cluster") if k not in body]
        if missing:
            return _json(start_response, {"error": f"needs {missing}"}, "400 Bad Request")
        threading.Thread(
            target=_controller,
            args=(body["apiServer"], body["cluster"]),
            name="lb-controller",
            daemon=True,
        ).start()
        return _json(start_response, body)
    if path == "/_quiesce/elbv2/log":
        with HOST["lock"]:
            for backend in _backends():
                for group in backend.target_groups.values():
                    _settle(group)
            return _json(start_response, sorted(LOG, key=lambda e: e["at"]))
    return _json(start_response, {"error": f"no {method} {path}"}, "404 Not Found")


def install(host) -> None:
    """Patches moto's ELBv2 and logs the host's lifecycle completions; `host` is quiesce_moto."""
    HOST["lock"] = host.LOCK
    HOST["log"] = host._log
    elb_models.FakeTargetGroup.deregister = lambda self, targets: _deregister(self, targets)
    elb_models.FakeTargetGroup.register = _register
    elb_models.FakeTargetGroup.health_for = _health_for
    elb_responses.ELBV2Response.describe_target_groups = _describe_target_groups
    orig_call = elb_responses.ELBV2Response.call_action

    def locked_call(self):
        with host.LOCK:
            return orig_call(self)

    elb_responses.ELBV2Response.call_action = locked_call
    orig_finish = host._finish

    def finish(action, result, by):
        orig_finish(action, result, by)
        _record("completed", result=result, target=action.state.instance.id, by=by)

    host._finish = finish
