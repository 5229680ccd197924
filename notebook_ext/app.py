"""``CellgateExtension``: configure gateway mode and serve ``/cellgate/api/*``.

Linking (``_link_jupyter_server_extension``) happens in ``ServerApp.init_server_extensions``,
before ``ServerApp.init_configurables`` creates the ``GatewayClient`` singleton and picks the
kernel, kernel spec and session managers. So writing ``GatewayClient.*`` into the server's config
here switches the whole server to gateway mode, exactly as ``--gateway-url`` would:

- ``GatewayClient.url``: the cellgate gateway;
- ``GatewayClient.auth_token`` / ``auth_scheme = "token"``: the user's cellgate token;
- ``GatewayClient.allowed_envs`` + ``JPY_SESSION_NAME``: the session manager puts the notebook's
  path in ``JPY_SESSION_NAME`` when it starts a kernel, and ``GatewayKernelManager.start_kernel``
  sends only ``KERNEL_*`` variables and the allowed ones in ``POST /api/kernels``; the gateway
  records it as the kernel's (and its tasks') notebook path.

Where the URL and token come from, first found wins:

1. ``c.CellgateExtension.gateway_url`` / ``c.CellgateExtension.token`` (config file or
   ``--CellgateExtension.gateway_url=…`` on the command line),
2. the ``CELLGATE_URL`` / ``CELLGATE_TOKEN`` environment variables,
3. the file ``cellgate login`` writes (``$CELLGATE_CONFIG_DIR/credentials.json``, default
   ``~/.config/cellgate/credentials.json``); its token is used only for the gateway it was saved
   for, and the file is refused when others can read it.

Without a URL or a token the server stays in its normal (local kernels) mode and a warning says
how to configure cellgate. The token is never logged.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.gateway.gateway_client import GatewayClient
from traitlets import Bool, Unicode, default
from traitlets.config import Config

from cellgate.cli import credentials

from .handlers import default_handlers

SESSION_ENV = "JPY_SESSION_NAME"


class CellgateExtension(ExtensionApp):
    """Points this Jupyter server at the cellgate gateway and serves ``/cellgate/api/*``."""

    name = "cellgate"
    description = "cellgate: reviewed, audited access to production targets from notebooks."
    load_other_extensions = True

    gateway_url = Unicode(
        config=True,
        help="URL of the cellgate gateway, e.g. https://cellgate.example.com "
             "(default: env CELLGATE_URL, else the URL saved by `cellgate login`).",
    )
    token = Unicode(
        config=True,
        help="The user's cellgate API token (default: env CELLGATE_TOKEN, else the token saved "
             "by `cellgate login` for this gateway). Prefer the environment or the sign-in file "
             "to a config file.",
    )
    enable_gateway_mode = Bool(
        True, config=True,
        help="Configure GatewayClient so kernels run on cellgate targets. When False, only the "
             "/cellgate/api handlers are served.",
    )

    _file_problem: str | None = None

    def _saved_credentials(self) -> dict[str, str]:
        """``{"gateway_url", "token"}`` from the sign-in file, or ``{}`` (absent or unusable)."""
        try:
            saved = credentials.load_file(credentials.credentials_path())
            if saved.get("gateway_url"):
                saved["gateway_url"] = credentials.normalize_url(saved["gateway_url"])
            return saved
        except credentials.CredentialsError as exc:
            # not fatal: the server starts in normal mode and the warning says how to fix it
            self._file_problem = exc.message
            return {}

    @default("gateway_url")
    def _gateway_url_default(self) -> str:
        return os.environ.get(credentials.URL_ENV) or self._saved_credentials().get("gateway_url", "")

    @default("token")
    def _token_default(self) -> str:
        if os.environ.get(credentials.TOKEN_ENV):
            return os.environ[credentials.TOKEN_ENV]
        saved = self._saved_credentials()
        if saved.get("token") and saved.get("gateway_url") == self.normalized_url:
            return saved["token"]
        return ""

    @property
    def normalized_url(self) -> str:
        try:
            return credentials.normalize_url(self.gateway_url) if self.gateway_url else ""
        except credentials.CredentialsError:
            return ""

    def _link_jupyter_server_extension(self, serverapp: Any) -> None:
        # super() loads our config file and the server's config into our traits, so
        # c.CellgateExtension.* is known afterwards; GatewayClient is still not created
        # (ServerApp.init_configurables runs after every extension is linked).
        super()._link_jupyter_server_extension(serverapp)
        _ = self.token  # resolve it now, then keep it out of the environment: jupyter_server logs
        # the whole environment when it starts a kernel, and local kernels and terminals inherit it
        os.environ.pop(credentials.TOKEN_ENV, None)
        if self.enable_gateway_mode:
            self._configure_gateway_client(serverapp)

    def _problem(self) -> str | None:
        """Why gateway mode cannot be enabled, with the fix; None when it can."""
        how = ("set CELLGATE_URL and CELLGATE_TOKEN, set c.CellgateExtension.gateway_url/token, "
               "or sign in with `cellgate login`")
        extra = f" ({self._file_problem})" if self._file_problem else ""
        if not self.gateway_url:
            return f"no cellgate gateway URL: {how}{extra}"
        if not self.normalized_url:
            return f"the cellgate gateway URL {self.gateway_url!r} must start with http:// or https://"
        if not self.token:
            return f"no cellgate token for {self.normalized_url}: {how}{extra}"
        return None

    def _configure_gateway_client(self, serverapp: Any) -> None:
        problem = self._problem()
        if problem:
            self.log.warning("cellgate: %s. Jupyter runs in normal mode, with local kernels only "
                             "and no cellgate targets.", problem)
            return
        existing = serverapp.config.get("GatewayClient", {})
        if existing.get("url") and existing["url"].rstrip("/") != self.normalized_url:
            self.log.warning("cellgate: GatewayClient.url is set to %s; cellgate leaves it "
                             "(its gateway is %s)", existing["url"], self.normalized_url)
            return
        allowed = existing.get("allowed_envs") or os.environ.get(GatewayClient.allowed_envs_env, "")
        names = [n for n in allowed.split(",") if n.strip()]
        if SESSION_ENV not in names:
            names.append(SESSION_ENV)
        settings = {"url": self.normalized_url, "auth_token": self.token, "auth_scheme": "token",
                    "allowed_envs": ",".join(names)}
        serverapp.update_config(Config({
            "GatewayClient": settings,
            "ServerApp": {"kernel_websocket_connection_class":
                          "cellgate.notebook_ext.connection.CellgateWebSocketConnection"},
        }))
        if GatewayClient.initialized():  # someone created it early: configure it too
            for key, value in settings.items():
                setattr(GatewayClient.instance(), key, value)
        self.log.info("cellgate: kernels run through the cellgate gateway at %s", self.normalized_url)

    def initialize_handlers(self) -> None:
        self.handlers.extend(default_handlers)


main = launch_new_instance = CellgateExtension.launch_instance
