"""Ways for student code to hold memory (used by tests/test_sandbox_memory.py): each holds ``n`` GiB
and returns how many bytes it holds at the end."""

import ctypes, mmap, os, time
GiB = 2**30
CHUNK = b"\1" * (32 << 20)
def anon(n):
    x = bytearray(int(n * GiB)); return len(x)
def memfd(n):
    fd = os.memfd_create("x")
    for _ in range(int(n * GiB) // len(CHUNK)):
        os.write(fd, CHUNK)
    return os.fstat(fd).st_size
def sysv(n):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    step, held = 256 << 20, 0
    while held < n * GiB:
        sid = libc.shmget(0, ctypes.c_size_t(step), 0o1600)
        if sid < 0: raise OSError(ctypes.get_errno(), "shmget")
        addr = libc.shmat(sid, None, 0)
        if addr in (None, ctypes.c_void_p(-1).value): raise OSError(ctypes.get_errno(), "shmat")
        ctypes.memset(addr, 1, step)
        libc.shmdt(ctypes.c_void_p(addr))   # detached: the segment stays, in no process's memory
        held += step
    return held
def shared_map(n):
    maps, held = [], 0
    while held < n * GiB:
        m = mmap.mmap(-1, 256 << 20, flags=mmap.MAP_SHARED)
        for i in range(0, len(m), 4096): m[i] = 1
        maps.append(m); held += len(m)
    return held
def tmpfs(n):
    held = 0
    for mount in ("/tmp", "/submission"):
        try:
            with open(f"{mount}/fill", "wb") as f:
                while held < n * GiB:
                    f.write(CHUNK); f.flush(); held += len(CHUNK)
        except OSError:
            continue
    return held
def children(n, k=4):
    r, w = os.pipe()
    for _ in range(k):
        if os.fork() == 0:
            x = bytearray(int(n * GiB / k))
            for i in range(0, len(x), 4096): x[i] = 1
            os.write(w, b"1"); time.sleep(60); os._exit(0)
    os.close(w)
    time.sleep(4)
    alive = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                if open(f"/proc/{pid}/status").read().count("State:\tS"): alive += 1
            except OSError: pass
    return alive * n * GiB / k
