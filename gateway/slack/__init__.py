"""Slack: review notices with Approve/Reject buttons, the ``/cellgate`` command, code in a direct message (docs/slack.md).

::

    config.py       c.Slack.* (bot token, signing secret, channels, retries)
    client.py       Web API calls with retries, off the event loop
    verify.py       signature, timestamp and replay checks of requests from Slack
    links.py        Slack user → cellgate user (admin link, or verified email)
    callers.py      who is asking: the Slack user of a request, their identity, how a refusal reads
    messages.py     what the notice, thread replies, DMs and the reject modal say
    notices.py      the notifier: posts, updates in place, threads, DMs (a TaskEvents listener)
    actions.py      button clicks, the reject modal and /cellgate, decided through TaskFlow.review
    template_form.py   a template's Run… button, its modal built from its declarations, its submission read
    template_runs.py   the Run… click and the form's submission, run through templates.runs.run_template
    dm_text.py      what a direct message says: a command, or code as typed (Slack's markup undone, or refused)
    dm.py           the direct-message conversation: targets, target NAME, code run as a task, threaded
    integration.py  the pieces of one gateway process together
    handlers.py     /slack/interactions, /slack/commands, /slack/events, /api/v1/slack/links
"""
