"""Verifying the provider's JWT access tokens for the REST API: signature by JWKS, then iss, aud, exp.

The key set is fetched once per process (found through the issuer's discovery document) and fetched
again only when a token names a key id the set does not have: the provider rotated its keys. A burst
of tokens with made-up key ids causes at most one fetch per ``REFRESH_COOLDOWN_SECONDS``.
Only asymmetric algorithms are accepted: an ``HS256`` token "signed" with the public key is refused.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry, extract_compact

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
REFRESH_COOLDOWN_SECONDS = 10.0
LEEWAY_SECONDS = 30


class TokenInvalid(Exception):
    """The token is not one the configured issuer signed for this API, or it has expired."""


@dataclass
class JwksCache:
    issuer: str
    timeout: float
    _keys: KeySet | None = None
    _jwks_uri: str = ""
    _fetched_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _fetch(self) -> None:
        if not self._jwks_uri:
            metadata = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=self.timeout).json()
            if metadata.get("issuer") != self.issuer:
                raise TokenInvalid("the provider's discovery document names another issuer")
            self._jwks_uri = metadata["jwks_uri"]
        answer = requests.get(self._jwks_uri, timeout=self.timeout)
        answer.raise_for_status()
        self._keys = KeySet.import_key_set(answer.json())
        self._fetched_at = time.monotonic()

    def keys_for(self, kid: str | None) -> KeySet:
        """The key set, fetched first if missing, or again if it lacks ``kid`` (outside the cooldown)."""
        with self._lock:
            known = self._keys is not None and (kid is None or any(k.kid == kid for k in self._keys.keys))
            stale = time.monotonic() - self._fetched_at > REFRESH_COOLDOWN_SECONDS
            if self._keys is None or (not known and stale):
                try:
                    self._fetch()
                except (requests.RequestException, ValueError, KeyError, JoseError) as exc:
                    if self._keys is None:
                        raise TokenInvalid(f"the provider's keys could not be fetched ({type(exc).__name__})") from exc
            assert self._keys is not None
            return self._keys


def access_token_verify(token: str, *, cache: JwksCache, audience: str) -> dict:
    """The claims of ``token`` if the issuer signed it for ``audience`` and it is current; else ``TokenInvalid``."""
    try:
        kid = extract_compact(token.encode()).headers().get("kid")
    except (JoseError, ValueError) as exc:
        raise TokenInvalid("not a JWT") from exc
    keys = cache.keys_for(kid)
    try:
        decoded = jwt.decode(token, keys, registry=JWSRegistry(algorithms=ALGORITHMS))
        jwt.JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": cache.issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": False},
        ).validate(decoded.claims)
    except (JoseError, ValueError) as exc:
        raise TokenInvalid(getattr(exc, "description", None) or type(exc).__name__) from exc
    return decoded.claims
