"""The Slack form of a template: the Run… buttons of ``/cellgate templates``, the modal built from a
template's declarations, and what its submission says.

Pure functions: nothing here talks to Slack or the store, and nothing here decides. The targets and
options a modal offers are a convenience and its ``private_metadata`` (the template's name and the
commit the form was built from) only says what the form was for: the submission is checked again in
full (``template_runs.submit``, through ``templates.runs.run_template``).

Each parameter is one input block, ``param_<name>``, optional unless it is required, pre-filled with
its default, its help as the hint; the element follows its type:

- ``select``: a static select of its options (a text input past Slack's 100 options or 150-character values)
- ``date``: a date picker
- ``integer``, ``number``: a number input (decimals allowed for ``number``)
- ``boolean``: a static select of true and false
- ``text``: a text input

A field left empty is a value not given: the run takes the default, or refuses a required one.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..errors import BadRequest
from ..templates.catalog import Template
from ..templates.declare import Param
from .messages import (
    MAX_TEMPLATES,
    cut,
    esc,
    mrkdwn,
    plain,
    template_line,
    templates_heading,
    templates_more,
    templates_text,
)

#: the Run… button's action_id (its value: the template's name)
RUN = "cellgate_template_run"
#: the modal's callback_id
MODAL = "cellgate_template_run_modal"
TARGET_BLOCK = "cellgate_target"
WHY_BLOCK = "cellgate_why"
PARAM_BLOCK = "param_"
#: the action_id of every input element (a block holds one)
ACTION = "value"
#: Slack's limits: options of a static select, an option's value and text, a text input, a
#: button's value, private_metadata, blocks in a modal (the form's own four are kept free)
MAX_OPTIONS = 100
MAX_OPTION_VALUE = 150
MAX_OPTION_TEXT = 75
MAX_TEXT_INPUT = 3000
MAX_BUTTON_VALUE = 2000
MAX_METADATA = 3000
MAX_PARAMS = 96
MAX_WHY = 2000
CLI = "cellgate templates run"


# ------------------------------------------------------------------ /cellgate templates
def listing(templates: list[Template]) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks): each template the user may run, with a Run… button opening its form."""
    blocks: list[dict[str, Any]] = [{"type": "section", "text": mrkdwn(templates_heading(templates))}]
    for t in templates[:MAX_TEMPLATES]:
        block: dict[str, Any] = {"type": "section", "text": mrkdwn(cut(template_line(t), 3000)[0])}
        if len(t.name) <= MAX_BUTTON_VALUE:
            block["accessory"] = {"type": "button", "action_id": RUN, "value": t.name, "text": plain("Run…")}
        blocks.append(block)
    if not templates:
        blocks.append({"type": "section", "text": mrkdwn("_none_")})
    more = templates_more(templates).strip()
    if more:
        blocks.append({"type": "context", "elements": [mrkdwn(more)]})
    return templates_text(templates), blocks


# ------------------------------------------------------------------------- the modal
def modal(template: Template, commit: str, targets: list[str]) -> dict[str, Any]:
    """The form that runs ``template`` (as of ``commit``) on one of ``targets``; ``BadRequest`` when
    Slack cannot hold it (then the command line runs it)."""
    if len(template.params) > MAX_PARAMS:
        raise BadRequest(f"template {template.name} has {len(template.params)} parameters, more than a Slack form "
                         f"holds: run it with `{CLI} {template.name}`")
    metadata = json.dumps({"template": template.name, "commit": commit}, ensure_ascii=False)
    if len(metadata) > MAX_METADATA:
        raise BadRequest(f"the name of template {template.name[:80]}… is too long for a Slack form: run it with `{CLI}`")
    about = f"*{esc(template.name)}* ({esc(template.kind)}) at `{esc(commit[:12])}`"
    if template.description:
        about += "\n" + esc(cut(template.description, 1000)[0])
    blocks = [{"type": "section", "text": mrkdwn(about)}, _target_block(targets),
              *(_param_block(p) for p in template.params.values()),
              {"type": "input", "block_id": WHY_BLOCK, "optional": True, "label": plain("Why? Reviewers see this."),
               "element": {"type": "plain_text_input", "action_id": ACTION, "multiline": True, "max_length": MAX_WHY}}]
    return {"type": "modal", "callback_id": MODAL, "private_metadata": metadata, "title": plain("Run a template"),
            "submit": plain("Run"), "close": plain("Cancel"), "blocks": blocks}


def _option(value: str) -> dict[str, Any]:
    return {"text": plain(cut(value, MAX_OPTION_TEXT)[0]), "value": value}


def _fits(options: list[str] | tuple[str, ...]) -> bool:
    return 0 < len(options) <= MAX_OPTIONS and all(0 < len(o) <= MAX_OPTION_VALUE for o in options)


def _target_block(targets: list[str]) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "static_select", "action_id": ACTION, "placeholder": plain("Choose a target"),
                               "options": [_option(t) for t in targets[:MAX_OPTIONS]]}
    if len(targets) == 1:
        element["initial_option"] = _option(targets[0])
    return {"type": "input", "block_id": TARGET_BLOCK, "label": plain("Target"), "element": element}


def _param_block(p: Param) -> dict[str, Any]:
    hint = p.help
    if p.pattern is not None:
        hint += f"{' ' if hint else ''}(must match {p.pattern})"
    block: dict[str, Any] = {"type": "input", "block_id": PARAM_BLOCK + p.name, "label": plain(p.name),
                             "optional": not p.required, "element": _element(p)}
    if hint:
        block["hint"] = plain(cut(hint, 2000)[0])
    return block


def _element(p: Param) -> dict[str, Any]:
    default = p.default
    if p.type in ("select", "boolean"):
        options = list(p.options) if p.type == "select" else ["true", "false"]
        if _fits(options):
            element: dict[str, Any] = {"type": "static_select", "action_id": ACTION, "placeholder": plain("Choose…"),
                                       "options": [_option(o) for o in options]}
            if default is not None:
                element["initial_option"] = _option(str(default).lower() if isinstance(default, bool) else str(default))
            return element
    if p.type == "date":
        element = {"type": "datepicker", "action_id": ACTION}
        if isinstance(default, dt.date):
            element["initial_date"] = default.isoformat()
        return element
    if p.type in ("integer", "number"):
        element = {"type": "number_input", "action_id": ACTION, "is_decimal_allowed": p.type == "number"}
        if isinstance(default, int | float) and not isinstance(default, bool):
            element["initial_value"] = _number(default)
        return element
    # text, and a select Slack cannot offer as a list
    text = "" if default is None else str(default)
    element = {"type": "plain_text_input", "action_id": ACTION, "max_length": MAX_TEXT_INPUT, "multiline": "\n" in text}
    if text and len(text) <= MAX_TEXT_INPUT:
        element["initial_value"] = text
    return element


def _number(value: int | float) -> str:
    """A number as a number input shows it: digits, never an exponent."""
    text = repr(value)
    return format(Decimal(text), "f") if "e" in text.lower() else text


# -------------------------------------------------------------------- its submission
@dataclass(frozen=True)
class Submission:
    """What a submitted form says, as text; none of it is trusted (``run_template`` checks it all)."""

    template: str
    commit: str
    target: str
    values: dict[str, str]
    why: str
    blocks: frozenset[str]

    def block_of(self, field: str) -> str:
        """The block a refusal of parameter ``field`` is shown under (the target's, if the form has none)."""
        block = PARAM_BLOCK + field
        return block if block in self.blocks else TARGET_BLOCK


def read(view: dict[str, Any]) -> Submission:
    """The submission of a template form (``view`` of a ``view_submission``); ``BadRequest`` when it names no template."""
    try:
        meta = json.loads(str(view.get("private_metadata") or ""))
    except ValueError:
        meta = None
    if not (isinstance(meta, dict) and isinstance(meta.get("template"), str) and isinstance(meta.get("commit"), str)):
        raise BadRequest("this form does not name a template: open it again from `/cellgate templates`")
    state = (view.get("state") or {}).get("values") or {}
    if not isinstance(state, dict):
        state = {}
    given = {str(block_id): _value(actions) for block_id, actions in state.items()}
    values = {block_id[len(PARAM_BLOCK):]: value for block_id, value in given.items()
              if block_id.startswith(PARAM_BLOCK) and value is not None}
    return Submission(template=meta["template"], commit=meta["commit"], target=given.get(TARGET_BLOCK) or "",
                      values=values, why=given.get(WHY_BLOCK) or "", blocks=frozenset(given))


def _value(actions: Any) -> str | None:
    """The text an input block's element holds (None: left empty), verbatim: nothing is stripped."""
    element = actions.get(ACTION) if isinstance(actions, dict) else None
    if not isinstance(element, dict):
        return None
    if "selected_option" in element:
        option = element.get("selected_option")
        value = option.get("value") if isinstance(option, dict) else None
    elif "selected_date" in element:
        value = element.get("selected_date")
    else:
        value = element.get("value")
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value)
