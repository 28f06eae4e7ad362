"""The container image, checked by reading (no container engine runs here): the lock file
pins exactly the runtime closure, the Dockerfile installs from it, exposes both entry
points the chart calls, and defaults to a non-root user."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]


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
