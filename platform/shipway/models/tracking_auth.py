"""Who may change what in MLflow: the platform changes, everyone else reads.

MLflow's basic-auth app lets any authenticated user *create* experiments, runs and registered
models (and become their manager), whatever `default_permission` says: a reader could register
a declared model before the platform does, then move its aliases. So the tracking server
`shipway up` starts authenticates with `authenticate` (its `authorization_function`): MLflow's
own password check, then, for anyone but an admin, only requests that read pass. A read is a
GET (or HEAD), a POST to an endpoint that only searches or fetches, or a GraphQL request whose
operations are all queries; anything else is a 403 naming the user and the request. What is
not known to read is refused (fail closed), so a new MLflow endpoint starts refused.

It runs in the MLflow server's process, imported by the path in `basic_auth.ini`
(`shipway.models.tracking.AUTHORIZATION_FUNCTION`); nothing else imports it, since importing
MLflow's auth app reads its configuration.
"""

from __future__ import annotations

import re

from flask import Response, request
from mlflow.server import auth

READS = frozenset({"GET", "HEAD", "OPTIONS"})
# POST endpoints that only read (MLflow 3.17): searches and batched gets.
READ_POSTS = re.compile(r".*/(search|search-datasets|get-latest-versions|batchGetInfos)")
GRAPHQL = "/graphql"


def authenticate() -> Response | object:
    """MLflow's basic auth, then: an admin may do anything, anyone else may only read."""
    found = auth.authenticate_request_basic_auth()
    if isinstance(found, Response):
        return found
    if _reads() or _is_admin(str(found.username)):
        return found
    return Response(
        f"MLflow user {found.username!r} may only read; {request.method} {request.path} "
        "changes the tracking server or the registry (only the platform's user may)",
        status=403,
        mimetype="text/plain",
    )


def _is_admin(username: str) -> bool:
    if username == auth.auth_config.admin_username:
        return True
    user = auth.store.get_user(username)
    return bool(user.is_admin)


def _reads() -> bool:
    if request.method in READS:
        return True
    if request.method != "POST":
        return False
    if READ_POSTS.fullmatch(request.path):
        return True
    return request.path == GRAPHQL and _only_queries(request.get_json(silent=True))


def _only_queries(body: object) -> bool:
    """Whether a GraphQL request body holds operations and every one is a query (fragments
    may stand beside them)."""
    from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse

    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return False
    try:
        document = parse(body["query"])
    except GraphQLError:
        return False
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    return bool(operations) and all(d.operation == OperationType.QUERY for d in operations)
