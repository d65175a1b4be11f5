"""Who is calling: bearer-token dependencies shared by every relay router."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Header, HTTPException

from cloud_relay.store import Store, User


def current_user_dependency(store: Store) -> Callable[..., User]:
    def current_user(authorization: str = Header(default="")) -> User:
        token = authorization.removeprefix("Bearer ").strip()
        user = store.user_for_token(token) if token else None
        if user is None:
            raise HTTPException(401, "sign in first (missing or expired token)")
        return user

    return current_user


def admin_dependency(current_user: Callable[..., User]) -> Callable[..., User]:
    def admin(user: User = Depends(current_user)) -> User:  # noqa: B008 (FastAPI idiom)
        if user.role != "admin":
            raise HTTPException(403, "clinic admins only")
        return user

    return admin
