"""The deployment files in infra/: the Ray cluster launcher YAML validates against Ray's
own autoscaler schema, the KubeRay manifests carry the fields relatent relies on (and their
core Kubernetes parts validate offline against the official schemas), the entrypoints use
only options relatent really has, and every image and version names the Ray version pinned
in pyproject.toml."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT

INFRA = REPO_ROOT / "infra"


def ray_pin() -> str:
    text = (REPO_ROOT / "pyproject.toml").read_text()
    m = re.search(r'"ray\[default\]==([0-9][0-9.]*)"', text)
    assert m, "pyproject.toml must pin ray[default]==X.Y.Z exactly"
    return m.group(1)


def k8s_docs() -> dict[str, list[dict[str, Any]]]:
    out = {}
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        out[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert out, "infra/k8s has no manifests"
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    docs = [d for ds in k8s_docs().values() for d in ds if d["kind"] == kind]
    # RayJobs embedded in ConfigMaps (the CronJob fallback) count too
    for ds in k8s_docs().values():
        for d in ds:
            if d["kind"] == "ConfigMap":
                for text in d.get("data", {}).values():
                    docs += [e for e in yaml.safe_load_all(text) if e and e.get("kind") == kind]
    return docs


def transcode_args(entrypoint: str) -> Any:
    """Parse a ``relatent transcode ...`` entrypoint with relatent's own parser (so the
    manifests cannot use options that do not exist)."""
    import argparse

    from jobs import transcode

    argv = shlex.split(entrypoint)
    assert argv[:2] == ["relatent", "transcode"], entrypoint
    parser = argparse.ArgumentParser(prog="relatent")
    transcode.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv[1:])


def catalog_args(command: str) -> Any:
    """Parse a ``relatent catalog ...`` command with relatent's own parser."""
    import argparse

    from jobs import catalog

    argv = shlex.split(command)
    assert argv[:2] == ["relatent", "catalog"], command
    parser = argparse.ArgumentParser(prog="relatent")
    catalog.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv[1:])


# --------------------------------------------------------------------------- AWS launcher


@pytest.fixture(scope="module")
def cluster_yaml() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "aws" / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema(cluster_yaml) -> None:
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster_yaml, schema)
    # and what `ray up` does before launching: merge the provider defaults, validate again
    validate_config(fillout_defaults(cluster_yaml))


def test_cluster_yaml_autoscaling_shape(cluster_yaml) -> None:
    types = cluster_yaml["available_node_types"]
    head = types[cluster_yaml["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "the head must take no work"
    gpu = [t for name, t in types.items() if name != cluster_yaml["head_node_type"]]
    assert len(gpu) == 1
    worker = gpu[0]
    assert worker["min_workers"] == 0 and worker["max_workers"] >= 1
    assert worker["resources"]["GPU"] >= 1 and worker["resources"]["CPU"] >= 1
    assert worker["max_workers"] <= cluster_yaml["max_workers"]
    assert cluster_yaml["idle_timeout_minutes"] > 0 and cluster_yaml["upscaling_speed"] > 0
    assert cluster_yaml["docker"]["image"] == f"rayproject/ray:{ray_pin()}-py311-gpu"
    setup = " ".join(cluster_yaml["setup_commands"])
    assert "pip install" in setup and "/home/ray/relatent" in setup
    assert "/home/ray/relatent" in cluster_yaml["file_mounts"]
    assert any("auth_token" in k for k in cluster_yaml["file_mounts"])


# --------------------------------------------------------------------------- Docker


def test_dockerfile_ray_version_equals_the_pin() -> None:
    import ray

    text = (INFRA / "docker" / "Dockerfile").read_text()
    pin = ray_pin()
    assert ray.__version__ == pin, "the installed Ray differs from the pin"
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    assert args["RAY_VERSION"] == pin
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert base.replace("${RAY_VERSION}", args["RAY_VERSION"]).startswith(f"rayproject/ray:{pin}-")
    assert base.endswith("-gpu")
    assert re.search(r"pip install [^\n]*\.", text) and "ray.__version__" in text


# --------------------------------------------------------------------------- Kubernetes


def _gpu_worker_groups(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = []
    for g in spec["workerGroupSpecs"]:
        for c in g["template"]["spec"]["containers"]:
            res = c.get("resources", {})
            if "nvidia.com/gpu" in res.get("limits", {}) or "nvidia.com/gpu" in res.get(
                "requests", {}
            ):
                groups.append(g)
    return groups


def check_cluster_spec(spec: dict[str, Any]) -> None:
    pin = ray_pin()
    assert spec["rayVersion"] == pin
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "the head takes no work"
    groups = _gpu_worker_groups(spec)
    assert groups, "no GPU worker group"
    for g in groups:
        assert g["minReplicas"] == 0 and g["maxReplicas"] >= 1 and g.get("replicas", 0) == 0
        for c in g["template"]["spec"]["containers"]:
            req, lim = c["resources"]["requests"], c["resources"]["limits"]
            assert req["nvidia.com/gpu"] == lim["nvidia.com/gpu"], "GPU requests must equal limits"
    images = [
        c["image"]
        for tmpl in [spec["headGroupSpec"]["template"]]
        + [g["template"] for g in spec["workerGroupSpecs"]]
        for c in tmpl["spec"]["containers"]
    ]
    for image in images:
        assert f"ray{pin}" in image or f"ray:{pin}" in image, image


def test_raycluster_autoscales_gpu_workers_from_zero() -> None:
    (rc,) = by_kind("RayCluster")
    assert rc["apiVersion"] == "ray.io/v1"
    check_cluster_spec(rc["spec"])
    assert rc["spec"]["authOptions"]["mode"] == "token"


def test_rayjob_runs_transcode_and_shuts_down() -> None:
    jobs = [j for j in by_kind("RayJob") if "transcode" in j["spec"]["entrypoint"]]
    assert len(jobs) == 1
    spec = jobs[0]["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    check_cluster_spec(spec["rayClusterSpec"])
    a = transcode_args(spec["entrypoint"])
    assert a.address == "auto", "a job's driver must join its cluster"
    assert a.actors and a.gpus_per_actor > 0 and a.shard_frames and a.max_inflight
    workers = _gpu_worker_groups(spec["rayClusterSpec"])[0]
    gpus = int(
        workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    )
    assert a.actors * a.gpus_per_actor <= workers["maxReplicas"] * gpus, (
        "more GPUs than the cluster can grow to"
    )


def test_scheduled_catalog_manifests() -> None:
    (cron,) = by_kind("RayCronJob")
    assert cron["apiVersion"] == "ray.io/v1"
    assert len(cron["spec"]["schedule"].split()) == 5
    tmpl = cron["spec"]["jobTemplate"]
    catalog_jobs = [tmpl] + [
        j["spec"] for j in by_kind("RayJob") if "catalog" in j["spec"]["entrypoint"]
    ]
    assert len(catalog_jobs) == 2  # the RayCronJob's and the CronJob fallback's
    for spec in catalog_jobs:
        a = catalog_args(spec["entrypoint"])
        assert a.src.startswith("s3://") and a.out.startswith("s3://") and not a.dry_run
        assert a.address == "auto", "a job's driver must join its cluster"
        assert a.gpus_per_actor > 0 and a.actors and a.lease_ttl > 0
        assert spec["shutdownAfterJobFinishes"] is True
        check_cluster_spec(spec["rayClusterSpec"])
        workers = _gpu_worker_groups(spec["rayClusterSpec"])[0]
        limits = workers["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert a.actors * a.gpus_per_actor <= workers["maxReplicas"] * int(limits["nvidia.com/gpu"])
    (cj,) = by_kind("CronJob")
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"


def test_core_kubernetes_objects_validate_offline() -> None:
    """Core objects against the official schemas (kubernetes-validate, no cluster, no
    network); the pod templates inside the Ray CRDs are checked as Pods."""
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.latest_version()
    checked = set()
    for docs in k8s_docs().values():
        for d in docs:
            if d["apiVersion"].startswith("ray.io/"):
                specs = [
                    d["spec"].get("rayClusterSpec")
                    or d["spec"].get("jobTemplate", {}).get("rayClusterSpec")
                    or d["spec"]
                ]
                for spec in specs:
                    for i, tmpl in enumerate(
                        [spec["headGroupSpec"]["template"]]
                        + [g["template"] for g in spec["workerGroupSpecs"]]
                    ):
                        pod = {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "metadata": {"name": f"t{i}"},
                            "spec": tmpl["spec"],
                        }
                        kv.validate(pod, version, strict=True)
                checked.add(d["kind"])
            else:
                kv.validate(d, version, strict=True)
                checked.add(d["kind"])
    assert {
        "CronJob",
        "ConfigMap",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "RayCluster",
        "RayJob",
        "RayCronJob",
    } <= checked


# --------------------------------------------------------------------------- cron


def test_crontab_example() -> None:
    lines = [
        ln
        for ln in (INFRA / "cron" / "relatent-catalog.cron").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#") and not re.match(r"^\w+=", ln)
    ]
    assert lines
    for ln in lines:
        fields = ln.split(None, 5)
        assert len(fields) == 6 and all(re.fullmatch(r"[\d*/,-]+", f) for f in fields[:5]), ln
        cmd = fields[5]
        assert "relatent catalog " in cmd and " --out " in cmd
        catalog = "relatent catalog " + cmd.split("relatent catalog ", 1)[1].split(" >>")[0]
        a = catalog_args(catalog)
        if "ray job submit" in cmd:  # runs as a Ray job: must join that cluster
            assert a.address == "auto"
        # cron treats a bare % as a newline: every % must be escaped
        assert not re.search(r"(?<!\\)%", cmd), ln


# --------------------------------------------------------------------------- docs


def test_operations_doc_commands_parse() -> None:
    """Every ``relatent transcode|submit|jobs|catalog`` command in docs/operations.md and in the
    infra comments parses with relatent's own parsers (no invented options)."""
    import argparse

    from jobs import catalog, submit, transcode

    parser = argparse.ArgumentParser(prog="relatent", exit_on_error=False)
    sub = parser.add_subparsers(dest="command")
    transcode.add_parser(sub)
    catalog.add_parser(sub)
    submit.add_submit_parser(sub)
    submit.add_jobs_parser(sub)
    sources = [REPO_ROOT / "docs" / "operations.md", *sorted(INFRA.rglob("*.yaml"))]
    commands = []
    for path in sources:
        text = path.read_text()
        if path.suffix == ".yaml":  # comments only (entrypoints are checked as YAML above)
            text = "\n".join(ln.strip() for ln in text.splitlines() if ln.strip().startswith("#"))
        text = re.sub(r"\\\n\s*#?\s*", " ", text)  # join continued lines
        for line in text.splitlines():
            line = line.lstrip("#").strip()
            # (catalog only when a prefix or an option follows: comments use the word in prose)
            m = re.match(
                r"relatent (?:(?:transcode|submit|jobs) |catalog (?=s3://|[./~$-])).*", line
            )
            if m:
                commands.append((path.name, m.group(0).split("  #")[0].split(" # ")[0]))
    assert len(commands) >= 8
    for name, cmd in commands:
        argv = [a for a in shlex.split(cmd.replace("$PWD", "/w").replace("$(", "(")) if a][1:]
        try:
            parser.parse_args(argv)
        except (argparse.ArgumentError, SystemExit) as exc:
            pytest.fail(f"{name}: `{cmd}` does not parse: {exc}")
