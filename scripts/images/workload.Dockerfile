# The test workload image: a process with known hot and cold memory, for pods on a real
# node. It runs tests/vm/guest_lib.py's workload, the VM scenarios' ground truth: it
# allocates COLD then HOT MiB of anonymous memory (numpy), touches the cold array once and
# then one word of every hot page in a loop, forever, and reports its pid and both arrays'
# page ranges as JSON at --status (loop count at <status>.loops; SIGUSR1 re-touches the
# cold array once). `--node N` binds the allocations to NUMA node N.
#
# Built by scripts/build-images.sh (as localhost/damon-k8s-workload:test) with the build
# context holding this file and guest_lib.py. Like the project's Dockerfile, the base is
# PYTHON_IMAGE and numpy comes from a wheel, at requirements.lock's pin:
#
#   buildah bud --build-arg PYTHON_IMAGE=... --build-arg NUMPY_VERSION=2.5.5 -f workload.Dockerfile .
#
# In a pod, arguments replace CMD, e.g. args: [--hot-mib=64, --cold-mib=192,
# --status=/tmp/workload.json, --pause-s=0.01]; /tmp must be writable (an emptyDir under a
# read-only root).

ARG PYTHON_IMAGE=python:3.12.7-slim-bookworm
FROM ${PYTHON_IMAGE}
ARG NUMPY_VERSION
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN test -n "${NUMPY_VERSION}" \
 && pip install --only-binary=:all: --no-deps "numpy==${NUMPY_VERSION}" \
 && python -c "import numpy"
COPY guest_lib.py /opt/workload/guest_lib.py
RUN python /opt/workload/guest_lib.py workload --help >/dev/null
USER 65532:65532
WORKDIR /tmp
# The workload sets no SIGTERM handler, and as a container's pid 1 the kernel would ignore
# SIGTERM: stop it with SIGINT (Python's KeyboardInterrupt), which runtimes send instead.
STOPSIGNAL SIGINT
ENTRYPOINT ["python", "/opt/workload/guest_lib.py", "workload"]
CMD ["--hot-mib=32", "--cold-mib=96", "--status=/tmp/workload.json", "--pause-s=0.01"]
