"""Object-level authorization: who may see, cancel, review or use a task, a target, a template, a kernel, a token.

Route-level rules (``anonymous``, ``user``, ``admin``, ``agent``) are declared per handler method
and checked in ``handlers/base.py``; every question about one object is answered here, once, as a
plain predicate over the caller's :class:`~cellgate.gateway.auth.Identity` and the object. REST,
the kernel WebSocket, Slack and the gate ask these functions; none of them re-implements a rule.
Listings use the SQL forms (``visible_tasks``, ``visible_tokens``, ``reviewable_tasks``), which
select exactly the rows the predicate admits (``tests/gateway/test_authz.py`` checks both on the
same rows, on SQLite and PostgreSQL).

What a refusal looks like stays with the caller: an object the caller may not see is answered
like an absent one (404, the same text), so its existence is not disclosed; an object the caller
may see but not act on is a 403 naming the rule (``review_refusal`` gives the text).

This module reads no store and imports no service, gate or handler: the callers pass what they
read (a reviewer's groups are read at decision time, never taken from a cached identity).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, and_, exists, false, func, literal, or_, select, true
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement

from .auth import Identity
from .models import Target, Task, Token, User

if TYPE_CHECKING:
    from .kernels import LiveKernel

# --------------------------------------------------------------------------------- tasks


def may_see_task(ident: Identity, task: Task) -> bool:
    """The task's author, members of one of its review groups, and admins; nobody else.

    An agent token sees no task. Callers answer "not visible" exactly as "absent" (404)."""
    return ident.is_admin or task.user_id == ident.user_id or bool(ident.groups & set(task.review_groups))


def visible_tasks(ident: Identity) -> ColumnElement[bool]:
    """``may_see_task`` as a WHERE clause on ``tasks``: for listings (``GET /api/v1/tasks``)."""
    if ident.is_admin:
        return true()
    mine = Task.user_id == ident.user_id if ident.user_id is not None else false()
    if not ident.groups:
        return mine
    return or_(mine, JsonHasAny(Task.review_groups, ident.groups))


def may_cancel_task(ident: Identity, task: Task) -> bool:
    """The task's author and admins (a reviewer who can see the task may not cancel it: 403)."""
    return task.user_id == ident.user_id or ident.is_admin


# ------------------------------------------------------------------------------- reviews

#: why an identity without a user (an agent token) cannot decide a review (403)
ONLY_USERS_REVIEW = "only users review tasks"


def may_decide_reviews(ident: Identity) -> bool:
    """Only users decide reviews: an identity without a user id (an agent token) never does.
    Which task a user may decide is ``review_refusal``'s question."""
    return ident.user_id is not None


def review_refusal(task: Task, reviewer: User, groups: Iterable[str]) -> str | None:
    """Why ``reviewer`` may not decide on ``task`` now (a 403's text), or None if they may.

    ``groups`` are the reviewer's groups read from the store at decision time. In this order:
    the author never reviews their own task (admins included); a deactivated user never reviews;
    the reviewer must be a member of one of the task's review groups (being admin is not enough).
    """
    if task.user_id == reviewer.id:
        return (f"task {task.id} is yours: the author of a task can never review it "
                f"(ask a member of {', '.join(task.review_groups)})")
    if not reviewer.active:
        return f"{reviewer.name} is deactivated"
    if not set(groups) & set(task.review_groups):
        return f"{reviewer.name} is not in a review group of task {task.id} ({', '.join(task.review_groups)})"
    return None


def may_review_task(task: Task, reviewer: User, groups: Iterable[str]) -> bool:
    """``review_refusal`` as a yes/no."""
    return review_refusal(task, reviewer, groups) is None


def reviewable_tasks(reviewer_id: int, groups: Collection[str]) -> ColumnElement[bool]:
    """``may_review_task`` for an active reviewer, as a WHERE clause on ``tasks`` (the review inbox):
    not their own task, and one of its review groups is one of ``groups`` (read now)."""
    if not groups:
        return false()
    return and_(Task.user_id != reviewer_id, JsonHasAny(Task.review_groups, groups))


# ------------------------------------------------------------------------------- targets


def may_submit(ident: Identity, target: Target) -> bool:
    """Users only: admins, and members of one of the target's ``submit_groups``; an empty list
    means every user. A target one may not submit to is answered as absent (404)."""
    if ident.kind != "user":
        return False
    if ident.is_admin or not target.submit_groups:
        return True
    return bool(ident.groups & set(target.submit_groups))


# ----------------------------------------------------------------------------- templates


def may_run_template(ident: Identity, groups: Collection[str]) -> bool:
    """Users only: admins, and members of one of the template's ``groups``. Unlike a target, a
    template that names no group is for admins only (what it does not say is not allowed). One
    may not run is answered as absent (404). Running it on a target also needs ``may_submit``."""
    if ident.kind != "user":
        return False
    return ident.is_admin or bool(ident.groups & set(groups))


def may_manage_templates(ident: Identity) -> bool:
    """Admins: see where templates come from, what could not be read, and refresh them."""
    return ident.kind == "user" and ident.is_admin


def template_allows_target(targets: Collection[str], kinds: Collection[str], target: Target) -> bool:
    """A template runs only on the targets it names, or on targets of the kinds it names."""
    return target.name in targets or (bool(target.kind) and target.kind in kinds)


# ----------------------------------------------------------------------------- schedules

def may_see_schedule(ident: Identity, author_id: int, review: Task | None) -> bool:
    """Its author, admins, and whoever may see its review task (its reviewers); nobody else (404)."""
    if ident.kind != "user":
        return False
    return ident.is_admin or author_id == ident.user_id or (review is not None and may_see_task(ident, review))


def may_manage_schedule(ident: Identity, author_id: int) -> bool:
    """Resubmitting or deleting a schedule: its author and admins (a reviewer who sees it gets 403)."""
    return ident.kind == "user" and (ident.is_admin or author_id == ident.user_id)


# ------------------------------------------------------------------------------- kernels


def may_use_kernel(ident: Identity, kernel: LiveKernel) -> bool:
    """The user who started the kernel, and only while it is not ephemeral (a script's kernel is
    no one's to list, attach to, interrupt or stop). Admins get no exception. Every kernel route
    answers "not yours" as "absent" (404), the WebSocket included."""
    return not kernel.ephemeral and kernel.user_id == ident.user_id


# -------------------------------------------------------------------------------- tokens


def may_list_tokens(ident: Identity, user_name: str | None, kind: str | None) -> bool:
    """Everyone lists their own user tokens; only admins list another user's or the agents' (403)."""
    others = kind == "agent" or (user_name is not None and user_name != ident.name)
    return ident.is_admin or not others


def may_see_token(ident: Identity, token: Token) -> bool:
    """One's own tokens; admins: every token, agents' too. Not visible is answered as absent (404).

    An identity without a user (an agent token) owns no token: agent tokens have no user either,
    and "no user" is nobody's (the token routes admit users only, so this is never reached)."""
    return (ident.user_id is not None and token.user_id == ident.user_id) or ident.is_admin


def may_revoke_token(ident: Identity, token: Token) -> bool:
    """Whoever may see a token may revoke it (``may_see_token``)."""
    return may_see_token(ident, token)


def visible_tokens(ident: Identity) -> ColumnElement[bool]:
    """``may_see_token`` as a WHERE clause on ``tokens`` (``GET /api/v1/tokens``)."""
    if ident.is_admin:
        return true()
    return Token.user_id == ident.user_id if ident.user_id is not None else false()


# ------------------------------------------------------------------ JSON arrays in SQL


class JsonHasAny(ColumnElement[bool]):
    """SQL: the JSON array of strings in ``column`` holds one of ``values`` (a group-name overlap).

    Written per store dialect: ``json_each`` on SQLite, ``json_array_elements_text`` on
    PostgreSQL; any other dialect is refused when the statement is compiled.
    """

    inherit_cache = False  # the values are bound parameters built at compile time: no statement cache
    type = Boolean()

    def __init__(self, column: Any, values: Iterable[str]) -> None:
        self.column = column
        self.values = sorted(values)


def _overlap(element: JsonHasAny, function: str) -> ColumnElement[bool]:
    each = getattr(func, function)(element.column).table_valued("value")
    return exists(select(literal(1)).select_from(each).where(each.c.value.in_(element.values)))


@compiles(JsonHasAny)
def _compile_other(element: JsonHasAny, compiler: SQLCompiler, **kw: Any) -> str:
    raise CompileError(f"cellgate's store is SQLite or PostgreSQL; {compiler.dialect.name} is not supported")


@compiles(JsonHasAny, "sqlite")
def _compile_sqlite(element: JsonHasAny, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(_overlap(element, "json_each"), **kw)


@compiles(JsonHasAny, "postgresql")
def _compile_postgresql(element: JsonHasAny, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(_overlap(element, "json_array_elements_text"), **kw)
