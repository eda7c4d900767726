"""Error kinds of the ingest path and the one place they become OTLP statuses.

Every stage raises `IngestError(kind, message)`; the HTTP and gRPC receivers ask this module
what to answer, so a kind means the same thing on both protocols (REFERENCE.md section 1).
"""

from __future__ import annotations

import enum

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2


class Kind(enum.Enum):
    #                    HTTP  gRPC                               retryable
    INVALID = (400, grpc.StatusCode.INVALID_ARGUMENT, False)
    UNAUTHENTICATED = (401, grpc.StatusCode.UNAUTHENTICATED, False)
    FORBIDDEN = (403, grpc.StatusCode.PERMISSION_DENIED, False)
    METHOD_NOT_ALLOWED = (405, grpc.StatusCode.UNIMPLEMENTED, False)
    TOO_LARGE = (413, grpc.StatusCode.RESOURCE_EXHAUSTED, False)
    UNSUPPORTED_MEDIA = (415, grpc.StatusCode.INVALID_ARGUMENT, False)
    OVERLOADED = (503, grpc.StatusCode.UNAVAILABLE, True)
    INTERNAL = (500, grpc.StatusCode.INTERNAL, False)

    @property
    def http_status(self) -> int:
        return self.value[0]

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return self.value[1]

    @property
    def reason(self) -> str:
        """The label rejections are counted under in the store."""
        return self.name.lower()


class IngestError(Exception):
    """A request the collector refuses as a whole; `retry_after` only for retryable kinds."""

    def __init__(self, kind: Kind, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after if kind.value[2] else None
        self.tenant_id: str | None = None  # set once authentication has named the caller


def rpc_status(error: IngestError) -> status_pb2.Status:
    """The google.rpc.Status body OTLP wants on errors, with RetryInfo when the client should back off."""
    status = status_pb2.Status(code=error.kind.grpc_code.value[0], message=error.message)
    if error.retry_after is not None:
        status.details.add().Pack(
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=error.retry_after))
        )
    return status

