"""Launches isolated workers for student code: a pre-warmed fork server, limits, whole-tree kills.

One module per concern:

* :mod:`.pool` (trusted side): starts the fork server, its job slots, scratch copies, uid blocks;
* :mod:`.backend` (trusted side): what the judge's ``submission`` fixture calls;
* :mod:`.bwrap`: where the interpreter is, how it shows inside, the bubblewrap command line;
* :mod:`.forkserver`: the zygote's loop (spawn, kill, memory police);
* :mod:`.entry`: a forked worker entering its sandbox (mounts, rlimits, privileges, seccomp);
* :mod:`.procs`: process trees, their memory, and killing them;
* :mod:`.linux`: libc calls the os module lacks; :mod:`.constants`: names and numbers.

Shape of a grading run::

    trusted judge (pytest + plugin)  --control (SOCK_SEQPACKET, one per job slot)-->  zygote
          |                                                                             | fork
          +------------- data socket (wire frames), passed to the zygote by SCM_RIGHTS --> worker

The *zygote* is started once per run as ``python -I -S -B`` with an explicit ``sys.path`` (the
interpreter's standard library, site-packages, and a staged copy of the ``course`` package): it
imports torch, transformers and peft once, computes nothing, never touches CUDA, and never sees
grader code. Each worker forks from it (one fork, ~the cost of copying its page tables), then
enters its sandbox; pytest never runs there, and the submission joins ``sys.path`` only then.

Isolation is **strong** when running as root with bubblewrap:

* the zygote runs under ``bwrap`` with new IPC/PID/network/UTS/cgroup namespaces, ``--clearenv``,
  ``--new-session``, ``--die-with-parent``, and read-only binds of just the system libraries, the
  interpreter and its packages. graders/, solutions/, the gradebook, other submissions and the
  course repository are not inside. Deliberately *not* ``--unshare-all``: that adds a user
  namespace mapping only uid 0, after which no worker could drop to an unprivileged uid
  (``setresuid`` fails with EPERM); the worker's own uid, capability drop, ``no_new_privs`` and
  seccomp filter below do what the user namespace would.
* each worker is the init of a PID namespace of its own (the zygote unshares the PID namespace
  for its next child, forks, and steps back), unshares mount, network, IPC and UTS namespaces,
  mounts a private ``/proc`` and a ``/tmp`` tmpfs, and sees its submission at ``/submission`` as
  an overlay: the scratch copy read-only below, a tmpfs above. Both tmpfs are capped at the
  ``file_size`` limit and :data:`TMPFS_INODES` files, so a disk fill fills the worker's cap, never
  the machine's disk, and each new worker starts from the submission as collected. Every other
  scratch copy is hidden under an empty tmpfs. It then sets its rlimits, drops every capability,
  becomes its job slot's own unprivileged uid with ``no_new_privs``, and loads a seccomp filter
  refusing network sockets, namespaces, mounts, ptrace and other kernel interfaces.
* each grading run claims a block of uids of its own (:func:`_claim_uid_block`), so concurrent
  runs on one machine never share, count or kill each other's processes.
* a timeout kills the worker's PID namespace (every descendant, ``setsid()`` or not); before a
  slot's next worker starts, every process of the slot's uid is killed.
* the zygote adds up the private memory of each worker and its descendants (``RLIMIT_AS`` bounds
  one process, not a fork of many) and kills a worker over its ``memory`` limit.

Elsewhere (no root, no bubblewrap, macOS) isolation is **weak**: a separate process in its own
session with the rlimits the system allows and the same memory watch; on Linux the zygote is a
child subreaper that kills re-parented orphans (``setsid`` grandchildren). It warns, and results
record ``isolation: weak``; ``course grade --require-isolation`` refuses to run so.
"""

from course.grading.sandbox.backend import SandboxBackend, inject, injected_pool
from course.grading.sandbox.bwrap import _sandbox_env, _site_packages, _stdlib_paths, strong_isolation_available
from course.grading.sandbox.constants import (INFRASTRUCTURE_ERRORS, PRELOAD, SANDBOX_PKG, SANDBOX_SCRATCH,
                                              SANDBOX_SUBMISSION, UID_BASE, UID_BLOCK, UID_BLOCKS, SandboxUnavailable)
from course.grading.sandbox.entry import _set_rlimits
from course.grading.sandbox.forkserver import zygote_main
from course.grading.sandbox.pool import SlotClient, ZygotePool, _claim_uid_block, safe_copy
from course.grading.sandbox.procs import _descendants

__all__ = ["INFRASTRUCTURE_ERRORS", "PRELOAD", "SANDBOX_PKG", "SANDBOX_SCRATCH", "SANDBOX_SUBMISSION", "UID_BASE",
           "UID_BLOCK", "UID_BLOCKS", "SandboxBackend", "SandboxUnavailable", "SlotClient", "ZygotePool",
           "inject", "injected_pool", "safe_copy", "strong_isolation_available", "zygote_main",
           "_claim_uid_block", "_descendants", "_sandbox_env", "_set_rlimits", "_site_packages", "_stdlib_paths"]
