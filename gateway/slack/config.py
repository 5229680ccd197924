"""``c.Slack.*``: the Slack app's secrets, where notices go, how hard to try.

Secrets are read in this order: the config value (``c.Slack.bot_token``), then the environment
(``CELLGATE_SLACK_BOT_TOKEN``, ``CELLGATE_SLACK_SIGNING_SECRET``), then a file
(``c.Slack.bot_token_file``), which is refused when others may read it. Secrets are never logged
and never shown by ``repr``.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from traitlets import Dict, Enum, Float, Integer, TraitError, Unicode, default, validate
from traitlets.config import Configurable

from ...secret_files import read_setting_file

SLACK_API_URL = "https://slack.com/api/"


class Slack(Configurable):
    """Review notices in Slack, the Approve/Reject buttons and the ``/cellgate`` command."""

    bot_token = Unicode(config=True, help=(
        "Bot User OAuth token (xoxb-…) of the Slack app. Without it, no notices are sent. "
        "Default: env CELLGATE_SLACK_BOT_TOKEN, then Slack.bot_token_file."))
    bot_token_file = Unicode("", config=True, help="File holding the bot token (mode 0600), read when neither config nor env sets it.")
    signing_secret = Unicode(config=True, help=(
        "Signing secret of the Slack app: every request from Slack is checked against it. Without it, "
        "every request to /slack/* is refused (401). Default: env CELLGATE_SLACK_SIGNING_SECRET, then Slack.signing_secret_file."))
    signing_secret_file = Unicode("", config=True, help="File holding the signing secret (mode 0600).")
    api_url = Unicode(SLACK_API_URL, config=True, help="Base URL of the Slack Web API (tests point it at a stand-in).")
    default_channel = Unicode("", config=True, help="Channel ID for review notices of targets not in Slack.channels; empty: none.")
    channels = Dict(key_trait=Unicode(), value_trait=Unicode(), config=True,
                    help='Channel ID per target for review notices, e.g. {"payments": "C0123456"}.')
    retries = Integer(3, config=True, help="Attempts per Slack call before the failure is logged and dropped.")
    retry_delay = Float(1.0, config=True, help="Seconds before the second attempt; doubled for each further one.")
    timeout = Float(10.0, config=True, help="Seconds to wait for one Slack API answer.")
    post_output = Enum(["excerpt", "none"], "excerpt", config=True, help=(
        "What of a finished task's output is posted in the notice's thread: 'excerpt' (the first ~1,800 "
        "characters, already masked by the agent) or 'none' (only counts)."))

    @default("bot_token")
    def _bot_token_default(self) -> str:
        return self._secret("CELLGATE_SLACK_BOT_TOKEN", self.bot_token_file, "Slack.bot_token_file")

    @default("signing_secret")
    def _signing_secret_default(self) -> str:
        return self._secret("CELLGATE_SLACK_SIGNING_SECRET", self.signing_secret_file, "Slack.signing_secret_file")

    @staticmethod
    def _secret(env: str, path: str, option: str) -> str:
        value = os.environ.get(env, "").strip()
        if value or not path:
            return value
        return read_setting_file(path, option, TraitError)

    @validate("api_url")
    def _valid_api_url(self, proposal: Any) -> str:
        url: str = proposal["value"]
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise TraitError(f"Slack.api_url must be an http(s) URL such as {SLACK_API_URL}, not {url!r}")
        return url if url.endswith("/") else url + "/"

    @validate("retries")
    def _valid_retries(self, proposal: Any) -> int:
        if not 1 <= proposal["value"] <= 10:
            raise TraitError(f"Slack.retries must be 1-10 attempts, not {proposal['value']}")
        retries: int = proposal["value"]
        return retries

    def channel_for(self, target: str) -> str:
        """Where the review notices of ``target`` go ('' for nowhere)."""
        return self.channels.get(target) or self.default_channel

    def __repr__(self) -> str:  # never the secrets
        return (f"Slack(api_url={self.api_url!r}, bot_token={'set' if self.bot_token else 'unset'}, "
                f"signing_secret={'set' if self.signing_secret else 'unset'})")
