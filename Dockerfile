# lameduck's two images, from one file, built from the repository root:
#   docker build --target operator -t lameduck/operator:0.1.0 .
#   docker build --target sidecar -t lameduck/sidecar:0.1.0 .
# BASE is any Debian-based Python 3.11 image (the locks in requirements/ are resolved for 3.11); the
# local test harness passes an offline one. The images run as uid/gid 65532 (no root) and need no
# writable path: the chart sets readOnlyRootFilesystem.
ARG BASE=python:3.11-slim-bookworm

# What both build stages start from: a virtualenv and the distribution's metadata.
FROM ${BASE} AS build
RUN python3 -m venv /opt/lameduck
COPY pyproject.toml README.md /src/

# Every third-party package comes from a hashed lock (requirements/, written by `make locks` from
# pyproject.toml): --require-hashes refuses any file whose sha256 the lock does not list, and
# --no-deps installs the lock and nothing it forgot (`pip check` below fails on a missing one). The
# build backend (setuptools) is locked too, and the project is built with it, --no-build-isolation,
# so no unpinned package is fetched to build it.
FROM build AS operator-build
# A CA bundle for pip, for builds behind a TLS-intercepting proxy (optional).
ARG PIP_CERT
COPY requirements /src/requirements
RUN /opt/lameduck/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes --no-deps -r /src/requirements/build.txt -r /src/requirements/operator.txt
COPY operator /src/operator
COPY sidecar /src/sidecar
RUN /opt/lameduck/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation /src \
 && /opt/lameduck/bin/pip check \
 && /opt/lameduck/bin/pip uninstall --yes setuptools pip

# The sidecar runs in every pod: only its package and the lock of the `sidecar` extra of
# pyproject.toml (h11), so the image has what the sidecar imports and no more. operator/ is not in
# this stage, so the wheel holds lameduck_sidecar alone; the distribution's other two launchers
# (lameduck, lameduck-operator) would name a package that is not there, and are removed; so is the
# venv's setuptools (9 MiB, and a .pth of it that Python imports at every start). No `pip check`:
# the distribution's metadata names the operator's dependencies, which this image leaves out.
FROM build AS sidecar-build
ARG PIP_CERT
COPY requirements /src/requirements
RUN /opt/lameduck/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes --no-deps -r /src/requirements/build.txt -r /src/requirements/sidecar.txt
COPY sidecar /src/sidecar
RUN /opt/lameduck/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation /src \
 && rm /opt/lameduck/bin/lameduck /opt/lameduck/bin/lameduck-operator \
 && /opt/lameduck/bin/pip uninstall --yes setuptools pip

FROM ${BASE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532

FROM runtime AS sidecar
COPY --from=sidecar-build /opt/lameduck /opt/lameduck
EXPOSE 9901
ENTRYPOINT ["/opt/lameduck/bin/lameduck-sidecar"]

# Last, so a build without --target is the operator.
FROM runtime AS operator
# USER: kopf names its peering identity after the login name, and uid 65532 has no passwd entry.
# MALLOC_ARENA_MAX: glibc gives every thread (the API client's pool) a heap of its own, each
# keeping what it once held; two are enough for a process that mostly waits.
ENV USER=lameduck MALLOC_ARENA_MAX=2
COPY --from=operator-build /opt/lameduck /opt/lameduck
EXPOSE 8080
ENTRYPOINT ["/opt/lameduck/bin/lameduck-operator"]
