"""Exit codes of the `cellgate` command, documented in docs/cli.md.

A script that fails remotely must fail locally, and each way of not running is distinct.
"""

OK = 0            # the task succeeded / the command did what was asked
FAILED = 1        # the task ran and failed (an error in the code, on the target)
USAGE = 2         # bad command line (argparse uses 2 as well)
REJECTED = 3      # a reviewer rejected the task
DENIED = 4        # policy denied the task; it was never reviewable
CANCELLED = 5     # cancelled by its author, or the approval expired
KILLED = 6        # killed while running, or lost with its agent
UNREACHABLE = 7   # the gateway could not be reached, or refused the token
ERROR = 8         # the gateway refused the request (HTTP 4xx), e.g. unknown target, not allowed
GAVE_UP = 9        # the task was submitted, but the gateway did not answer for --give-up-after seconds
