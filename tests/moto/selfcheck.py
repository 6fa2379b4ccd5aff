#!/usr/bin/env python3
"""Checks that quiesce_moto.py's lifecycle hooks behave like AWS's, through boto3.

    python3 tests/moto/selfcheck.py --endpoint http://127.0.0.1:PORT

Exit 0 when every check passes; otherwise exit 1 naming the first check that failed. Every wait
is a deadline loop on an observable state; nothing sleeps to synchronise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

REGION = "us-east-1"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"


class CheckFailed(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)
    print(f"ok: {what}", flush=True)


def wait_for(pred, what: str, timeout: float = 15.0):
    """Polls `pred` until it returns something truthy, or fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            print(f"ok: {what}", flush=True)
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not within {timeout}s")
        time.sleep(0.1)


class Clients:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        kw = dict(
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            # No retries: a 500 NotImplemented must show, not be retried away.
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )
        self.asg = boto3.client("autoscaling", **kw)
        self.ec2 = boto3.client("ec2", **kw)
        self.sqs = boto3.client("sqs", **kw)
        self.events = boto3.client("events", **kw)

    def actions(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.endpoint}/_quiesce/lifecycle-actions", timeout=5) as r:
            return json.loads(r.read())

    def state(self, instance_id: str) -> str | None:
        got = self.asg.describe_auto_scaling_instances(InstanceIds=[instance_id])
        rows = got["AutoScalingInstances"]
        return rows[0]["LifecycleState"] if rows else None

    def group_instances(self, group: str) -> dict[str, str]:
        g = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
        return {i["InstanceId"]: i["LifecycleState"] for i in g["AutoScalingGroups"][0]["Instances"]}

    def ec2_state(self, instance_id: str) -> str:
        r = self.ec2.describe_instances(InstanceIds=[instance_id])
        return r["Reservations"][0]["Instances"][0]["State"]["Name"]

    def receive(self, queue_url: str, what: str, pred=lambda body: True) -> dict:
        """The next message on the queue that `pred` accepts (deleted once read)."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1
            )
            for m in got.get("Messages", []):
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
                body = json.loads(m["Body"])
                if pred(body):
                    print(f"ok: {what}: {m['Body']}", flush=True)
                    return body
                print(f"(skipped on the way to {what}: {m['Body']})", flush=True)
        raise CheckFailed(f"{what}: no message within 15s")


def expect_validation_error(call, message: str, what: str) -> None:
    try:
        call()
    except ClientError as e:
        err = e.response["Error"]
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        check(
            status == 400 and err.get("Code") == "ValidationError" and err.get("Message") == message,
            f"{what}: HTTP 400 ValidationError {message!r} (got {status} {err})",
        )
        return
    raise CheckFailed(f"{what}: the call succeeded")


def make_group(c: Clients, name: str, size: int) -> list[str]:
    c.asg.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": "selfcheck", "Version": "$Latest"},
        MinSize=0,
        MaxSize=5,
        DesiredCapacity=size,
        AvailabilityZones=[f"{REGION}a"],
    )
    ids = sorted(c.group_instances(name))
    check(len(ids) == size, f"group {name} has {size} instances")
    return ids


def run(c: Clients) -> None:
    image = c.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    c.ec2.create_launch_template(
        LaunchTemplateName="selfcheck",
        LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"},
    )
    hooks_url = c.sqs.create_queue(QueueName="selfcheck-hooks")["QueueUrl"]
    hooks_arn = c.sqs.get_queue_attributes(QueueUrl=hooks_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events_url = c.sqs.create_queue(QueueName="selfcheck-events")["QueueUrl"]
    events_arn = c.sqs.get_queue_attributes(QueueUrl=events_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    c.events.put_rule(
        Name="selfcheck-lifecycle",
        EventPattern=json.dumps(
            {
                "source": ["aws.autoscaling"],
                "detail-type": ["EC2 Instance-terminate Lifecycle Action"],
            }
        ),
    )
    c.events.put_targets(Rule="selfcheck-lifecycle", Targets=[{"Id": "q", "Arn": events_arn}])

    group = "selfcheck"
    i1, i2 = make_group(c, group, 2)
    role = "arn:aws:iam::123456789012:role/selfcheck-hook-role"
    c.asg.put_lifecycle_hook(
        AutoScalingGroupName=group,
        LifecycleHookName="drain",
        LifecycleTransition=TERMINATING,
        HeartbeatTimeout=30,
        DefaultResult="ABANDON",
        NotificationTargetARN=hooks_arn,
        RoleARN=role,
        NotificationMetadata="selfcheck-metadata",
    )
    hook = c.asg.describe_lifecycle_hooks(AutoScalingGroupName=group)["LifecycleHooks"][0]
    check(
        hook["NotificationTargetARN"] == hooks_arn
        and hook["RoleARN"] == role
        and hook["HeartbeatTimeout"] == 30
        and hook["GlobalTimeout"] == 3000
        and hook["DefaultResult"] == "ABANDON"
        and hook["NotificationMetadata"] == "selfcheck-metadata"
        and hook["LifecycleTransition"] == TERMINATING,
        f"DescribeLifecycleHooks returns what was put ({hook})",
    )
    test = c.receive(hooks_url, "the test notification")
    check(
        test.get("Event") == "autoscaling:TEST_NOTIFICATION"
        and test.get("AutoScalingGroupName") == group,
        "PutLifecycleHook sent the test notification",
    )

    # Terminate with a decrement: Terminating:Wait, notification, EventBridge event.
    c.asg.terminate_instance_in_auto_scaling_group(
        InstanceId=i1, ShouldDecrementDesiredCapacity=True
    )
    check(c.state(i1) == "Terminating:Wait", f"{i1} is in Terminating:Wait")
    check(
        c.group_instances(group).get(i1) == "Terminating:Wait",
        "DescribeAutoScalingGroups shows Terminating:Wait",
    )
    check(c.ec2_state(i1) == "running", f"{i1} still runs in EC2")
    note = c.receive(hooks_url, "the lifecycle notification on SQS")
    token = note.get("LifecycleActionToken")
    check(
        note.get("Service") == "AWS Auto Scaling"
        and note.get("EC2InstanceId") == i1
        and note.get("AutoScalingGroupName") == group
        and note.get("LifecycleHookName") == "drain"
        and note.get("LifecycleTransition") == TERMINATING
        and note.get("NotificationMetadata") == "selfcheck-metadata"
        and note.get("AccountId") == "123456789012"
        and note.get("Origin") == "AutoScalingGroup"
        and note.get("Destination") == "EC2"
        and bool(note.get("RequestId"))
        and str(note.get("Time", "")).endswith("Z")
        and bool(token),
        "the SQS notification has the documented fields",
    )
    event = c.receive(events_url, "the EventBridge event on SQS")
    detail = event.get("detail", {})
    check(
        event.get("source") == "aws.autoscaling"
        and event.get("detail-type") == "EC2 Instance-terminate Lifecycle Action"
        and detail.get("LifecycleActionToken") == token
        and detail.get("EC2InstanceId") == i1
        and detail.get("LifecycleHookName") == "drain"
        and detail.get("Origin") == "AutoScalingGroup"
        and detail.get("Destination") == "EC2"
        and event.get("resources", [""])[0].startswith("arn:aws:autoscaling:"),
        "the EventBridge event has the documented fields",
    )

    c.asg.record_lifecycle_action_heartbeat(
        AutoScalingGroupName=group, LifecycleHookName="drain", LifecycleActionToken=token
    )
    mine = [a for a in c.actions() if a["token"] == token]
    check(len(mine) == 1 and mine[0]["heartbeats"] == 1, "the heartbeat was counted")
    check(c.state(i1) == "Terminating:Wait", f"{i1} still waits after the heartbeat")

    c.asg.complete_lifecycle_action(
        AutoScalingGroupName=group,
        LifecycleHookName="drain",
        LifecycleActionToken=token,
        LifecycleActionResult="CONTINUE",
    )
    check(c.state(i1) is None, f"{i1} left the group after CONTINUE")
    check(c.ec2_state(i1) == "terminated", f"{i1} is terminated in EC2")
    check(sorted(c.group_instances(group)) == [i2], "the group keeps only the other instance")

    expect_validation_error(
        lambda: c.asg.complete_lifecycle_action(
            AutoScalingGroupName=group,
            LifecycleHookName="drain",
            LifecycleActionToken=token,
            LifecycleActionResult="CONTINUE",
        ),
        f"No active Lifecycle Action found with token {token}",
        "a second completion by token",
    )
    expect_validation_error(
        lambda: c.asg.complete_lifecycle_action(
            AutoScalingGroupName=group,
            LifecycleHookName="drain",
            InstanceId=i1,
            LifecycleActionResult="CONTINUE",
        ),
        f"No active Lifecycle Action found with instance ID {i1}",
        "a second completion by instance ID",
    )
    expect_validation_error(
        lambda: c.asg.record_lifecycle_action_heartbeat(
            AutoScalingGroupName=group,
            LifecycleHookName="drain",
            LifecycleActionToken="00000000-0000-0000-0000-000000000000",
        ),
        "No active Lifecycle Action found with token 00000000-0000-0000-0000-000000000000",
        "a heartbeat with an unknown token",
    )
    mine = [a for a in c.actions() if a["token"] == token][0]
    check(
        mine["result"] == "CONTINUE" and mine["completedBy"] == "api" and mine["completions"] == 1,
        f"CONTINUE recorded once ({mine})",
    )

    # Terminate without a decrement: a replacement launches while the old instance waits.
    c.asg.terminate_instance_in_auto_scaling_group(
        InstanceId=i2, ShouldDecrementDesiredCapacity=False
    )
    now = c.group_instances(group)
    check(
        now.get(i2) == "Terminating:Wait"
        and sorted(s for i, s in now.items() if i != i2) == ["InService"],
        f"without a decrement {i2} waits and a replacement is InService ({now})",
    )
    note = c.receive(hooks_url, "the notification for the second instance")
    check(note.get("EC2InstanceId") == i2, "it names the second instance")
    c.asg.complete_lifecycle_action(
        AutoScalingGroupName=group,
        LifecycleHookName="drain",
        InstanceId=i2,
        LifecycleActionResult="ABANDON",
    )
    check(c.state(i2) is None, f"{i2} left the group after ABANDON by instance ID")

    # DefaultResult after a 2 s heartbeat timeout, reached by a scale-in.
    short = "selfcheck-timeout"
    (j1,) = make_group(c, short, 1)
    c.asg.put_lifecycle_hook(
        AutoScalingGroupName=short,
        LifecycleHookName="short",
        LifecycleTransition=TERMINATING,
        HeartbeatTimeout=2,
        DefaultResult="CONTINUE",
    )
    c.asg.set_desired_capacity(AutoScalingGroupName=short, DesiredCapacity=0)
    check(c.state(j1) == "Terminating:Wait", f"scale-in put {j1} in Terminating:Wait")
    started = time.monotonic()
    wait_for(lambda: c.state(j1) is None, f"{j1} terminated by the heartbeat timeout")
    waited = time.monotonic() - started
    check(1.5 <= waited <= 6, f"the timeout took about 2 s ({waited:.1f} s)")
    mine = [a for a in c.actions() if a["instanceId"] == j1][0]
    check(
        mine["result"] == "CONTINUE" and mine["completedBy"] == "timeout" and mine["completions"] == 0,
        f"DefaultResult CONTINUE applied by the timeout ({mine})",
    )

    # Launch hook: Pending:Wait, then CONTINUE puts it InService.
    c.asg.put_lifecycle_hook(
        AutoScalingGroupName=short,
        LifecycleHookName="boot",
        LifecycleTransition=LAUNCHING,
        HeartbeatTimeout=30,
    )
    c.asg.update_auto_scaling_group(AutoScalingGroupName=short, DesiredCapacity=1)
    (k1,) = c.group_instances(short)
    check(c.state(k1) == "Pending:Wait", f"scale-out put {k1} in Pending:Wait")
    c.asg.complete_lifecycle_action(
        AutoScalingGroupName=short,
        LifecycleHookName="boot",
        InstanceId=k1,
        LifecycleActionResult="CONTINUE",
    )
    check(c.state(k1) == "InService", f"{k1} is InService after CONTINUE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", required=True)
    args = parser.parse_args()
    try:
        run(Clients(args.endpoint))
    except CheckFailed as e:
        print(f"selfcheck FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception as e:  # an unexpected error is a failure too, with its cause
        print(f"selfcheck FAILED with an error: {e!r}", file=sys.stderr, flush=True)
        raise
    print("selfcheck passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
