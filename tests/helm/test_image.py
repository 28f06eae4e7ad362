"""The container image.

Read: the lock file pins exactly the runtime closure, the Dockerfile installs from it,
exposes both entry points the chart calls, and defaults to a non-root user.

Built and run: scripts/build-images.sh builds the images with buildah (offline, on a local
python:3.12-slim-bookworm stand-in; cached, so this is quick when nothing changed) and
saves them as OCI archives; each test loads an archive into a private buildah store, as a
node's runtime would import it, and runs it. A build that cannot happen FAILS the tests
with the script's reason (buildah missing: scripts/system-deps.sh installs it).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
BUILD_IMAGES = REPO / "scripts" / "build-images.sh"
CACHE = Path(os.environ.get("DAMON_K8S_CACHE") or Path.home() / ".cache" / "damon-k8s")
# The names a node imports the archives under (ctr -n k8s.io images import), and the chart
# is installed with (image.repository=localhost/damon-k8s, image.tag=test).
PROJECT_IMAGE = "localhost/damon-k8s:test"
WORKLOAD_IMAGE = "localhost/damon-k8s-workload:test"
NON_ROOT = "65532"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_closure() -> dict[str, str]:
    """Normalised name -> installed version of the project's runtime dependencies, closed."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    environment = {**default_environment(), "extra": ""}
    found: dict[str, str] = {}
    pending = [Requirement(r).name for r in project["dependencies"]]
    while pending:
        name = pending.pop()
        if _normal(name) in found:
            continue
        dist = importlib.metadata.distribution(name)
        found[_normal(name)] = dist.version
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                pending.append(requirement.name)
    return found


def _lock() -> dict[str, str]:
    pins = {}
    for raw in (REPO / "requirements.lock").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not pinned with =="
            pins[_normal(name)] = version
    return pins


def test_lock_pins_exactly_the_installed_runtime_closure() -> None:
    closure, lock = _runtime_closure(), _lock()
    assert {"kopf", "kubernetes", "pydantic", "numpy", "aiohttp"} <= set(lock)
    assert set(lock) - set(closure) == set(), "pinned but not a runtime dependency"
    assert set(closure) - set(lock) == set(), "runtime dependency not pinned"
    wrong = {n: (lock[n], closure[n]) for n in lock if lock[n] != closure[n]}
    assert not wrong, f"lock differs from the tested versions (lock, installed): {wrong}"


def _dockerfile() -> list[str]:
    """Instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_dockerfile_builds_one_pinned_non_root_image_with_both_entry_points() -> None:
    lines = _dockerfile()
    base = next(line for line in lines if line.startswith("ARG PYTHON_IMAGE="))
    assert re.fullmatch(r"ARG PYTHON_IMAGE=python:3\.12\.\d+-slim-\w+", base), base
    stages = [line for line in lines if line.startswith("FROM ")]
    assert stages == ["FROM ${PYTHON_IMAGE} AS build", "FROM ${PYTHON_IMAGE}"]
    runs = " ".join(line for line in lines if line.startswith("RUN "))
    assert "--only-binary=:all: --no-deps -r requirements.lock" in runs
    assert re.search(r"setuptools==\d", runs), "the build backend must be pinned"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert "ENTRYPOINT" not in " ".join(lines)

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    chart = REPO / "helm" / "damon-k8s" / "templates"
    for program, template in (("damon-agent", "agent.yaml"), ("damon-operator", "operator.yaml")):
        assert program in scripts
        assert f"{program} --help" in runs, f"the build does not check that {program} runs"
        assert f'command: ["{program}"]' in (chart / template).read_text()
    values = yaml.safe_load((REPO / "helm" / "damon-k8s" / "values.yaml").read_text())
    assert values["operator"]["podSecurityContext"]["runAsUser"] == int(users[-1].split(":")[0])


def test_dockerignore_admits_what_the_dockerfile_copies() -> None:
    admitted = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = set()
    for line in _dockerfile():
        if line.startswith("COPY ") and "--from=" not in line:
            copied |= {source.rstrip("/") for source in line.split()[1:-1]}
    assert copied == admitted


# ---- the built images -------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> dict[str, dict[str, Any]]:
    """scripts/build-images.sh's record of the images (built now or cached), by key:
    base, project, workload -> name, archive, image_id, size, archive_size, build_seconds."""
    if shutil.which("buildah") is None:
        pytest.fail("buildah is not installed: scripts/system-deps.sh installs it (make test does)")
    done = subprocess.run(
        [str(BUILD_IMAGES)], capture_output=True, text=True, timeout=3600, check=False
    )
    if done.returncode != 0:
        pytest.fail(
            f"scripts/build-images.sh could not build the images (exit {done.returncode}):\n"
            + "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        )
    record: dict[str, dict[str, Any]] = json.loads((CACHE / "images" / "images.json").read_text())
    return record


class Store:
    """A private buildah store (its own root and runroot): archives are loaded into it as a
    node's runtime would import them, and containers from them run with no network."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, *args: str, timeout: float = 300) -> str:
        argv = ["buildah", "--root", str(self.path / "root"), "--runroot", str(self.path / "run")]
        argv += ["--storage-driver", "overlay", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(args[:3])} failed (exit {done.returncode}): {done.stderr}")
        return done.stdout

    def container(self, archive: str) -> str:
        """A working container from an OCI archive (no registry involved)."""
        return self("from", "--quiet", "--pull-never", f"oci-archive:{archive}").strip()

    def run(self, container: str, *command: str, timeout: float = 120) -> str:
        return self("run", "--network", "none", container, "--", *command, timeout=timeout)

    def config(self, container: str) -> dict[str, Any]:
        inspected: dict[str, Any] = json.loads(self("inspect", container))
        config: dict[str, Any] = inspected["OCIv1"]["config"]
        return config

    def close(self) -> None:
        self("rm", "--all")
        self("rmi", "--all", "--force")
        shutil.rmtree(self.path, ignore_errors=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    made = Store(tmp_path_factory.mktemp("buildah"))
    yield made
    made.close()


def _ref_names(archive: str) -> list[str]:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        index = json.load(member)
    return [
        m.get("annotations", {}).get("org.opencontainers.image.ref.name")
        for m in index["manifests"]
    ]


def _report_size(
    image: dict[str, Any], capsys: pytest.CaptureFixture[str], record_property: Any
) -> None:
    record_property(f"{image['name']} size (bytes)", image["size"])
    record_property(f"{image['name']} archive (bytes)", image["archive_size"])
    with capsys.disabled():
        print(
            f"\n{image['name']}: {image['size'] / 2**20:.1f} MiB"
            f" ({image['archive_size'] / 2**20:.1f} MiB as an OCI archive, {image['archive']})"
        )


@pytest.mark.images
def test_base_stands_in_for_python_3_12_slim_bookworm(
    images: dict[str, dict[str, Any]], store: Store
) -> None:
    base = images["base"]
    assert re.fullmatch(r"localhost/damon-k8s-python:3\.12\.\d+-slim-bookworm", base["name"])
    container = store.container(base["archive"])
    config = store.config(container)
    assert config.get("Cmd") == ["python3"] and "LANG=C.UTF-8" in config.get("Env", [])
    out = store.run(
        container,
        "sh",
        "-euc",
        "cat /etc/debian_version; python3 --version; "
        "python3 -c 'import sys; print(sys.prefix)'; "
        "python3 -m venv /tmp/venv; /tmp/venv/bin/python -m pip --version",
    )
    debian, version, prefix, pip = out.splitlines()
    assert debian.startswith("12."), debian
    assert version == f"Python {base['name'].split(':')[1].split('-')[0]}", version
    assert prefix == "/usr/local"
    assert pip.startswith("pip ") and "/tmp/venv/" in pip, pip


@pytest.mark.images
def test_project_image_runs_the_entry_points_as_non_root(
    images: dict[str, dict[str, Any]],
    store: Store,
    capsys: pytest.CaptureFixture[str],
    record_property: Any,
) -> None:
    project = images["project"]
    assert project["name"] == PROJECT_IMAGE
    assert _ref_names(project["archive"]) == [PROJECT_IMAGE], "a node would import it unnamed"
    container = store.container(project["archive"])
    config = store.config(container)
    assert config.get("User") == f"{NON_ROOT}:{NON_ROOT}"
    assert not config.get("Entrypoint"), "the chart sets command:, an entrypoint would prefix it"
    for program in ("damon-agent", "damonctl", "damon-operator"):
        assert f"usage: {program}" in store.run(container, program, "--help")
    assert store.run(container, "id", "-u").strip() == NON_ROOT
    # requirements.lock installed exactly, from wheels, in the stand-in base.
    listed = json.loads(store.run(container, "/opt/damon-k8s/bin/pip", "list", "--format=json"))
    installed = {_normal(p["name"]): p["version"] for p in listed}
    assert installed.pop("damon-k8s") == "0.1.0"
    installed.pop("pip")
    assert installed == _lock()
    _report_size(project, capsys, record_property)


@pytest.mark.images
def test_workload_image_reports_its_hot_and_cold_ranges(
    images: dict[str, dict[str, Any]],
    store: Store,
    capsys: pytest.CaptureFixture[str],
    record_property: Any,
) -> None:
    workload = images["workload"]
    assert workload["name"] == WORKLOAD_IMAGE
    assert _ref_names(workload["archive"]) == [WORKLOAD_IMAGE]
    container = store.container(workload["archive"])
    config = store.config(container)
    assert config.get("Entrypoint") == ["python", "/opt/workload/guest_lib.py", "workload"]
    assert config.get("User") == f"{NON_ROOT}:{NON_ROOT}"
    assert config.get("StopSignal") == "SIGINT", "as pid 1 it would ignore SIGTERM"
    # The entry point with small arrays, until it has reported and looped (not pid 1 here:
    # SIGTERM stops it).
    script = (
        '"$@" --hot-mib=8 --cold-mib=16 --status=/tmp/w.json --pause-s=0.01 & pid=$!; '
        "for _ in $(seq 300); do [ -s /tmp/w.json.loops ] && break; sleep 0.1; done; "
        'kill "$pid"; wait "$pid" || true; id -u; cat /tmp/w.json'
    )
    out = store.run(container, "sh", "-c", script, "sh", *config["Entrypoint"]).splitlines()
    assert out[0] == NON_ROOT
    report = json.loads(out[1])
    mib = 1 << 20
    assert report["hot"][1] - report["hot"][0] >= 8 * mib - report["page"]
    assert report["cold"][1] - report["cold"][0] >= 16 * mib - report["page"]
    _report_size(workload, capsys, record_property)
