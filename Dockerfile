# lameduck's two images, from one file, built from the repository root:
#   docker build --target operator -t lameduck/operator:0.1.0 .
#   docker build --target sidecar -t lameduck/sidecar:0.1.0 .
# BASE is any Debian-based Python 3.11+ image; the local test harness passes an offline one.
ARG BASE=python:3.11-slim-bookworm

# What both build stages start from: a virtualenv and the distribution's metadata.
FROM ${BASE} AS build
RUN python3 -m venv /opt/lameduck
COPY pyproject.toml README.md /src/

# The whole distribution with its dependencies (kopf, the API client, ...).
FROM build AS operator-build
# A CA bundle for pip, for builds behind a TLS-intercepting proxy (optional).
ARG PIP_CERT
COPY operator /src/operator
COPY sidecar /src/sidecar
RUN /opt/lameduck/bin/pip install --no-cache-dir --disable-pip-version-check /src \
 && /opt/lameduck/bin/pip uninstall --yes pip

# The sidecar runs in every pod: only its package and the `sidecar` extra of pyproject.toml (h11),
# read from that file, so the image has what the sidecar imports and no more. operator/ is not in
# this stage, so the wheel holds lameduck_sidecar alone; the distribution's other two launchers
# (lameduck, lameduck-operator) would name a package that is not there, and are removed; so is the
# venv's setuptools (9 MiB, and a .pth of it that Python imports at every start).
FROM build AS sidecar-build
ARG PIP_CERT
COPY sidecar /src/sidecar
RUN /opt/lameduck/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps /src \
 && /opt/lameduck/bin/python -c "import tomllib; \
extra = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['optional-dependencies']['sidecar']; \
open('/tmp/sidecar-requirements.txt', 'w').write(chr(10).join(extra) + chr(10))" \
 && /opt/lameduck/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/sidecar-requirements.txt \
 && rm /tmp/sidecar-requirements.txt /opt/lameduck/bin/lameduck /opt/lameduck/bin/lameduck-operator \
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
