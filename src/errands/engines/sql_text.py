"""Query text from ``engines/sql/<dialect>/``, with shared fragments included.

A *fragment* is a ``.sql`` file in the same dialect folder whose name starts with
an underscore (``_claimed_job_json.sql``). A query includes one with a line of its
own, which the fragment's text replaces, each fragment line indented like the
directive (blank lines stay blank)::

    claimed AS (
        -- include: _claim_update
        FROM picked
        WHERE j.id = picked.id
        -- include: _claimed_job_json
    )

Includes are one level deep: a fragment may not include anything (itself or
another fragment), so there is no recursion to follow and no cycle to detect.
An include naming a missing fragment, or found in a fragment, raises
:class:`SqlIncludeError` naming the fragment and the including file.

Expansion is plain text, before anything else reads the query: PostgreSQL's
``{schema}`` placeholder (filled by ``psycopg.sql.SQL.format``) works the same
in a fragment as in a query.

:func:`errands.engines.base.load_sql` expands every query it reads.

Example::

    expand_includes("postgres", read_sql_file("postgres", "claim"), source="claim.sql")
    # claim.sql with its two fragments in place: what load_sql("postgres", "claim") returns
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources

from errands.errors import ErrandsError

__all__ = ["SqlIncludeError", "expand_includes", "read_sql_file"]

#: Any line that looks like a directive; a malformed one is refused, never sent.
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)--[ \t]*include:(?P<rest>.*)$")
#: A fragment's name: an underscore, then letters, digits and underscores.
_FRAGMENT_NAME = re.compile(r"_[A-Za-z0-9_]+")

#: Reads ``engines/sql/<dialect>/<name>.sql``: ``(dialect, name) -> text``.
Reader = Callable[[str, str], str]


class SqlIncludeError(ErrandsError, ValueError):
    """An ``-- include:`` line that cannot be expanded (a bug in the package's SQL files).

    Example: ``-- include: _nope`` in ``claim.sql`` raises
    ``SqlIncludeError("postgres/claim.sql includes '_nope', but ... does not exist")``.
    """


def read_sql_file(dialect: str, name: str) -> str:
    """The raw text of ``engines/sql/<dialect>/<name>.sql``, includes not expanded.

    Raises ``FileNotFoundError`` when there is no such file.

    Example: ``read_sql_file("sqlite", "_limited_ranked").startswith("--")``
    """
    return resources.files("errands.engines").joinpath("sql", dialect, f"{name}.sql").read_text()


def expand_includes(
    dialect: str, text: str, *, source: str = "<query>", read: Reader = read_sql_file
) -> str:
    """``text`` with every ``-- include: _fragment`` line replaced by that fragment.

    ``source`` names the including file in errors; ``read`` reads a fragment
    (the package's files by default).

    Example::

        expand_includes("postgres", "SELECT 1\\n    -- include: _x\\n", read=reader)
        # with reader returning "FROM t\\n" for _x: "SELECT 1\\n    FROM t\\n"
    """
    where = f"{dialect}/{source}"
    lines: list[str] = []
    for line in text.splitlines(keepends=True):
        directive = _DIRECTIVE.match(line.rstrip("\r\n"))
        if directive is None:
            lines.append(line)
            continue
        fragment = directive["rest"].strip()
        if not _FRAGMENT_NAME.fullmatch(fragment):
            raise SqlIncludeError(
                f"{where} has a malformed include line {line.strip()!r}: write "
                "'-- include: _name' to include the fragment _name.sql of the same folder"
            )
        body = _read_fragment(dialect, fragment, where, read)
        newline = "\n" if line.endswith("\n") else ""
        lines.append(_indent(body, directive["indent"]) + newline)
    return "".join(lines)


def _read_fragment(dialect: str, fragment: str, where: str, read: Reader) -> str:
    """The text of ``fragment``, which must exist and include nothing itself."""
    try:
        body = read(dialect, fragment)
    except FileNotFoundError:
        raise SqlIncludeError(
            f"{where} includes {fragment!r}, but {dialect}/{fragment}.sql does not exist"
        ) from None
    for line in body.splitlines():
        if _DIRECTIVE.match(line):
            raise SqlIncludeError(
                f"{dialect}/{fragment}.sql (included by {where}) has an include line "
                f"{line.strip()!r}: fragments may not include fragments (one level only)"
            )
    return body


def _indent(body: str, indent: str) -> str:
    """``body`` without its final newline, every non-blank line prefixed with ``indent``."""
    return "\n".join(
        indent + line if line.strip() else "" for line in body.rstrip("\r\n").splitlines()
    )
