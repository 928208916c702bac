"""SQL text written from a table's code constants, shared by the executemany and the COPY
paths: quoted identifiers and the ON CONFLICT tail of an upsert. Imports no other module of
the dialect package but `urls`, so both paths import it without a circle."""

from __future__ import annotations

from sqlalchemy import Engine, Table
from sqlalchemy.engine import Connection

from .urls import POSTGRESQL, name


def quote(bind: Connection | Engine, ident: str) -> str:
    """An identifier quoted as the back-end wants it (only where it must be)."""
    return str(bind.dialect.identifier_preparer.quote(ident))


def upsert_tail(bind: Connection | Engine, table: Table, alias: str = "excluded") -> str:
    """``ON CONFLICT (primary key) DO UPDATE SET c = excluded.c, ... WHERE <they differ>``:
    a row whose key exists takes the incoming values, and only when some value differs
    (an unchanged row is not rewritten). DO NOTHING when every column is in the key.
    Built from the table's code constants."""
    key = [c.name for c in table.primary_key.columns]
    rest = [c.name for c in table.c if c.name not in key]
    head = f"ON CONFLICT ({', '.join(quote(bind, k) for k in key)})"
    if not rest:
        return f"{head} DO NOTHING"
    t = quote(bind, table.name)
    sets = ", ".join(f"{quote(bind, c)} = {alias}.{quote(bind, c)}" for c in rest)
    mine = ", ".join(f"{t}.{quote(bind, c)}" for c in rest)
    theirs = ", ".join(f"{alias}.{quote(bind, c)}" for c in rest)
    differ = "IS DISTINCT FROM" if name(bind) == POSTGRESQL else "IS NOT"
    return f"{head} DO UPDATE SET {sets} WHERE ({mine}) {differ} ({theirs})"
