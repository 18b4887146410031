"""consent_registry: the Python client of consentd, the consent registry.

    import consent_registry
    client = consent_registry.Client("127.0.0.1:50051")
    allowed_posts = client.filter_allowed(posts, "ai_training",
                                          key=lambda p: (p["author"], p["id"], "POST", "PUBLIC"))

Fail-closed: an error is never "allowed". See docs/python.md.

Fork safety: gRPC needs GRPC_ENABLE_FORK_SUPPORT set before it is first
imported for a child process to make calls at all; this package sets it
(unless the environment already says otherwise) when it is imported before
grpc, and each Client makes a new channel in a forked child.
"""
import os
import sys
import warnings

if "grpc" not in sys.modules:
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "true")
elif os.environ.get("GRPC_ENABLE_FORK_SUPPORT", "").lower() not in ("1", "true"):
    warnings.warn("consent_registry: grpc was imported before consent_registry without "
                  "GRPC_ENABLE_FORK_SUPPORT=true: a Client used in a forked child process "
                  "(multiprocessing) may fail. Import consent_registry first, or set it in the "
                  "environment.", RuntimeWarning, stacklevel=2)

from ._client import SERVICE_CONFIG, CheckResults, Client, Decision, Item  # noqa: E402
from ._errors import (  # noqa: E402
    Aborted, AlreadyExists, Cancelled, ConsentError, DeadlineExceeded, FailedPrecondition,
    InvalidArgument, NotFound, OutOfRange, PermissionDenied, ResourceExhausted, Unauthenticated,
    Unavailable)
from ._watch import FileCheckpoint, Watch  # noqa: E402
from ._proto.consent.v1.registry_pb2 import Checkpoint  # noqa: E402
from ._proto.consent.v1.types_pb2 import ChangeEvent  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Aborted", "AlreadyExists", "Cancelled", "ChangeEvent", "CheckResults", "Checkpoint", "Client", "ConsentError",
    "DeadlineExceeded", "Decision", "FailedPrecondition", "FileCheckpoint", "InvalidArgument",
    "Item", "NotFound", "OutOfRange", "PermissionDenied", "ResourceExhausted", "SERVICE_CONFIG",
    "Unauthenticated", "Unavailable", "Watch",
]
