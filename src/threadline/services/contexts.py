"""Which context a request acts in: the authorisation rule of a caller naming an org, a
personal account or a workspace (AI Hub's `IB-Context` header, `org` and `workspace` fields).

Why it exists: a Threadline caller belongs to one org, and a request that names a context must
name one of the caller's own. That is an authorisation rule, so it lives with the services (a
dialect only says which values the request carried) and answers as every org-scope rule does:
another org's context is "not found", never "forbidden".
"""

from __future__ import annotations

from uuid import UUID

from threadline.domain.entities import Principal
from threadline.domain.errors import InvalidRequest, NotFound


def caller_context(
    principal: Principal,
    context: str | None,
    org: str | None = None,
    workspace: str | None = None,
) -> Principal:
    """The caller, once the context named by the request is theirs.

    `context` (`IB-Context`) may name the caller's org (its id or name) or the caller's
    personal account (their user id or name); `org` must name the org; `workspace` must be
    the caller's personal workspace (their user id or name). Anything else is 404. `org` and
    `IB-Context` that name different contexts are 400, since AI Hub requires them to match.
    """
    own_org = {str(principal.org_id), principal.org.name}
    own_user = {str(principal.user.id), principal.user.name}
    context, org, workspace = _norm(context), _norm(org), _norm(workspace)
    if context is not None and context not in own_org | own_user:
        raise NotFound(
            f"IB-Context {context} is not your organization or account; use your "
            f"organization id ({principal.org_id}) or leave the header out"
        )
    same_org = context in own_org and org in own_org
    if context is not None and org is not None and context != org and not same_org:
        raise InvalidRequest(f"org ({org}) and IB-Context ({context}) must match")
    if org is not None and org not in own_org:
        raise NotFound(f"organization {org} not found; yours is {principal.org_id}")
    if workspace is not None and workspace not in own_user:
        raise NotFound(
            f"workspace {workspace} not found; your personal workspace is your user id "
            f"({principal.user.id})"
        )
    return principal


def _norm(value: str | None) -> str | None:
    """Blank is absent; a UUID in any spelling is its canonical form."""
    if value is None or not value.strip():
        return None
    value = value.strip()[:200]
    try:
        return str(UUID(value))
    except ValueError:
        return value
