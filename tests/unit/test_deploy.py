"""The Kubernetes manifests and the Helm chart in deploy/: valid against the Kubernetes
schemas (offline, kubernetes-validate), generated from the chart's values, equal to what the
chart's templates render, and consistent with what `chronik serve` serves and how it stops."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml

from chronik.cli.serve import SHUTDOWN_MARGIN
from chronik.server.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "chronik"
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes the manifests are checked against
RELEASE = {"Name": "chronik", "Namespace": "chronik", "Service": "Helm"}


def _render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chronik_deploy_render", DEPLOY / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _render_module()


def manifests() -> list[dict[str, Any]]:
    """Every object in deploy/kubernetes/."""
    found = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        found += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] == kind]


# --- a Go-template subset, exact for the forms the chart uses and refusing any other -------
# Each action is either inline ({{ EXPR }}: a value, `include`, piped to `quote`), or alone on
# its line with a left trim: {{- if PATH }} / {{- end }} (the line disappears, as the trim
# eats the newline before it) or {{- include NAME . | nindent N }} / {{- toYaml PATH |
# nindent N }} (the line becomes the block, indented). Helm's toYaml text may differ from
# PyYAML's, so only the parsed result is compared, never the text.

ACTION = re.compile(r"\{\{(-?) ?(.*?) ?(-?)\}\}")
BLOCK = re.compile(r"^\s*\{\{- (include \"[\w.]+\" \.|toYaml [\w.]+) \| nindent (\d+) \}\}$")
CONTROL = re.compile(r"^\s*\{\{- (if [\w.]+|end) \}\}$")
DEFINE = re.compile(r"\{\{- define \"([\w.]+)\" -\}\}(.*?)\{\{- end \}\}", re.S)


class Chart:
    """The chart's templates, rendered with the chart's values for RELEASE."""

    def __init__(self, values: dict[str, Any]) -> None:
        chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
        self.scope = {
            "Values": values,
            "Release": RELEASE,
            "Chart": {"Name": chart["name"], "AppVersion": chart["appVersion"]},
        }
        text = (CHART / "templates" / "_helpers.tpl").read_text()
        self.defines = {name: body.strip() for name, body in DEFINE.findall(text)}

    def lookup(self, path: str) -> Any:
        """The value at ``.A.b.c``; KeyError if missing (helm would print <no value>)."""
        value: Any = self.scope
        for part in path.lstrip(".").split("."):
            value = value[part]
        return value

    def expr(self, text: str) -> Any:
        """One pipeline: a path or an include, then ``quote`` / ``toYaml`` / ``nindent N``."""
        head, *pipes = [p.strip() for p in text.split("|")]
        include = re.fullmatch(r'include "([\w.]+)" \.', head)
        if include:
            value: Any = self.inline(self.defines[include.group(1)])
        elif head.startswith("toYaml "):
            value = yaml.safe_dump(self.lookup(head[7:]), sort_keys=True).rstrip("\n")
        elif re.fullmatch(r"\.[\w.]+", head):
            value = self.lookup(head)
        else:
            raise AssertionError(f"template action outside the tested subset: {text!r}")
        for pipe in pipes:
            if pipe == "quote":
                value = json.dumps(self.scalar(value))
            elif match := re.fullmatch(r"nindent (\d+)", pipe):
                pad = " " * int(match.group(1))
                value = "\n" + "\n".join(pad + line for line in str(value).split("\n"))
            else:
                raise AssertionError(f"template function outside the tested subset: {pipe!r}")
        return value

    @staticmethod
    def scalar(value: Any) -> str:
        """A value as Go's text/template prints it, for the kinds it prints the same way."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int) and abs(value) < 1_000_000:  # helm prints 1e+06 beyond
            return str(value)
        if isinstance(value, str):
            return value
        raise AssertionError(f"value {value!r} is printed differently by helm")

    def inline(self, line: str) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(1) or match.group(3):
                raise AssertionError(f"a trimming action inside a line: {line!r}")
            return self.scalar(self.expr(match.group(2)))

        return ACTION.sub(one, line)

    def render(self, name: str) -> str:
        """One template's output."""
        out: list[str] = []
        active = [True]
        for line in (CHART / "templates" / name).read_text().split("\n"):
            if control := CONTROL.match(line):
                action = control.group(1)
                if action == "end":
                    active.pop()
                else:
                    active.append(active[-1] and bool(self.lookup(action[3:])))
            elif not active[-1]:
                continue
            elif block := BLOCK.match(line):
                out.append(self.expr(f"{block.group(1)} | nindent {block.group(2)}").lstrip("\n"))
            else:
                out.append(self.inline(line))
        assert active == [True], f"{name}: unbalanced if / end"
        return "\n".join(out)


def chart_objects(values: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """What the chart renders, by template."""
    chart = Chart(values)
    return {
        p.name: [d for d in yaml.safe_load_all(chart.render(p.name)) if d]
        for p in sorted((CHART / "templates").glob("*.yaml"))
    }


def comparable(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Objects with the ConfigMap's embedded YAML files parsed (their text may differ)."""
    out = []
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            data = {k: yaml.safe_load(v) for k, v in obj["data"].items()}
            obj = {**obj, "data": data}
        out.append(obj)
    return out


def test_every_manifest_is_valid_for_the_pinned_kubernetes_version() -> None:
    """Each object in deploy/kubernetes/ validates, strictly (no unknown fields)."""
    found = manifests()
    assert {d["kind"] for d in found} == {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }
    for doc in found:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_an_invalid_manifest_is_refused_by_the_validator() -> None:
    """The validator is not a no-op: a probe port of the wrong type fails validation."""
    server = json.loads(json.dumps(by_kind("Deployment")[0]))
    server["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(server, KUBERNETES_VERSION, strict=True)


def test_the_plain_manifests_are_rendered_from_the_chart_values() -> None:
    """deploy/kubernetes/ is exactly what deploy/render.py writes (no hand edits, no drift)."""
    files = render.render_files()
    on_disk = {p.name: p.read_text() for p in (DEPLOY / "kubernetes").glob("*.yaml")}
    assert on_disk == files


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"worker": {"enabled": False}},
        {"podDisruptionBudget": {"enabled": False}},
    ],
)
def test_the_chart_renders_the_same_objects_as_render_py(changes: dict[str, Any]) -> None:
    """Every template, rendered with the chart's values, equals render.py's objects field for
    field (names, labels, ports, probes, grace, securityContext, resources, config), and so
    passes the same schema validation; with the worker or the PDB switched off too."""
    values = render.load_values()
    for key, change in changes.items():
        values[key] = {**values[key], **change}
    expected = render.render(values, service="Helm")
    rendered = chart_objects(values)
    assert set(rendered) == set(expected)
    for name, objects in rendered.items():
        assert comparable(objects) == comparable(expected[name]), name
        for obj in objects:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    if changes.get("worker") == {"enabled": False}:
        assert rendered["worker-deployment.yaml"] == []


def test_the_subset_renderer_refuses_what_it_does_not_implement() -> None:
    """An action outside the subset (a `default` pipe) is an error, not a guess."""
    chart = Chart(render.load_values())
    with pytest.raises(AssertionError, match="outside the tested subset"):
        chart.inline('image: {{ .Values.image.tag | default "latest" }}')


def containers() -> dict[str, dict[str, Any]]:
    """The chronik container of each Deployment, by Deployment name."""
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]
        for d in by_kind("Deployment")
    }


def config_files() -> dict[str, Config]:
    """The ConfigMap's chronik.yaml files, loaded as chronik serve loads them."""
    (configmap,) = by_kind("ConfigMap")
    return {key: load_text(text) for key, text in configmap["data"].items()}


def load_text(text: str) -> Config:
    """A chronik.yaml's text, loaded (and validated) by chronik's own config loader."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        return load_config(f.name)


def test_probes_point_at_the_health_endpoints_chronik_serves() -> None:
    """Liveness and start-up on /healthz, readiness on /readyz, on the container's http port;
    those are the paths chronik's HTTP server routes."""
    from chronik import Chronik
    from chronik.server.http import create_http_app

    routes = {getattr(r, "path", None) for r in create_http_app(Chronik(store="memory://")).routes}
    assert {"/healthz", "/readyz"} <= routes
    for name, container in containers().items():
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, name


def test_the_grace_period_covers_pre_stop_grace_and_the_shutdown_margin() -> None:
    """terminationGracePeriodSeconds >= preStop sleep + `--grace` + SHUTDOWN_MARGIN, so the
    kubelet never SIGKILLs a server that is still shutting down within its own bound."""
    for deployment in by_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        args = container["args"]
        grace = float(args[args.index("--grace") + 1])
        sleep = container["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep"
        assert pod["terminationGracePeriodSeconds"] >= float(sleep[1]) + grace + SHUTDOWN_MARGIN


def test_container_ports_and_service_match_the_configured_ports() -> None:
    """Each Deployment's container ports are the ports its chronik.yaml binds, on all
    interfaces; the Service forwards to them and selects the servers only."""
    files = config_files()
    for deployment in by_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        key = pod["volumes"][0]["configMap"]["items"][0]["key"]
        config = files[key]
        ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
        assert ports == {"grpc": config.grpc.port, "http": config.http.port}
        assert config.grpc.host == config.http.host == "0.0.0.0"
        assert config.http.enabled and config.http.allowed_hosts is None  # probes send pod IPs
    (service,) = by_kind("Service")
    server_config = files["chronik.yaml"]
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "grpc": (server_config.grpc.port, "grpc"),
        "http": (server_config.http.port, "http"),
    }
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "server"


def test_servers_and_workers_run_chronik_serve_with_their_own_config() -> None:
    """Both run `chronik serve --config /etc/chronik/chronik.yaml`; only the workers' config
    names the projections; every key_env is in the Secret the pods load."""
    files = config_files()
    assert files["chronik.yaml"].projections is None
    assert files["worker.yaml"].projections
    (secret,) = by_kind("Secret")
    assert "CHRONIK_STORE" in secret["stringData"]
    for config in files.values():
        assert {k["key_env"] for k in config.auth.api_keys} <= set(secret["stringData"])
    mounted = {}
    for name, container in containers().items():
        assert container["args"][:3] == ["serve", "--config", "/etc/chronik/chronik.yaml"]
        assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
        assert {"name": "config", "mountPath": "/etc/chronik", "readOnly": True} in container[
            "volumeMounts"
        ]
        deployment = next(d for d in by_kind("Deployment") if d["metadata"]["name"] == name)
        mounted[name] = deployment["spec"]["template"]["spec"]["volumes"][0]["configMap"]
    assert mounted["chronik-server"]["items"] == [{"key": "chronik.yaml", "path": "chronik.yaml"}]
    assert mounted["chronik-worker"]["items"] == [{"key": "worker.yaml", "path": "chronik.yaml"}]


def test_pods_run_as_the_image_non_root_user_with_limits() -> None:
    """runAsNonRoot with the Dockerfile's numeric USER, no privilege escalation, resources set,
    two server replicas and a PodDisruptionBudget that keeps one available."""
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    for name, container in containers().items():
        ctx = container["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["allowPrivilegeEscalation"] is False
        assert (str(ctx["runAsUser"]), str(ctx["runAsGroup"])) == user, name
        assert container["resources"]["requests"] and container["resources"]["limits"]
    server = next(d for d in by_kind("Deployment") if d["metadata"]["name"] == "chronik-server")
    assert server["spec"]["replicas"] == 2
    pdbs = {p["metadata"]["name"]: p["spec"] for p in by_kind("PodDisruptionBudget")}
    assert pdbs["chronik-server"]["minAvailable"] == 1
    assert pdbs["chronik-server"]["selector"] == server["spec"]["selector"]
