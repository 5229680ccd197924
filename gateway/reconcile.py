"""Reconcile an agent's journal with the gateway's executions when the agent says ``hello`` again.

The agent reports every task it has not seen the gateway store the end of (``hello.tasks``:
started, or ended with the reply's status). Each execution in flight on the agent's kernels is
then settled by what the journal knows, never by a guess:

- not in the journal: the request never reached the agent, so it did not run: ``failed``
  (``NotDelivered``);
- ended, nothing left to resend (or its kernel is not adopted, so what is resent is dropped): it
  gets that end (and "N outputs lost" for frames that will never come);
- ended, frames still to resend on an adopted kernel: the resent frames end it as on a live link;
- started on a kernel the agent still runs: it goes on;
- started on a kernel that died: ``failed`` (``KernelDied``); on a kernel the agent no longer has
  (it restarted): ``lost``, saying the code may have run and how far it was known to get.

Tasks an earlier gateway process left ``dispatched``/``running`` (``recovery.py``) are settled
here too: one on a kernel the agent kept is tracked again as an execution first, and then settled
as above (it goes on, or its resent frames end it, or it gets its journal's end); one ended on a
kernel not kept with frames to resend is followed until they are stored (a leftover kernel); one
the journal does not have ends ``failed`` (``NotDelivered``) if it was only dispatched, ``lost`` if it ran.
A report of a task the gateway holds no execution of (ended ``lost`` after the grace, or left by
the earlier process on a kernel not kept: a script's) ends a task still ``dispatched``/``running``
the same way, or is audited ``task.reconciled`` beside the end it already has. Settled tasks are acknowledged ``ended`` so the
agent forgets them.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from cellgate import protocol

from . import audit, tasks
from .agents import AgentConnection
from .kernels import Execution, LiveKernel
from .models import Task
from .relay import finish_tx

if TYPE_CHECKING:
    from .recovery import Orphan
    from .sessions import AgentSessions

log = logging.getLogger("cellgate.gateway.reconcile")


def tasks_of(sessions: AgentSessions, agent: AgentConnection, hello: protocol.Hello) -> None:
    """Settle the executions on ``agent``'s kernels by its journal (decided now; written in order)."""
    reports = {r.task_id: r for r in hello.tasks}
    dead = set(hello.dead_kernels)
    kept = agent.kernels - dead
    sessions.recovery.drop_leftovers(sessions.relay, agent.agent_id)
    orphans = sessions.recovery.of_agent(agent.agent_id)
    for orphan in orphans:
        report = reports.get(orphan.task_id)
        msg_id = orphan.msg_id or (report.msg_id if report is not None else None)
        kernel_id = report.kernel_id if report is not None else orphan.kernel_id
        agent_seq = report.last_seq - report.unacked if report is not None else 0
        live = sessions.kernels.get(kernel_id) if kernel_id in kept and msg_id else None
        if orphan.kind == "notebook" and report is not None and report.state == "ended":
            # the end of one of its cells, not of the notebook: the runner that sent the next one is gone
            del reports[orphan.task_id]
            sessions.background.spawn(_notebook_cut(sessions, agent, orphan, report))
        elif live is not None and msg_id:  # still on a kernel the agent kept: settled with the others below
            sessions.recovery.adopt(live, orphan, msg_id, agent_seq, sessions.relay,
                                    running=report is not None and report.state == "started")
        elif report is None:
            sessions.background.spawn(_unreported(sessions, agent, orphan))
        elif report.state == "ended" and report.unacked and msg_id and kernel_id not in dead:
            # ended on a kernel not kept (a script's): the frames resent end it, as on a live link
            sessions.recovery.follow_leftover(sessions.relay, orphan, report.kernel_id, msg_id, agent_seq)
            del reports[orphan.task_id]
    for kernel in sessions.kernels.on_agent(agent.agent_id):
        hosted = kernel.id in agent.kernels and kernel.id not in dead
        for ex in list(kernel.executions.values()):
            _settle(sessions, agent, kernel, ex, reports.pop(ex.task_id, None), hosted, kernel.id in dead)
    for report in reports.values():
        restarted = any(o.task_id == report.task_id for o in orphans)
        sessions.background.spawn(_unmatched(sessions, agent, report, kept, set(hello.kernels) - dead, restarted))


def _settle(sessions: AgentSessions, agent: AgentConnection, kernel: LiveKernel, ex: Execution,
            report: protocol.TaskReport | None, hosted: bool, dead: bool) -> None:
    relay = sessions.relay

    def acked(seq: int) -> None:
        relay.ack(agent.agent_id, ex.task_id, seq, True)
    if report is None:
        log.warning("task %s: agent %s never received it; it did not run", ex.task_id, agent.agent_id)
        relay.end_one(kernel, ex, tasks.FAILED, "NotDelivered",
                      f"the request did not reach agent {agent.agent_id} before its link dropped; it did not run: "
                      "run it again")
    elif report.state == "ended" and (report.unacked == 0 or not hosted):  # no frame of it is coming
        log.info("task %s: agent %s's journal says it ended %s", ex.task_id, agent.agent_id, report.status)
        relay.end_as_reported(kernel, ex, report.status or "error", report.ename, report.evalue, report.last_seq)
        relay.recorders[kernel.id].put(ex.task_id, _nothing, lambda: acked(report.last_seq))
    elif report.state == "ended" or hosted:
        return  # its frames are being resent, or it still runs
    elif dead:
        relay.end_one(kernel, ex, tasks.FAILED, "KernelDied", "the kernel died while this task ran",
                      lambda: acked(report.last_seq))
    else:
        why = (f"agent {agent.agent_id} came back without the kernel this task ran on (it restarted): its code may "
               f"have run ({ex.whereabouts()}); check the target before running it again")
        log.warning("task %s: %s", ex.task_id, why)
        relay.end_one(kernel, ex, tasks.LOST, "TaskLost", why, lambda: acked(report.last_seq))


def _nothing(session: Session) -> None:
    """Queued behind a task's writes so that its ``on_done`` runs once they are committed."""


async def _unreported(sessions: AgentSessions, agent: AgentConnection, orphan: Orphan) -> None:
    """A task the earlier gateway process left dispatched or running that the agent's journal does not have."""
    if orphan.status == tasks.DISPATCHED:
        log.warning("task %s: agent %s never received it; it did not run", orphan.task_id, agent.agent_id)
        await sessions.recovery.end(orphan, tasks.FAILED, "NotDelivered",
                                    f"the gateway restarted before the request reached agent {agent.agent_id} (its journal "
                                    "does not have it): it did not run: run it again")
    else:
        why = (f"the gateway restarted while this task ran and agent {agent.agent_id}'s journal does not have it (the "
               f"agent restarted without Agent.state_dir?): its code may have run ({orphan.whereabouts()}); check the "
               "target before running it again")
        log.warning("task %s: %s", orphan.task_id, why)
        await sessions.recovery.end(orphan, tasks.LOST, "TaskLost", why)


async def _notebook_cut(sessions: AgentSessions, agent: AgentConnection, orphan: Orphan,
                        report: protocol.TaskReport) -> None:
    """A notebook task whose runner went with the earlier gateway process, after one of its cells ended."""
    why = (f"the gateway restarted while this notebook ran: the cells sent to agent {agent.agent_id} ran (the last one "
           f"ended {report.status}), the later ones did not, and the executed notebook is not stored: its code may have "
           f"run in part ({orphan.whereabouts()}); check the target before running it again")
    log.warning("task %s: %s", orphan.task_id, why)
    await sessions.recovery.end(orphan, tasks.LOST, "TaskLost", why)
    sessions.relay.ack(agent.agent_id, orphan.task_id, report.last_seq, True)


async def _unmatched(sessions: AgentSessions, agent: AgentConnection, report: protocol.TaskReport,
                     running: set[str], hosted: set[str], restarted: bool) -> None:
    """A task the agent reports that no execution here waits for. ``running``: the kernels the agent
    kept; ``hosted``: those it still had (one not kept, e.g. a script's after a gateway restart, is
    stopped); ``restarted``: an earlier gateway process left the task running."""
    def _tx(session: Session) -> bool:
        task = session.get(Task, report.task_id)
        if task is None or task.agent_id != agent.agent_id:
            return True
        if report.state != "ended" and report.kernel_id in running:
            return False  # it still runs on a kernel the agent kept: nothing to say yet
        if task.status in (tasks.DISPATCHED, tasks.RUNNING):
            if report.state == "ended":
                ok = report.status == "ok"
                finish_tx(session, task.id, tasks.SUCCEEDED if ok else tasks.FAILED,
                          None if ok else report.ename or "Error", None if ok else report.evalue or "")
            else:
                started = dt.datetime.fromtimestamp(report.started_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                if report.kernel_id not in hosted:
                    why = f"agent {agent.agent_id} came back without the kernel this task ran on"
                elif restarted:
                    why = (f"the gateway restarted while this task ran and does not keep a script's kernel: agent "
                           f"{agent.agent_id} stops it")
                else:
                    why = f"the gateway no longer keeps the kernel this task ran on: agent {agent.agent_id} stops it"
                finish_tx(session, task.id, tasks.LOST, "TaskLost",
                          f"{why}: its code may have run (it reached the kernel at {started}); check the target "
                          "before running it again")
        elif report.state == "ended":
            audit.append(session, f"agent:{agent.agent_id}", "task.reconciled", task_id=task.id, target=task.target,
                         kernel_id=task.kernel_id,
                         detail={"status": task.status, "journal": {"status": report.status, "ename": report.ename,
                                                                    "evalue": report.evalue, "ended_at": report.ended_at}})
        return True
    if await sessions.store.run(_tx):
        sessions.relay.events.notify(report.task_id)
        sessions.relay.ack(agent.agent_id, report.task_id, report.last_seq, True)
