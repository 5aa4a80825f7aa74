"""Two kernel layers of :mod:`llmatic.sandbox.isolation`: dropped capabilities and seccomp.

With namespaces, the new user namespace grants every capability inside it; they are all
dropped before the candidate runs. The seccomp filter refuses the system calls a candidate
never needs (see :data:`_DENIED_X86_64`), new namespaces through ``clone``, sockets outside
the allowed families, and (for a single child) the shared memory ``RLIMIT_DATA`` does not
count. Both are inherited by everything the candidate starts.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (0x08000000, 0x10000000,
                                                           0x20000000, 0x40000000)
_NS_FLAGS = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC


def _check(ret: int, what: str) -> int:
    if ret < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return ret


# -- capabilities -------------------------------------------------------------------------
_SYS_CAPSET, _CAP_VERSION_3 = 126, 0x20080522
_PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4


def drop_capabilities() -> None:
    """Give up every capability (the new user namespace grants them all inside it).

    Bounding set, ambient set, then effective / permitted / inheritable: nothing the candidate
    starts can regain one (``no_new_privs`` is set by the other layers too).
    """
    for cap in range(64):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) < 0:
            if ctypes.get_errno() == errno.EINVAL:  # past the kernel's last capability
                break
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = ctypes.create_string_buffer(struct.pack("Ii", _CAP_VERSION_3, 0), 8)
    data = ctypes.create_string_buffer(bytes(24), 24)  # two (effective, permitted, inheritable)
    _check(_libc.syscall(_SYS_CAPSET, header, data), "capset")


# -- seccomp ------------------------------------------------------------------------------
_AUDIT_ARCH_X86_64 = 0xC000003E
#: x86_64 numbers of the calls a candidate never needs.
_DENIED_X86_64 = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "bpf": 321,
    "perf_event_open": 298, "keyctl": 250, "add_key": 248, "request_key": 249,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "kexec_load": 246,
    "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "unshare": 272, "setns": 308, "swapon": 167, "swapoff": 168, "reboot": 169,
    "userfaultfd": 323, "open_by_handle_at": 304, "name_to_handle_at": 303,
    "pidfd_open": 434, "pidfd_getfd": 438, "pidfd_send_signal": 424, "kcmp": 312,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "fanotify_init": 300, "acct": 163, "quotactl": 179, "quotactl_fd": 443,
    "mknod": 133, "mknodat": 259, "chmod": 90, "fchmod": 91, "fchmodat": 268,
    "fchmodat2": 452, "chown": 92, "fchown": 93, "lchown": 94, "fchownat": 260,
    "utime": 132, "utimes": 235, "utimensat": 280, "futimesat": 261, "setxattr": 188,
    "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198,
    "fremovexattr": 199, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "iopl": 172,
    "ioperm": 173, "syslog": 103, "settimeofday": 164, "clock_settime": 227,
    "adjtimex": 159, "sethostname": 170, "setdomainname": 171, "uselib": 134,
    "vhangup": 153, "lookup_dcookie": 212, "personality": 135,
}
#: Shared memory that RLIMIT_DATA does not count (refused to a single child; DDP ranks may
#: need it and are bounded by the memory cgroup where there is one).
_SHARED_MEMORY_X86_64 = {"memfd_create": 319, "memfd_secret": 447, "shmget": 29,
                         "mq_open": 240}
_SYS_MMAP, _MAP_SHARED, _MAP_ANONYMOUS = 9, 0x01, 0x20
_SYS_SOCKET, _SYS_CLONE, _SYS_CLONE3 = 41, 56, 435
_AF_UNIX, _AF_INET, _AF_INET6, _AF_NETLINK = 1, 2, 10, 16
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000


def seccomp_supported() -> bool:
    """Whether this machine's architecture has a filter here (x86_64)."""
    return platform.machine() in ("x86_64", "AMD64")


def _bpf(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def seccomp_program(*, sockets: tuple[int, ...] = (), shared_memory: bool = False) -> bytes:
    """The filter: refuse the calls above (EPERM) and sockets outside ``sockets``.

    ``shared_memory=False`` also refuses memfds, SysV / POSIX shared memory and shared
    anonymous mappings (ENOMEM for ``mmap``), which ``RLIMIT_DATA`` does not count.
    """
    ld, jeq, jset, jge, ret = 0x20, 0x15, 0x45, 0x35, 0x06
    deny = _RET_ERRNO | errno.EPERM
    prog = [_bpf(ld, 0, 0, 4), _bpf(jeq, 1, 0, _AUDIT_ARCH_X86_64), _bpf(ret, 0, 0, deny),
            _bpf(ld, 0, 0, 0), _bpf(jge, 0, 1, 0x40000000), _bpf(ret, 0, 0, deny)]  # x32
    denied = set(_DENIED_X86_64.values())
    if not shared_memory:
        denied |= set(_SHARED_MEMORY_X86_64.values())
    for nr in sorted(denied):
        prog += [_bpf(jeq, 0, 1, nr), _bpf(ret, 0, 0, deny)]
    if not shared_memory:  # mmap(flags): MAP_SHARED | MAP_ANONYMOUS refused
        prog += [_bpf(jeq, 0, 5, _SYS_MMAP), _bpf(ld, 0, 0, 40),
                 _bpf(jset, 0, 2, _MAP_ANONYMOUS), _bpf(jset, 0, 1, _MAP_SHARED),
                 _bpf(ret, 0, 0, _RET_ERRNO | errno.ENOMEM), _bpf(ret, 0, 0, _RET_ALLOW)]
    prog += [_bpf(jeq, 0, 1, _SYS_CLONE3), _bpf(ret, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    # clone(flags): no new namespaces (the candidate's are final)
    prog += [_bpf(jeq, 0, 4, _SYS_CLONE), _bpf(ld, 0, 0, 16),
             _bpf(jset, 0, 1, _NS_FLAGS | CLONE_NEWUTS | CLONE_NEWCGROUP),
             _bpf(ret, 0, 0, deny), _bpf(ret, 0, 0, _RET_ALLOW)]
    # socket(family, ...): only the families given
    n = len(sockets)
    prog += [_bpf(jeq, 0, n + 3, _SYS_SOCKET), _bpf(ld, 0, 0, 16)]
    for i, family in enumerate(sockets):
        prog.append(_bpf(jeq, n - i, 0, family))  # -> the ALLOW below
    prog += [_bpf(ret, 0, 0, _RET_ERRNO | errno.EACCES), _bpf(ret, 0, 0, _RET_ALLOW)]
    prog.append(_bpf(ret, 0, 0, _RET_ALLOW))
    return b"".join(prog)


def apply_seccomp(*, ddp: bool) -> None:
    """Install the filter on this process (inherited by everything it starts)."""
    sockets = (_AF_UNIX, _AF_INET, _AF_INET6, _AF_NETLINK) if ddp else ()
    program = seccomp_program(sockets=sockets, shared_memory=ddp)
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog, len(fprog))
    _check(_libc.prctl(38, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _check(_libc.prctl(22, 2, ctypes.addressof(fbuf), 0, 0), "prctl(PR_SET_SECCOMP)")
