"""The integer fields of every request body follow JSON Schema's `integer`, as the published
schema says: a number with no fractional part is one (`5.0`), a boolean, a string or a
fraction is not, and the declared bounds hold (schemathesis sends such numbers as valid)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from threadline.api.dialects.anthropic.schemas import MessagesRequest
from threadline.api.dialects.openai.schemas import ChatCompletionRequest

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("value", "expected"), [(5, 5), (5.0, 5), (2.0**53 - 1, 2**53 - 1)])
def test_an_integral_number_is_an_integer(value: float, expected: int) -> None:
    body = {"model": "m", "max_tokens": value, "messages": MESSAGES}
    assert MessagesRequest.model_validate(body).max_tokens == expected
    assert ChatCompletionRequest.model_validate(body).max_tokens == expected


@pytest.mark.parametrize("value", [True, "5", 2.5, float("nan"), 2.0**53, 0])
def test_anything_else_is_refused(value: object) -> None:
    body = {"model": "m", "max_tokens": value, "messages": MESSAGES}
    with pytest.raises(ValidationError):
        MessagesRequest.model_validate(body)
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(body)
