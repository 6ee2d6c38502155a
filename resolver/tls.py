"""The TLS context of the HTTP port (`http_tls_cert`, `http_tls_key`): TLS 1.2 or later, the standard library's
server defaults (no compression, no renegotiation, forward-secret ciphers first). Built once when the settings
are checked, so a missing or mismatched file stops `idnode serve` (or is refused on reload) naming the key,
and again in each worker. Imports nothing but the standard library.
"""

from __future__ import annotations

import ssl
from pathlib import Path

MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2  #: TLS 1.0 and 1.1 are deprecated (RFC 8996)


class TlsSettingError(ValueError):
    """The certificate or key cannot be used; the message starts with the setting it is about."""


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for the PEM certificate chain `cert` and its private key `key`."""
    for name, path in (("http_tls_cert", cert), ("http_tls_key", key)):
        if not Path(path).is_file():
            raise TlsSettingError(f"{name}: {path} is not a file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MIN_TLS_VERSION
    try:
        context.load_cert_chain(str(cert), str(key))
    except PermissionError:
        raise TlsSettingError(f"http_tls_key: {cert} or {key} is not readable by this user") from None
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise TlsSettingError(
            f"http_tls_key: {cert} and {key} are not a PEM certificate and its private key ({reason})"
        ) from None
    return context
