"""Stream-pod defaults from the chart (the operator's HAVEN_* settings) and a LiveStream's
spec.pod overriding them: pure functions, no cluster."""

from __future__ import annotations

from haven_operator.children import deployment
from haven_operator.settings import Settings

LS = {
    "metadata": {"name": "cam", "namespace": "ns", "uid": "u-1", "generation": 1},
    "spec": {"source": {"pumpfun": {"mintId": "m1"}}},
}
ENV = {
    "HAVEN_STREAM_POD_RESOURCES": '{"requests": {"cpu": "1"}}',
    "HAVEN_STREAM_POD_NODE_SELECTOR": '{"disktype": "ssd"}',
    "HAVEN_STREAM_POD_TOLERATIONS": '[{"key": "media", "operator": "Exists"}]',
    "HAVEN_STREAM_POD_PRIORITY_CLASS": "streams",
    "HAVEN_IMAGE_PULL_SECRETS": '[{"name": "regcred"}]',
}


def pod_spec(body: dict, settings: Settings) -> dict:
    return deployment(body, settings)["spec"]["template"]["spec"]


def test_without_settings_the_pod_has_no_placement_or_pull_secrets():
    spec = pod_spec(LS, Settings.from_env({}))
    assert not {"nodeSelector", "tolerations", "priorityClassName", "imagePullSecrets"} & set(spec)


def test_the_charts_defaults_reach_every_stream_pod():
    spec = pod_spec(LS, Settings.from_env(ENV))
    assert spec["nodeSelector"] == {"disktype": "ssd"}
    assert spec["tolerations"] == [{"key": "media", "operator": "Exists"}]
    assert spec["priorityClassName"] == "streams"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["containers"][0]["resources"] == {"requests": {"cpu": "1"}}


def test_a_livestream_overrides_the_defaults():
    pod = {
        "resources": {"limits": {"memory": "1Gi"}},
        "nodeSelector": {"zone": "a"},
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "priorityClassName": "vip",
    }
    body = {**LS, "spec": {**LS["spec"], "pod": pod}}
    spec = pod_spec(body, Settings.from_env(ENV))
    assert spec["nodeSelector"] == {"zone": "a"} and spec["priorityClassName"] == "vip"
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert spec["containers"][0]["resources"] == {"limits": {"memory": "1Gi"}}
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]  # not a LiveStream's to choose
