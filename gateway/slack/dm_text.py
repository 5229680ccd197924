"""What a direct message to cellgate says: a command, or code exactly as its author typed it.

Slack sends a message's ``text`` in its own markup (docs/slack.md §7):

- ``&``, ``<`` and ``>`` the user typed arrive as ``&amp;``, ``&lt;`` and ``&gt;``: decoded here;
- a code block arrives wrapped in triple backticks, inline code in single ones: when the whole
  message is one of them, the wrapping is removed (the backticks are Slack's formatting, not code);
- text Slack took for a link, an email address, a mention or a channel arrives rewritten as ``<…>``
  (``<http://x.io|x.io>``, ``<mailto:a@b.io|a@b.io>``, ``<@U024BE7LH>``, ``<#C024BE7LR|ops>``,
  ``<!here>``). A ``<`` the user typed is always escaped, so any ``<`` in the text is Slack's: the
  code would not be what they typed, and is refused (:class:`NotAsTyped`), with how to avoid it.

Pure functions: nothing here talks to Slack or the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FENCE = "```"
WHY = "from Slack (direct message)"

HELP = """*cellgate in a direct message*
• `targets` — the targets you may run code on
• `target NAME` — run what you send next on NAME (`target` alone: which one it is)
• anything else is code: it runs as a task on that target, with the same policy, review and audit as \
`cellgate run`; its review and its result come in the thread of your message
• `help` — this list
Send code in a code block (```…```): Slack turns some text (addresses, emails, names with @ or #) into \
links or mentions, and cellgate refuses a message where it did, since that is not the code you typed."""

NO_TARGET = ("choose a target first: `targets` lists those you may run code on, `target NAME` chooses one; "
             "then send your code again")
LINKED = ("cellgate refused this message: Slack turned part of it into a link or a mention (`<…>`), so it is not "
          "the code you typed. Send it in a code block (```…```), where Slack leaves text as it is; nothing was run.")
AROUND = ("cellgate refused this message: it has a code block and text around it. Send only the code, as one "
          "code block (```…```) or as plain text; nothing was run.")
EMPTY = "there is no code in this message; nothing was run. `help` says what you can send."

_ENTITY = re.compile(r"&(amp|lt|gt);")
_DECODED = {"amp": "&", "lt": "<", "gt": ">"}


class NotAsTyped(ValueError):
    """The message is not code as its author typed it (or holds none): ``message`` says why, and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Command:
    """``help``, ``targets``, or ``target`` with the name given (None: show the current one)."""

    verb: str
    name: str | None = None


def unescape(text: str) -> str:
    """Slack's three entities decoded in one pass (``&amp;lt;`` is the text ``&lt;``, as typed)."""
    return _ENTITY.sub(lambda m: _DECODED[m[1]], text)


def command_of(text: str) -> Command | None:
    """The command a message is (case-insensitive, trimmed), or None: the message is code."""
    words = text.split()
    if not words:
        return None
    verb = words[0].lower()
    if verb in ("help", "targets") and len(words) == 1:
        return Command(verb)
    if verb == "target" and len(words) <= 2:
        return Command(verb, unescape(words[1]) if len(words) == 2 else None)
    return None


def code_of(text: str) -> str:
    """The code the author typed: one code block or inline code unwrapped, entities decoded.

    Raises :class:`NotAsTyped` when Slack rewrote part of it (``<…>``), when a code block has text
    around it, or when there is nothing to run.
    """
    if "<" in text:
        raise NotAsTyped(LINKED)
    body = text.strip()
    if len(body) >= 2 * len(FENCE) and body.startswith(FENCE) and body.endswith(FENCE) and FENCE not in body[3:-3]:
        body = body[3:-3].strip("\r\n")
    elif FENCE in body:
        raise NotAsTyped(AROUND)
    elif len(body) >= 2 and body[0] == "`" and body[-1] == "`" and "`" not in body[1:-1]:
        body = body[1:-1]
    code = unescape(body)
    if not code.strip():
        raise NotAsTyped(EMPTY)
    return code
