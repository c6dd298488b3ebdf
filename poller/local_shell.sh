#!/bin/sh
# The shell radical.saga starts for local job services (fork://, slurm://localhost):
# /bin/sh in a session of its own, without a controlling terminal.
#
# radical.saga runs its wrapper and job monitors under /bin/sh, and each monitor
# turns on job control (set -m) while it starts its job. On Debian /bin/sh is dash,
# which then takes the terminal's foreground for a moment, or stops its whole
# process group with SIGTTIN when it finds another group there. Monitors started
# back to back (a bulk submission) hit that: the wrapper stopped ("PROMPT-149->
# You have stopped jobs") and the job service hung for ever, about once in
# 1,000-3,000 jobs here. Without a controlling terminal dash leaves job control
# off, so nothing can take the terminal; the poller ends a cancelled local job
# itself (poller.rundir.LocalRunDirs.end_launcher), since the job is then no
# process group of its own for radical.saga's `kill -- -PID`.
exec setsid -w /bin/sh "$@"
