# syntax=docker/dockerfile:1
#
# One image, both entry points: `damon-agent` (the node agent, also `damonctl`) and
# `damon-operator`. The chart picks the program with the container's `command`.
#
#   docker build -t ghcr.io/damon-k8s/damon-k8s:0.1.0 .
#
# The image runs as a non-root user (65532) by default, which is what the operator gets.
# The agent needs root for the DAMON sysfs files (root's, mode 0600) and is given uid 0
# and its few capabilities by the DaemonSet's securityContext (helm/damon-k8s/templates/
# agent.yaml says why each is there), not by the image.
#
# Dependencies are pinned in requirements.lock and installed from wheels only, in a build
# stage; the runtime stage gets the finished virtualenv and nothing that built it.
#
# Without a registry or a package index (as scripts/build-images.sh builds it for the
# tests): PYTHON_IMAGE may name a local Python 3.12 image on Debian 12, and pip reads its
# usual configuration in the RUN steps, so a wheelhouse holding requirements.lock's wheels
# and the setuptools pin below stands in for the index when mounted for the build only:
#   buildah bud --network none --build-arg PYTHON_IMAGE=<local image>
#       -v <dir>:/root -v <wheelhouse>:/root/wheels:ro -t <name> .
# where <dir>/.config/pip/pip.conf says: [global] no-index = true, find-links = /root/wheels
# (mounted over root's existing home, neither leaves a trace in the image).

ARG PYTHON_IMAGE=python:3.12.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/damon-k8s
WORKDIR /src
# Dependencies first: this layer stays cached while only the project's code changes.
COPY requirements.lock ./
RUN /opt/damon-k8s/bin/pip install --only-binary=:all: --no-deps -r requirements.lock \
 && /opt/damon-k8s/bin/pip check
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY operator ./operator
# The build backend is pinned too, and used without fetching an isolated build env.
RUN /opt/damon-k8s/bin/pip install setuptools==84.2.1 \
 && /opt/damon-k8s/bin/pip install --no-deps --no-build-isolation . \
 && /opt/damon-k8s/bin/pip uninstall --yes setuptools \
 && /opt/damon-k8s/bin/python -m compileall -q /opt/damon-k8s/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="damon-k8s" \
      org.opencontainers.image.description="DAMON-driven proactive reclaim and CXL tiering for Kubernetes nodes: node agent and operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/damon-k8s/damon-k8s"
RUN groupadd --system --gid 65532 damon \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin damon
COPY --from=build /opt/damon-k8s /opt/damon-k8s
ENV PATH=/opt/damon-k8s/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib
# The standard library compiled ahead: the base image ships it without .pyc, and with a
# read-only root filesystem and PYTHONDONTWRITEBYTECODE every start of the agent would
# compile again the ~250 standard modules it imports (the pod's start, not the build, pays).
RUN python -m compileall -q -j 0 \
        -x '/(test|tests|idlelib|tkinter|turtledemo|lib2to3|ensurepip)/' \
        "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"
# Fail the build, not the pod, if an entry point is missing or does not import.
RUN damon-agent --help >/dev/null && damon-operator --help >/dev/null && damonctl --help >/dev/null
USER 65532:65532
# No ENTRYPOINT: the chart sets `command: [damon-agent]` or `command: [damon-operator]`.
CMD ["damon-operator", "--help"]
