"""The sandbox's fixed numbers and names: uid blocks, paths inside the sandbox, limits of its own, and
the error that marks a failure of the sandbox itself (never the student's fault)."""

from __future__ import annotations

from course.grading.failures import SubmissionFailure


PRELOAD = ("torch", "numpy", "safetensors.torch", "transformers", "peft")


UID_BASE = 61000              # slot k of the first grading run on a machine runs as uid 61000 + k


UID_BLOCK = 256               # each concurrent run claims its own block of uids (its slots' uids)


UID_BLOCKS = 4096


UID_LOCKS = "/tmp/.course-sandbox-uids"


SANDBOX_SUBMISSION = "/submission"


SANDBOX_SCRATCH = "/scratch"


SANDBOX_PKG = "/opt/course-pkg"


SANDBOX_HOST_TMP = "/opt/course-host-tmp"   # where the host's /tmp/... shows (the worker's /tmp is its own)


# not --unshare-all: its user namespace maps only uid 0, and workers switch to a uid of their own
BWRAP_NAMESPACES = ("--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try")


READY_TIMEOUT = 180.0


SETUP_TIMEOUT = 60.0


MAX_COPY_BYTES = 512 * 2**20


MAX_COPY_FILES = 5000


TMPFS_INODES = 20000          # files a worker may create in /tmp, and in /submission


MEMORY_POLL = 0.1             # seconds between the fork server's looks at its workers' memory


MEMORY_EXACT_EVERY = 0.5      # at most this often per worker, the exact (costlier) count


class SandboxUnavailable(SubmissionFailure):
    """The sandbox itself failed (not the student's fault): the submission is re-graded later."""

    outcome = "error"


# Set by a worker-side failure of the infrastructure; the runner then retries the submission.
INFRASTRUCTURE_ERRORS: list[str] = []
