"""Redaction of secrets in URLs, the one place for it, used wherever a URL or an error that may quote one is
logged, printed or returned (streamer, validations, sensors, stack).

Invariants:
- `mask_credentials(text)` leaves no `user:password@` of any URL in `text`: the user stays (it says who
  connected), the password becomes `***`; a bare `token@` becomes `***@`. Text without credentials is
  returned unchanged.
- `secret_url_site(url)` is for URLs that are a secret as a whole (chat and incident webhooks carry their
  token in the path or query): only scheme, host and port remain.
"""

from __future__ import annotations

import re
import urllib.parse

# scheme://userinfo@ where userinfo has no '/', '@' or whitespace (RFC 3986 allows ':' in the password).
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


def _mask(match: re.Match[str]) -> str:
    user, colon, _secret = match.group("userinfo").partition(":")
    return f"{match.group('scheme')}{user}:***@" if colon else f"{match.group('scheme')}***@"


def mask_credentials(text: str) -> str:
    """`text` (a URL, or a message quoting URLs) with every URL's password replaced by ***."""
    return _USERINFO.sub(_mask, text)


def secret_url_site(url: str) -> str:
    """`scheme://host[:port]` of a URL whose path and query are secret, `/...` marking what was left out."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    hidden = "/..." if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{hidden}"
