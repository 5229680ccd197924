"""Slack: review notices with Approve/Reject buttons, and the ``/cellgate`` command (docs/slack.md).

::

    config.py       c.Slack.* (bot token, signing secret, channels, retries)
    client.py       Web API calls with retries, off the event loop
    verify.py       signature, timestamp and replay checks of requests from Slack
    links.py        Slack user → cellgate user (admin link, or verified email)
    messages.py     what the notice, thread replies, DMs and the reject modal say
    notices.py      the notifier: posts, updates in place, threads, DMs (a TaskEvents listener)
    actions.py      button clicks, the reject modal and /cellgate, decided through TaskFlow.review
    integration.py  the pieces of one gateway process together
    handlers.py     /slack/interactions, /slack/commands, /api/v1/slack/links
"""
