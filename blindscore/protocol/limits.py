"""Input limits at every entry: ids and consent references, checked before anything is stored or audited."""

from __future__ import annotations

import re
import unicodedata

from blindscore.errors import InvalidInputError

#: Ids (application, platform, bank, model, key, batch, party): 1-128 characters, each printable
#: ASCII without whitespace (0x21-0x7E). The nodes' own id rules may be narrower still.
MAX_ID_CHARS = 128
#: A consent reference: free text a person can read, up to 256 characters and 1024 UTF-8 bytes.
MAX_CONSENT_CHARS = 256
MAX_CONSENT_BYTES = 1024
#: How much of a refused value an error message quotes.
QUOTE_CHARS = 64

#: Unicode categories a consent reference may not contain: controls and newlines (Cc), format
#: characters such as bidi overrides and zero-width spaces (Cf), line and paragraph separators (Zl,
#: Zp), private-use (Co), surrogates (Cs) and unassigned code points (Cn). They could forge line
#: breaks, reorder or hide text when the audit trail is read, or mean nothing at all.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})

ID_RULE = f"ids are 1-{MAX_ID_CHARS} characters, each printable ASCII without whitespace (0x21-0x7E)"
CONSENT_RULE = (
    f"a consent reference is 0-{MAX_CONSENT_CHARS} characters and at most {MAX_CONSENT_BYTES} UTF-8 "
    "bytes of printable text: no control, format (bidi, zero-width), line or paragraph separator, "
    "private-use, surrogate or unassigned characters"
)

_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_ID_CHARS}}}")


def quote(value: object) -> str:
    """How an error echoes input: the repr of at most its first QUOTE_CHARS characters, then "…"
    if it was longer. Non-printable characters come out escaped (repr), so a message never carries
    a raw newline or bidi override."""
    if not isinstance(value, str):
        return f"<{type(value).__name__}>"
    head = repr(str.__str__(value[:QUOTE_CHARS]))
    return head + "…" if len(value) > QUOTE_CHARS else head


def check_id(field: str, value: object, *, optional: bool = False) -> str:
    """Return ``value`` if it is a valid id for ``field``, else raise InvalidInputError naming the
    field and the rule. ``optional``: the empty string is allowed too (e.g. "latest" model version)."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a string, not {type(value).__name__}")
    if optional and value == "":
        return value
    if _ID.fullmatch(value):
        return value
    if not value:
        raise InvalidInputError(f"{field} is empty; {ID_RULE}")
    if len(value) > MAX_ID_CHARS:
        raise InvalidInputError(f"{field} {quote(value)} is {len(value)} characters long; {ID_RULE}")
    at, char = next((i, c) for i, c in enumerate(value) if not "\x21" <= c <= "\x7e")
    raise InvalidInputError(f"{field} {quote(value)} has {_describe(char)} at position {at}; {ID_RULE}")


def check_consent(value: object, field: str = "consent_reference") -> str:
    """Return ``value`` if it is a valid consent reference, else raise InvalidInputError naming the
    field and the rule. Whether one is required at all is the caller's rule (the nodes require one)."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a string, not {type(value).__name__}")
    if len(value) > MAX_CONSENT_CHARS:
        raise InvalidInputError(f"{field} {quote(value)} is {len(value)} characters long; {CONSENT_RULE}")
    for at, char in enumerate(value):
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            raise InvalidInputError(
                f"{field} {quote(value)} has {_describe(char)} at position {at}; {CONSENT_RULE}"
            )
    size = len(value.encode("utf-8"))  # no surrogates left (Cs), so this cannot fail
    if size > MAX_CONSENT_BYTES:
        raise InvalidInputError(f"{field} {quote(value)} is {size} UTF-8 bytes long; {CONSENT_RULE}")
    return value


def _describe(char: str) -> str:
    category = unicodedata.category(char)
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} ({name + ', ' if name else ''}category {category})"
