"""Redaction of secrets in URLs, the one place for it, used wherever a URL or an error that may quote one is
logged, printed or returned (streamer, validations, sensors, stack).

Invariants:
- `mask_credentials(text)` leaves no `user:password@` of any URL in `text`: the user stays (it says who
  connected), the password becomes `***`; a bare `token@` becomes `***@`. Text without credentials is
  returned unchanged.
- `secret_url_site(url)` is for URLs that are a secret as a whole (chat and incident webhooks carry their
  token in the path or query): only scheme, host and port remain.
- `split_credentials(url)` takes `user:password@` out of a URL, so the URL handed to a client library (which
  may log it, as httpx does on every request) carries none.
- `MaskCredentials` is a logging filter for the process's handlers: whatever logger a record comes from (our
  own or a library's), no URL password reaches the log.
"""

from __future__ import annotations

import logging
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


def split_credentials(url: str) -> tuple[str, str | None]:
    """(`url` without its userinfo, "user:password" percent-decoded, or None when it had none)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, None
    userinfo = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return urllib.parse.urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else ""))), userinfo


class MaskCredentials(logging.Filter):
    """Masks URL passwords in every record it sees (attach it to handlers, so library loggers are covered)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "@" in message:
            masked = mask_credentials(message)
            if masked != message:
                record.msg, record.args = masked, None
        return True
