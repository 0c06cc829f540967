"""Column types that behave the same on SQLite and MariaDB.

Postal's tables are MySQL tables; these helpers keep the MariaDB column
types exactly as Postal declares them while giving SQLite an equivalent.
"""

from sqlalchemy import BigInteger, Boolean, DateTime, Integer, LargeBinary, Numeric, String, Text
from sqlalchemy.dialects import mysql

#: datetime with microseconds on MariaDB (lock timestamps are compared for equality).
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")

#: integer primary keys: AUTOINCREMENT-compatible on SQLite (INTEGER PRIMARY KEY).
BigId = BigInteger().with_variant(Integer(), "sqlite")

#: UNIX time stored as decimal(18,6), read back as float.
UnixTime = Numeric(18, 6, asdecimal=False)

#: decimal(8,2), read back as float.
Score = Numeric(8, 2, asdecimal=False)

#: raw message chunks.
LongBlob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql")

#: text columns (TEXT on MariaDB holds 64 KB; payloads and keys can be larger).
LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql")

Str = String(255)
Bool = Boolean(create_constraint=False)

__all__ = ["Timestamp", "BigId", "UnixTime", "Score", "LongBlob", "LongText", "Str", "Bool", "Integer", "Text"]
