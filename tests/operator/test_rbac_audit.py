"""The chart's RBAC against what the operator and the gateway really call: the apiserver's
audit log (the session's cluster keeps haven-system's ServiceAccounts' requests, see
tests/conftest.py) over every test that ran with the release, compared with their rules.
Nothing missing (no call refused, no verb used without a rule); on a full run (`pytest tests`
or `make test`), nothing unused either."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from haven_localcluster import release

ROOT = Path(__file__).resolve().parents[2]
NS = release.NAMESPACE
# Granted but never called: the apiserver checks them when a child's ownerReference sets
# blockOwnerDeletion (OwnerReferencesPermissionEnforcement, e.g. OpenShift).
ADMISSION_ONLY = {
    ("streams.haven.dev", "livestreams/finalizers", "update"),
    ("streams.haven.dev", "recordings/finalizers", "update"),
}
Verb = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def granted(kubectl, account: str) -> set[Verb]:
    """Every rule of every Role and ClusterRole bound to the ServiceAccount `account`."""
    rules = []
    for kind in ("clusterrolebindings", "rolebindings"):
        bindings = json.loads(kubectl("get", kind, "-A", "-o", "json").stdout)["items"]
        for binding in bindings:
            subjects = binding.get("subjects") or []
            if not any(s["kind"] == "ServiceAccount" and s["name"] == account
                       and s.get("namespace") == NS for s in subjects):  # fmt: skip
                continue
            ref, namespace = binding["roleRef"], binding["metadata"].get("namespace")
            where = ["-n", namespace] if ref["kind"] == "Role" else []
            role = json.loads(kubectl("get", ref["kind"], ref["name"], *where, "-o", "json").stdout)
            rules += role["rules"]
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule["verbs"]
    }


def used(audit_log: Path, user: str) -> tuple[set[Verb], list[tuple[str, ...]]]:
    calls, refused = set(), []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef")
        if event["user"]["username"] != user or not ref:
            continue  # another account, or a non-resource URL (discovery)
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        group, code = ref.get("apiGroup", ""), event.get("responseStatus", {}).get("code")
        calls.add((group, resource, event["verb"]))
        if event["verb"] == "patch" and code == 201:
            calls.add(
                (group, resource, "create")
            )  # a server-side apply that created: authorized as create
        # Refused by RBAC (a 403 may also be admission's, e.g. a namespace being deleted).
        if event.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid":
            refused.append((event["verb"], group, resource, ref.get("namespace", "")))
    return calls, refused


def full_run(config: pytest.Config) -> bool:
    args = {(ROOT / a.split("::")[0]).resolve() for a in config.args}
    no_filter = not config.option.keyword and not config.option.markexpr
    return no_filter and args <= {ROOT, ROOT / "tests"}


@pytest.mark.last
def test_rbac_rules_are_exactly_the_verbs_used(cluster, kubectl, operator, request):
    audit_log = cluster.control_plane.audit_log
    accounts = {name: granted(kubectl, f"haven-{name}") for name in ("operator", "gateway")}
    report = []
    for account, rules in accounts.items():
        calls, refused = used(audit_log, f"system:serviceaccount:{NS}:haven-{account}")
        if not calls and account == "gateway" and not full_run(request.config):
            continue  # no gateway test in this run
        assert calls, f"no {account} requests in {audit_log}: did the release run?"
        assert not refused, f"{account}'s calls refused by RBAC: {sorted(set(refused))}"
        missing = calls - rules
        assert not missing, f"{account} used verbs its RBAC does not grant: {sorted(missing)}"
        unused = rules - calls - ADMISSION_ONLY
        report.append(f"{account}: {len(calls)} verbs used, unused: {sorted(unused) or 'none'}")
        if full_run(request.config):
            assert not unused, f"{account}'s RBAC grants verbs it never used: {sorted(unused)}"
    print("\n".join(report))
