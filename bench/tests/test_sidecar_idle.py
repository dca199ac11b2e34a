"""bench.sidecar_idle: what it reads from /proc, -X importtime and tracemalloc's file names."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.image_venv import moved, stage_lines
from bench.sidecar_idle import REPO, Variant, first_arrivals, import_times, logged, package_of, status_kib

STATUS = """Name:\tpython3
VmPeak:\t  123456 kB
VmHWM:\t   40000 kB
VmRSS:\t   39584 kB
RssAnon:\t   25780 kB
RssFile:\t   13804 kB
RssShmem:\t       0 kB
Threads:\t1
"""


def test_the_status_fields_are_read_in_kib() -> None:
    assert status_kib(STATUS) == {"VmHWM": 40000, "VmRSS": 39584, "RssAnon": 25780, "RssFile": 13804}


def test_only_top_level_imports_are_timed_cumulatively() -> None:
    stderr = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       120 |        120 |     _ssl\n"
        "import time:      2000 |       9300 | ssl\n"
        "import time:       500 |      36400 | asyncio\n"
        "warning: something else\n"
    )
    assert import_times(stderr) == {"ssl": 9.3, "asyncio": 36.4}


@pytest.mark.parametrize(
    ("filename", "package"),
    [
        ("/work/x/sidecar/lameduck_sidecar/holder.py", "lameduck_sidecar.holder"),
        ("/tmp/venv/lib/python3.11/site-packages/aiohttp/client.py", "aiohttp"),
        ("/tmp/venv/lib/python3.11/site-packages/typing_extensions.py", "typing_extensions"),
        ("/root/.pyenv/versions/3.11.7/lib/python3.11/asyncio/events.py", "asyncio"),
        ("/root/.pyenv/versions/3.11.7/lib/python3.11/ssl.py", "ssl"),
        ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap>"),
    ],
)
def test_an_allocation_is_put_down_to_its_package(filename: str, package: str) -> None:
    assert package_of(filename) == package


def test_a_request_is_timed_by_its_first_arrival() -> None:
    assert first_arrivals([("list", 1.0), ("watch", 2.0), ("list", 3.0)]) == {"list": 1.0, "watch": 2.0}


def test_a_variant_names_its_python_and_checkout() -> None:
    assert Variant.parse("before=/tmp/v/bin/python,/tmp/c") == Variant("before", "/tmp/v/bin/python", Path("/tmp/c"))
    assert Variant.parse("now=/usr/bin/python3").checkout == REPO


def test_a_field_is_read_from_the_sidecars_log() -> None:
    stdout = 'not json\n{"event": "start", "pod": "web-1"}\n{"event": "holds_served", "loaded_seconds": 0.046}\n'
    assert logged(stdout, "holds_served", "loaded_seconds") == 0.046
    assert logged(stdout, "hold", "seconds") is None


DOCKERFILE = """FROM ${BASE} AS build
RUN python3 -m venv /opt/lameduck

# a comment
FROM build AS sidecar-build
ARG PIP_CERT
COPY sidecar /src/sidecar
RUN /opt/lameduck/bin/pip install --no-deps /src \\
 && /opt/lameduck/bin/python -c "open('/tmp/x.txt', 'w')"

FROM ${BASE} AS runtime
"""


def test_a_stages_instructions_are_read_with_continuations_joined() -> None:
    assert stage_lines(DOCKERFILE, "sidecar-build") == [
        "ARG PIP_CERT",
        "COPY sidecar /src/sidecar",
        "RUN /opt/lameduck/bin/pip install --no-deps /src "
        """ && /opt/lameduck/bin/python -c "open('/tmp/x.txt', 'w')\"""",
    ]


def test_the_images_paths_move_under_the_folder_even_one_under_tmp() -> None:
    command = "/opt/lameduck/bin/pip install /src && cat /tmp/x.txt /srcx"
    assert moved(command, Path("/tmp/img")) == (
        "/tmp/img/opt/lameduck/bin/pip install /tmp/img/src && cat /tmp/img/tmp/x.txt /srcx"
    )
