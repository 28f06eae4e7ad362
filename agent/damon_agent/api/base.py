"""The base of every api model: one pydantic configuration for scheme files and resources.

Python names are snake_case; the file/API names are their camelCase aliases, and either
is accepted on input. Models are frozen. ``ApiModel`` refuses unknown fields (what a
person writes: a typo must be an error); ``StatusModel`` ignores them (what another
version of the agent or operator wrote may carry more than this one knows).
"""

from __future__ import annotations

import pydantic
import pydantic.alias_generators


class ApiModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        extra="forbid",
        alias_generator=pydantic.alias_generators.to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        frozen=True,
    )


class StatusModel(ApiModel):
    model_config = pydantic.ConfigDict(extra="ignore")
