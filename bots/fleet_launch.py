"""Exec a fleet child so that it is told when its supervisor dies.

    python bots/fleet_launch.py SUPERVISOR_PID COMMAND [ARG...]

On Linux it asks the kernel for SIGTERM on the parent's death
(``PR_SET_PDEATHSIG``, which survives ``exec``), then execs ``COMMAND`` in its
place (same pid). A supervisor that is SIGKILLed or crashes therefore leaves no
orphan bots behind: each one drains and exits as on a scale-down, and the
restarted supervisor (systemd restarts it) reclaims the names. Elsewhere the
children outlive a killed supervisor and finish on their own when stopped.

Run as a script path, not ``-m``: it must import nothing of corral, so it
costs a few milliseconds before the bot's own start.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
EXIT_ORPHANED = 75  #: the supervisor died before the child could exec (EX_TEMPFAIL)


def main(argv: list[str]) -> None:
    supervisor, command = int(argv[0]), argv[1:]
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:
        sys.exit(EXIT_ORPHANED)  # it died before prctl took effect: nobody would stop us
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
