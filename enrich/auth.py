"""Who is calling: the tenant named by a verified JWT, and nothing a client writes in its spans.

Mode `jwt`: HS256 tokens are checked against the shared secret, RS256/ES256 tokens against the
JWKS (file or URL) key whose `kid` matches. An algorithm is only ever checked against its own
kind of key, so an HS256 token "signed" with a public key is refused (algorithm confusion).
`exp` is required; `nbf`, issuer and audience are checked when present or configured.
Mode `none` trusts nobody and names nobody: enrich/tenant.py then reads the tenant from the spans.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import jwt

from collector.errors import IngestError, Kind
from meterline.config import Config, ConfigError

log = logging.getLogger(__name__)

HMAC_ALGORITHMS = ("HS256",)
MIN_SECRET_BYTES = 32  # RFC 7518 section 3.2: an HS256 key at least as long as the hash
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")


class Authenticator:
    def __init__(self, config: Config) -> None:
        auth = config.auth
        self.mode = auth.mode
        self.tenant_claim = auth.tenant_claim
        self.issuer = auth.issuer or None
        self.audience = auth.audience or None
        self.leeway = auth.leeway_seconds
        self.secret = config.jwt_secret
        self.jwks: jwt.PyJWKSet | None = None
        self.jwks_client: jwt.PyJWKClient | None = None
        if self.mode != "jwt":
            return
        if auth.jwks_file:
            try:
                self.jwks = jwt.PyJWKSet.from_json(Path(auth.jwks_file).read_text())
            except (OSError, jwt.PyJWTError) as exc:
                raise ConfigError(f"auth.jwks_file: cannot load {auth.jwks_file}: {exc}") from None
        if auth.jwks_url:
            # The key SET is cached for 5 minutes; per-kid key caching is off, or a key the identity
            # provider has revoked would keep verifying until restart.
            self.jwks_client = jwt.PyJWKClient(auth.jwks_url, cache_jwk_set=True, cache_keys=False, lifespan=300)
        if self.secret and len(self.secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"the HS256 secret is {len(self.secret.encode())} bytes; use at least {MIN_SECRET_BYTES} "
                              "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        if (self.jwks or self.jwks_client) and not (self.issuer or self.audience):
            log.warning("JWKS keys are configured without auth.issuer or auth.audience: any token those keys "
                        "sign is accepted, including ones issued to other applications of the same provider")
        if not (self.secret or self.jwks or self.jwks_client):
            raise ConfigError(
                "auth mode 'jwt' needs a key: set METERLINE_JWT_SECRET (HS256), or auth.jwt_secret, "
                "auth.jwks_file or auth.jwks_url in the config; for local development only, "
                "use `--auth none`"
            )

    def tenant_of(self, authorization: str | None) -> str | None:
        """The tenant id a request's Authorization header proves; None in mode `none`."""
        if self.mode == "none":
            return None
        if not authorization:
            raise IngestError(Kind.UNAUTHENTICATED, "missing Authorization: Bearer <JWT>")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise IngestError(Kind.UNAUTHENTICATED, "Authorization must be 'Bearer <JWT>'")
        claims = self._verify(token.strip())
        tenant = claims.get(self.tenant_claim, claims.get(f"custom:{self.tenant_claim}"))
        if not isinstance(tenant, str) or not tenant:
            raise IngestError(Kind.UNAUTHENTICATED, f"token has no {self.tenant_claim!r} claim")
        return tenant

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm in HMAC_ALGORITHMS and self.secret:
                key: Any = self.secret
            elif algorithm in PUBLIC_KEY_ALGORITHMS and (self.jwks or self.jwks_client):
                key = self._public_key(header.get("kid"), token)
            else:
                raise IngestError(Kind.UNAUTHENTICATED, f"token algorithm {algorithm!r} is not accepted here")
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise IngestError(Kind.UNAUTHENTICATED, "token has expired") from None
        except jwt.PyJWTError as exc:
            raise IngestError(Kind.UNAUTHENTICATED, f"invalid token: {exc}") from None

    def _public_key(self, kid: str | None, token: str) -> Any:
        if self.jwks is not None:
            for key in self.jwks.keys:
                if kid is None or key.key_id == kid:
                    return key.key
        if self.jwks_client is not None:
            return self.jwks_client.get_signing_key_from_jwt(token).key
        raise IngestError(Kind.UNAUTHENTICATED, f"no JWKS key with kid {kid!r}")


def issue_dev_token(secret: str, tenant_id: str, ttl_seconds: int, tenant_claim: str = "tenant_id",
                    issuer: str | None = None, audience: str | None = None) -> str:
    """An HS256 token for a registered tenant, for configuring an agent's exporter in development."""
    now = int(time.time())
    claims: dict[str, Any] = {tenant_claim: tenant_id, "sub": tenant_id, "iat": now, "nbf": now, "exp": now + ttl_seconds}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


def warn_if_unauthenticated(mode: str) -> None:
    if mode == "none":
        banner = "!" * 78
        log.warning(
            "\n%s\n  AUTH MODE 'none': tenants are read from span attributes that any client can forge.\n"
            "  Use only for local development; never bill from a collector running like this.\n%s",
            banner, banner,
        )

