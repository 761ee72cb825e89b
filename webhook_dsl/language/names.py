"""The names a template may use that the platform gives a meaning: system variables and company secrets.

Every stage reads these (the trigger checks them, the store refuses them as client_data keys, the masker
hides secrets), so they live here, below all of them.
"""

from __future__ import annotations

import re

__all__ = ["MIN_SECRET_LENGTH", "SECRETS_PREFIX", "SECRET_NAME", "SECRET_NAME_PATTERN", "SYSTEM_VARIABLES"]

#: Variables the platform sets for every call; nothing else may define or overwrite them.
SYSTEM_VARIABLES = ("session.id", "company.id", "assistant.id")
#: Secrets this long or longer are masked wherever any form of them appears, inside any text. A shorter
#: one is masked where it stands as a whole token (not next to a letter or digit): four characters such
#: as "1500" occur by chance in ordinary data, and masking them inside it would change what the LLM reads.
MIN_SECRET_LENGTH = 8
#: Company secrets reach a template as ``$secrets.NAME``: the variable ``secrets.NAME``.
SECRETS_PREFIX = "secrets."
#: A company secret's name, what ``$secrets.NAME`` can write (JSON Schema dialect: ``$`` ends the string).
SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
