"""What the REST API's OpenID bearer costs per request: verifying a JWT access token with a warm key set.

    .venv/bin/python bench/sso_jwt_bench.py [--tokens 2000] [--alg RS256|ES256]

Signs tokens with a fresh key (as a provider would), puts the public key set in the ``JwksCache`` as if
fetched, and times ``access_token_verify`` (header parse, key lookup by kid, signature, iss/aud/exp).
No network and no database: the per-request price of the check itself. The membership re-sync runs
only when a token's groups change or every ``OIDC_API_RESYNC_SECONDS``, and is not part of this figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from apps.sso.jwks import JwksCache, access_token_verify

ISSUER = "https://idp.example"
AUDIENCE = "https://gateway.example/api"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--alg", choices=("RS256", "ES256"), default="RS256")
    args = parser.parse_args()
    if args.alg == "RS256":
        key = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256", "use": "sig"})
    else:
        key = ECKey.generate_key("P-256", parameters={"kid": "k1", "alg": "ES256", "use": "sig"})
    cache = JwksCache(issuer=ISSUER, timeout=1.0)
    cache._keys = KeySet.import_key_set({"keys": [key.as_dict(private=False)]})
    cache._fetched_at = time.monotonic()
    now = int(time.time())
    tokens = [
        jwt.encode(
            {"alg": args.alg, "kid": "k1", "typ": "at+jwt"},
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": f"ci-{n}",
                "client_id": "ci",
                "exp": now + 600,
                "iat": now,
                "groups": ["deployers"],
            },
            key,
        )
        for n in range(args.tokens)
    ]
    for token in tokens[:50]:  # warm up
        access_token_verify(token, cache=cache, audience=AUDIENCE)
    samples = []
    for token in tokens:
        started = time.perf_counter()
        access_token_verify(token, cache=cache, audience=AUDIENCE)
        samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    print(f"{args.alg}: {len(samples)} tokens verified")
    print(f"  p50 {statistics.median(samples):.0f} us, p99 {samples[int(len(samples) * 0.99) - 1]:.0f} us, "
          f"{1e6 / statistics.fmean(samples):,.0f} verifications/s on one core")  # fmt: skip


if __name__ == "__main__":
    main()
