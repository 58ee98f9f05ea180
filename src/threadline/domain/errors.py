"""The error tree. Services raise these; each dialect renders them in its own error shape.

    ThreadlineError
     ├── InvalidRequest      400  malformed or missing input
     ├── Unauthorized        401  no key, unknown key, revoked key
     ├── Forbidden           403  role too low
     │    └── QuotaExceeded  403  the request may cost more credits than the user has left
     ├── NotFound            404  no such object *in the caller's org*
     ├── Conflict            409  clashes with an existing object (an org's name)
     ├── Unprocessable       422  well-formed but not servable (unknown model, unsupported setting)
     │    └── FetchRefused   422  a URL the server will not fetch (not http(s), private address)
     ├── KeyReused           422  an Idempotency-Key sent again with another request
     ├── PayloadTooLarge     413  body over the configured cap
     ├── RateLimited         429  too many requests for this key (carries retry_after seconds)
     ├── FetchFailed         502  a URL could not be read (unreachable, too large, too slow)
     │    └── TranscriptUnavailable  a YouTube video's transcript could not be had
     ├── Unavailable         503  the database cannot be reached (carries retry_after seconds)
     ├── SearchFailed        502  the web search provider failed (error, bad answer)
     │    └── SearchTimeout  504  the web search provider did not answer in time
     └── ModelError          502  the model failed (upstream error, bad answer)
          └── ModelTimeout   504  the model did not answer in time

`message` is safe to show to the caller: it never carries keys, tokens or document text.
"""

from __future__ import annotations

from typing import Any


class ThreadlineError(Exception):
    status: int = 500
    code: str = "INTERNAL_ERROR"
    retry_after: int | None = None  # seconds, sent as Retry-After (429, 503)

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(ThreadlineError):
    status = 400
    code = "INVALID_REQUEST"


class Unauthorized(ThreadlineError):
    status = 401
    code = "UNAUTHORIZED"


class Forbidden(ThreadlineError):
    status = 403
    code = "FORBIDDEN"


class QuotaExceeded(Forbidden):
    """The most a request may cost does not fit what its user has left. The message says
    how many credits are left (`left`) and what the request needed (`cost`)."""

    def __init__(self, *, limit: int, used: int, reserved: int, cost: int, what: str) -> None:
        self.left = max(0, limit - used - reserved)
        self.cost = cost
        held = f", {reserved} held by replies in progress" if reserved else ""
        needs = f"; {what} may cost up to {cost} credits" if what else ""
        super().__init__(
            f"Quota exceeded: {used} of {limit} credits used{held}, {self.left} left{needs}; "
            "ask an admin to raise your credit limit"
        )


class NotFound(ThreadlineError):
    status = 404
    code = "NOT_FOUND"


class Conflict(ThreadlineError):
    status = 409
    code = "CONFLICT"


class PayloadTooLarge(ThreadlineError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class Unprocessable(ThreadlineError):
    status = 422
    code = "UNPROCESSABLE_ENTITY"


class KeyReused(ThreadlineError):
    """An `Idempotency-Key` already used (within its lifetime) by a different request of the
    same API key. 422 in every dialect, also those that answer `Unprocessable` as 400."""

    status = 422
    code = "IDEMPOTENCY_KEY_REUSED"


class RateLimited(ThreadlineError):
    status = 429
    code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ThreadlineError):
    """The database (or another store every request needs) cannot be reached right now:
    try again in `retry_after` seconds. Nothing was done."""

    status = 503
    code = "SERVICE_UNAVAILABLE"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FetchRefused(Unprocessable):
    """The server will not fetch this URL. `reason` says why, without upstream text."""

    code = "URL_REFUSED"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FetchFailed(ThreadlineError):
    """Fetching this URL failed. `reason` is ours ("the server answered HTTP 404"), never
    the upstream's error text or body."""

    status = 502
    code = "FETCH_FAILED"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TranscriptUnavailable(FetchFailed):
    """A video's transcript could not be had (none published, video unavailable, YouTube
    unreachable). `reason` is ours, safe to show."""

    code = "TRANSCRIPT_UNAVAILABLE"


class SearchFailed(ThreadlineError):
    """The configured web search provider failed. The message names the provider and what
    went wrong (an HTTP status, an unreadable answer), never its body or the API key."""

    status = 502
    code = "SEARCH_FAILED"


class SearchTimeout(SearchFailed):
    status = 504
    code = "SEARCH_TIMEOUT"


class ModelError(ThreadlineError):
    """`retryable`: another attempt (on another upstream, or later) may succeed; false for
    a refusal of the request itself (an upstream's 400/401/403/404/422).
    `upstream_retry_after`: the seconds the upstream asked to wait (its `Retry-After`), if it
    said; for the router, not the caller (`retry_after`, sent to the caller, stays unset)."""

    status = 502
    code = "MODEL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        retryable: bool = True,
        upstream_retry_after: float | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.retryable = retryable
        self.upstream_retry_after = upstream_retry_after


class ModelTimeout(ModelError):
    status = 504
    code = "MODEL_TIMEOUT"
