"""Users: creation, passwords (bcrypt), lookup."""

from __future__ import annotations

import bcrypt
from sqlalchemy import func, select

from postald import off_hub
from postald.errors import Errors, NotFound
from schema.main import User, utcnow

MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    return off_hub.call(bcrypt.hashpw, password.encode("utf-8"), bcrypt.gensalt()).decode()


def check_password(user: User, password: str) -> bool:
    if not user.password_digest or password is None:
        return False
    try:
        return off_hub.call(bcrypt.checkpw, password.encode("utf-8"), user.password_digest.encode())
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


def update(session, user: User, **values) -> User:
    """Change a user's details (first_name, last_name, email_address, time_zone,
    admin, password with optional password_confirmation); all checked first.

    A blank password leaves the password unchanged; a new one clears any
    password-reset token."""
    errors = Errors()
    fields = {k: v for k, v in values.items() if k in ("first_name", "last_name", "email_address", "time_zone", "admin")}
    for key in ("first_name", "last_name", "email_address", "time_zone"):
        if key in fields:
            fields[key] = (fields[key] or "").strip() or None
    if "first_name" in fields and not fields["first_name"]:
        errors.add("first_name", "can't be blank")
    if "last_name" in fields and not fields["last_name"]:
        errors.add("last_name", "can't be blank")
    if "email_address" in fields:
        email = fields["email_address"]
        other = find_by_email(session, email) if email else None
        if not email:
            errors.add("email_address", "can't be blank")
        elif "@" not in email:
            errors.add("email_address", "is invalid")
        elif other is not None and other.id != user.id:
            errors.add("email_address", "has already been taken")
    if "time_zone" in fields and not fields["time_zone"]:
        fields["time_zone"] = "UTC"
    password = values.get("password")
    if password:
        if len(password) < MIN_PASSWORD_LENGTH:
            errors.add("password", f"is too short (minimum is {MIN_PASSWORD_LENGTH} characters)")
        confirmation = values.get("password_confirmation")
        if confirmation is not None and confirmation != password:
            errors.add("password_confirmation", "doesn't match Password")
    errors.raise_if_any()
    for key, value in fields.items():
        setattr(user, key, bool(value) if key == "admin" else value)
    if password:
        user.password_digest = hash_password(password)
        user.password_reset_token = None
        user.password_reset_token_valid_until = None
    session.flush()
    return user


def set_memberships(session, user: User, organization_ids) -> None:
    """Make the user a member of exactly these organizations (new rows: not admin, all servers)."""
    from schema.main import OrganizationUser

    wanted = {int(i) for i in organization_ids if str(i).strip().isdigit()}
    rows = list(session.scalars(select(OrganizationUser).where(
        OrganizationUser.user_id == user.id, OrganizationUser.user_type == "User")))
    for row in rows:
        if row.organization_id not in wanted:
            session.delete(row)
    for organization_id in wanted - {row.organization_id for row in rows}:
        session.add(OrganizationUser(organization_id=organization_id, user_id=user.id, user_type="User",
                                     admin=False, all_servers=True))
    session.flush()


def delete(session, user: User) -> None:
    """Remove a user with their memberships and end their sessions."""
    from schema.main import AuthieSession, OrganizationUser

    session.query(OrganizationUser).filter(OrganizationUser.user_id == user.id, OrganizationUser.user_type == "User").delete(
        synchronize_session=False)
    session.query(AuthieSession).filter(AuthieSession.user_id == user.id).update({"active": False}, synchronize_session=False)
    session.delete(user)
    session.flush()
