"""What keeping N Deployments costs the operator, with no cluster: N bodies as the API returns
them (the shapes of bench.fleet, with the server's metadata, managedFields, defaults and
status, about 5 KB of JSON each) kept as parsed dicts (as the fleet kept them) and in the
DeploymentStore (serialised and compressed, with the metadata the fleet reads of all at once), each in a
fresh process: tracemalloc's count of what stays allocated, and the time to read one back.

    python -m bench.fleet_memory [--deployments 1000,5000]

Writes bench/results/fleet_memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.fleet import fleet_deployment
from bench.provenance import write_result
from lameduck_operator.deployment_store import DeploymentStore
from lameduck_operator.logic.selection import DeploymentRef

RESULTS = Path(__file__).parent / "results" / "fleet_memory.json"
STAMP = "2026-11-21T10:00:00Z"


def _fields(keys: list[str]) -> dict[str, Any]:
    return {f"f:{key}": {} for key in keys}


def server_view(i: int) -> dict[str, Any]:
    """Deployment i of bench.fleet as the API server returns it once lameduck applied to it."""
    body = fleet_deployment(i)
    metadata = body["metadata"]
    metadata |= {
        "namespace": f"fleet-{i % 50:02d}",
        "uid": f"0b1c2d3e-aaaa-bbbb-cccc-{i:012d}",
        "resourceVersion": str(100000 + i),
        "generation": 2,
        "creationTimestamp": STAMP,
        "annotations": {
            **(metadata.get("annotations") or {}),
            "deployment.kubernetes.io/revision": "2",
            "lameduck.dev/policy": "ClusterGracefulPolicy/fleet",
        },
    }
    containers = body["spec"]["template"]["spec"]["containers"]
    container_fields = {
        f'k:{{"name":"{c["name"]}"}}': {".": {}, **_fields(["image", "imagePullPolicy", "name", "ports"])}
        for c in containers
    }
    condition_fields = {".": {}, **_fields(["lastTransitionTime", "lastUpdateTime", "message", "reason", "status"])}
    metadata["managedFields"] = [
        {
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": STAMP,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {".": {}, "f:lameduck-fleet": {}}},
                "f:spec": {
                    **_fields(["replicas", "selector"]),
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": container_fields, **_fields(["nodeSelector", "tolerations"])},
                    },
                },
            },
        },
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "apps/v1",
            "time": STAMP,
            "fieldsType": "FieldsV1",
            "subresource": "status",
            "fieldsV1": {
                "f:status": {
                    **_fields(["availableReplicas", "observedGeneration", "readyReplicas", "replicas"]),
                    "f:conditions": {
                        ".": {},
                        'k:{"type":"Available"}': condition_fields,
                        'k:{"type":"Progressing"}': condition_fields,
                    },
                }
            },
        },
        {
            "manager": "lameduck",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": STAMP,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:annotations": {"f:lameduck.dev/policy": {}}},
                "f:spec": {
                    "f:template": {
                        "f:spec": {
                            "f:initContainers": {
                                'k:{"name":"lameduck"}': {".": {}, **_fields(["env", "image", "name", "ports"])}
                            },
                            "f:terminationGracePeriodSeconds": {},
                        }
                    }
                },
            },
        },
    ]
    spec = body["spec"]
    spec |= {
        "progressDeadlineSeconds": 600,
        "revisionHistoryLimit": 10,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
    }
    pod = spec["template"]["spec"]
    pod |= {
        "dnsPolicy": "ClusterFirst",
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "terminationGracePeriodSeconds": 65,
        "initContainers": [
            {
                "name": "lameduck",
                "image": "docker.io/lameduck/sidecar:dev",
                "restartPolicy": "Always",
                "env": [{"name": f"LAMEDUCK_SETTING_{k}", "value": "2s"} for k in range(12)],
                "ports": [{"containerPort": 9901, "name": "lameduck", "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "96Mi"}},
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 9901}, "periodSeconds": 1},
            }
        ],
    }
    body["status"] = {
        "availableReplicas": 1,
        "observedGeneration": 2,
        "readyReplicas": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "conditions": [
            {
                "type": kind,
                "status": "True",
                "lastTransitionTime": STAMP,
                "lastUpdateTime": STAMP,
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "app-{i:05d}-7d9f8c" has successfully progressed.',
            }
            for kind in ("Available", "Progressing")
        ],
    }
    return body


def measure(n: int, kept: str) -> dict[str, Any]:
    # As a watch delivers them: parsed from JSON, each object its own.
    texts = [json.dumps(server_view(i)) for i in range(n)]
    tracemalloc.start()
    read: Callable[[DeploymentRef], dict[str, Any] | None]
    if kept == "dicts":
        dicts = {DeploymentRef(f"fleet-{i % 50:02d}", f"app-{i:05d}"): json.loads(t) for i, t in enumerate(texts)}
        read = dicts.get
    else:
        store = DeploymentStore("lameduck.dev/")
        for text in texts:
            store.put(json.loads(text))
        read = store.get
    allocated, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    refs = [DeploymentRef(f"fleet-{i % 50:02d}", f"app-{i:05d}") for i in range(n)]
    started = time.perf_counter()
    for ref in refs:
        assert read(ref) is not None
    read_us = (time.perf_counter() - started) / n * 1e6
    return {
        "deployments": n,
        "kept_as": kept,
        "json_bytes_per_deployment": sum(map(len, texts)) // n,
        "allocated_mib": round(allocated / 2**20, 1),
        "read_one_us": round(read_us, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", default="1000,5000")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", nargs=2, metavar=("N", "KEPT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.one[1])))
        return
    rows = []
    for n in args.deployments.split(","):
        for kept in ("dicts", "store"):
            command = [sys.executable, "-m", "bench.fleet_memory", "--one", n, kept]
            rows.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
    print("| Deployments | kept as | allocated | read one back |")
    print("| ---: | --- | ---: | ---: |")
    for row in rows:
        print(f"| {row['deployments']:,} | {row['kept_as']} | {row['allocated_mib']} MiB | {row['read_one_us']} µs |")
    given = " ".join(sys.argv[1:] if argv is None else argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result(args.out, {"command": f"python -m bench.fleet_memory {given}", "rows": rows})


if __name__ == "__main__":
    main()
