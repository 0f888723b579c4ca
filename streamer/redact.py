"""The one masking function for credentials in URLs, used wherever a URL or an error that may quote one is
logged, printed or returned (streamer, validations, sensors, stack).

Invariant: `mask_credentials(text)` leaves no `user:password@` of any URL in `text`: the user stays (it says
who connected), the password becomes `***`; a bare `token@` becomes `***@`. Text without credentials is
returned unchanged.
"""

from __future__ import annotations

import re

# scheme://userinfo@ where userinfo has no '/', '@' or whitespace (RFC 3986 allows ':' in the password).
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


def _mask(match: re.Match[str]) -> str:
    user, colon, _secret = match.group("userinfo").partition(":")
    return f"{match.group('scheme')}{user}:***@" if colon else f"{match.group('scheme')}***@"


def mask_credentials(text: str) -> str:
    """`text` (a URL, or a message quoting URLs) with every URL's password replaced by ***."""
    return _USERINFO.sub(_mask, text)
