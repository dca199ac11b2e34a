"""Requests to the API server as RBAC sees them, and a stand-in for the official client's HTTP
layer that records every request an adapter sends.

The API server authorizes a request by verb, API group, resource (with its subresource) and,
when the request names one, the object's name; a rule without resourceNames allows any name.
`access_of` reads a request the way k8s.io/apiserver's RequestInfoFactory does
(pkg/endpoints/request/requestinfo.go).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from kubernetes import client
from kubernetes.client import rest

SERVER = "https://api.test"
APPLY = "application/apply-patch+yaml"
METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
# One term of a field selector that requires a single name: metadata.name=x or metadata.name==x.
NAME_TERM = re.compile(r"^metadata\.name==?(?P<name>.+)$")


class Access(NamedTuple):
    verb: str
    group: str
    resource: str  # with the subresource: pods/status
    name: str | None  # None: any name (a rule without resourceNames)


@dataclass(frozen=True)
class Sent:
    method: str
    url: str
    content_type: str | None = None


def access_of(method: str, url: str) -> Access:
    """What the API server authorizes for this request: the verb from the method; a GET without
    a name is a list, or a watch with watch=true; a list or watch whose field selector requires
    one metadata.name is authorized for that name, and a DELETE without one is a
    deletecollection."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    group, rest_of_path = ("", segments[2:]) if segments[0] == "api" else (segments[1], segments[3:])
    # namespaces/<ns>/<resource>/...; /api/v1/namespaces[/<name>] is the Namespace resource itself.
    if len(rest_of_path) >= 3 and rest_of_path[0] == "namespaces":
        rest_of_path = rest_of_path[2:]
    resource = rest_of_path[0]
    name = rest_of_path[1] if len(rest_of_path) > 1 else None
    subresource = rest_of_path[2] if len(rest_of_path) > 2 else None
    query = parse_qs(parts.query)
    if method == "GET" and name is None:
        verb = "watch" if query.get("watch", ["false"])[0].lower() not in ("false", "0") else "list"
        for term in ",".join(query.get("fieldSelector", [])).split(","):
            if found := NAME_TERM.match(term):
                name = found["name"]
    elif method == "GET":
        verb = "get"
    else:
        verb = METHOD_VERBS[method]
    if verb == "delete" and name is None:
        verb = "deletecollection"
    return Access(verb, group, f"{resource}/{subresource}" if subresource else resource, name)


def needed(sent: Iterable[Sent], own_names: Iterable[str]) -> set[Access]:
    """The grants these requests need. A request for one of `own_names` (the fixed names of what
    lameduck keeps) needs a grant for that name only; any other object's name varies, so its
    request needs a grant for any name. A server-side apply creates the object when there is
    none, and the API server then also authorizes create, for the name in the URL
    (k8s.io/apiserver, pkg/endpoints/handlers/patch.go); lameduck means to create only what it
    names itself: an apply to a Deployment or a policy that is gone must fail, not create one."""
    own = set(own_names)
    out: set[Access] = set()
    for request in sent:
        access = access_of(request.method, request.url)
        access = access._replace(name=access.name if access.name in own else None)
        out.add(access)
        if request.method == "PATCH" and request.content_type == APPLY and access.name is not None:
            out.add(access._replace(verb="create"))
    return out


def granted(rules: Iterable[Mapping[str, Any]]) -> set[Access]:
    """Every (verb, group, resource, name) the rules allow; name None: any name."""
    return {
        Access(verb, group, resource, name)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or [None]
    }


Answer = Callable[[str, str, Any], Mapping[str, Any]]


def echo(method: str, url: str, body: Any) -> Mapping[str, Any]:
    """A plausible answer: a write gets its body back, a list an empty page, a get the object."""
    if method == "GET":
        access = access_of(method, url)
        if access.verb in ("list", "watch"):
            return {"items": [], "metadata": {"resourceVersion": "1"}}
        return {"metadata": {"name": access.name}}
    return body if isinstance(body, Mapping) else {"metadata": {}}


class RecordingRest(rest.RESTClientObject):
    """The official client's HTTP layer, answering from `answer` instead of the network."""

    def __init__(self, configuration: client.Configuration, answer: Answer = echo) -> None:
        super().__init__(configuration)
        self.answer = answer
        self.sent: list[Sent] = []

    def request(  # type: ignore[no-untyped-def]
        self, method, url, headers=None, body=None, post_params=None, _request_timeout=None
    ) -> rest.RESTResponse:
        self.sent.append(Sent(method, url, (headers or {}).get("Content-Type")))
        data = json.dumps(self.answer(method, url, body)).encode()
        status = 201 if method == "POST" else 200
        raw = SimpleNamespace(status=status, reason="OK", data=data, headers={"content-type": "application/json"})
        return rest.RESTResponse(raw)


def recording_client(answer: Answer = echo) -> tuple[client.ApiClient, RecordingRest]:
    configuration = client.Configuration(host=SERVER)
    api_client = client.ApiClient(configuration)
    recorder = RecordingRest(configuration, answer)
    api_client.rest_client = recorder
    return api_client, recorder


class Using:
    """One of the official client's API objects, noting the name of every method taken from it."""

    def __init__(self, api: object, name: str, used: set[tuple[str, str]]) -> None:
        self._api = api
        self._name = name
        self._used = used

    def __getattr__(self, method: str) -> Any:
        self._used.add((self._name, method))
        return getattr(self._api, method)
