"""Users: creation, passwords (bcrypt), lookup."""

from __future__ import annotations

import bcrypt
from sqlalchemy import func, select

from postald.errors import Errors, NotFound
from schema.main import User, utcnow

MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt()).decode()


def check_password(user: User, password: str) -> bool:
    if not user.password_digest or password is None:
        return False
    try:
        return bcrypt.checkpw(password.encode("utf-8"), user.password_digest.encode())
    except ValueError:
        return False


def find_by_email(session, email: str) -> User | None:
    return session.scalars(select(User).where(func.lower(User.email_address) == (email or "").strip().lower())).first()


def get(session, email_or_uuid: str) -> User:
    user = find_by_email(session, email_or_uuid) or session.scalars(select(User).where(User.uuid == email_or_uuid)).first()
    if user is None:
        raise NotFound(f"No user found matching '{email_or_uuid}'")
    return user


def create(session, email_address: str, first_name: str, last_name: str, password: str | None,
           admin: bool = False, time_zone: str = "UTC") -> User:
    errors = Errors()
    email_address = (email_address or "").strip()
    if not first_name:
        errors.add("first_name", "can't be blank")
    if not last_name:
        errors.add("last_name", "can't be blank")
    if not email_address:
        errors.add("email_address", "can't be blank")
    elif "@" not in email_address:
        errors.add("email_address", "is invalid")
    elif find_by_email(session, email_address) is not None:
        errors.add("email_address", "has already been taken")
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        errors.add("password", f"is too short (minimum is {MIN_PASSWORD_LENGTH} characters)")
    errors.raise_if_any()
    user = User(
        email_address=email_address,
        first_name=first_name,
        last_name=last_name,
        admin=bool(admin),
        time_zone=time_zone or "UTC",
        password_digest=hash_password(password) if password else None,
        email_verified_at=utcnow(),
    )
    session.add(user)
    session.flush()
    return user


def set_password(user: User, password: str) -> None:
    errors = Errors()
    if not password or len(password) < MIN_PASSWORD_LENGTH:
        errors.add("password", f"is too short (minimum is {MIN_PASSWORD_LENGTH} characters)")
    errors.raise_if_any()
    user.password_digest = hash_password(password)
