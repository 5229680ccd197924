"""The ``cellgate`` command: one ``cmd_*`` module per group of subcommands, ``main`` wires them.

``client`` talks to the gateway's REST API, ``credentials`` keeps the signed-in token, ``render``
prints tasks and outputs, ``exitcodes`` names what the command returns.
"""
