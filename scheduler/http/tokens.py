"""API tokens: the key is shown once; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from django.utils import timezone

from scheduler.models import ApiToken


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token_issue(*, token: ApiToken) -> str:
    """Give ``token`` a new random key, save it, return the key (shown once)."""
    key = "dts_" + secrets.token_urlsafe(32)
    token.key_hash = _hash(key)
    token.prefix = key[:8]
    token.save()
    return key


def token_user(key: str):
    """The active user a key belongs to, or None."""
    if not key or len(key) > 200:
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=_hash(key)).first()
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user
