"""Kernel isolation of one sandboxed process: namespaces, a read-only root, rlimits, no
privileges. Only the standard library (ctypes for the syscalls Python 3.10 lacks), so the warm
server that forks programs stays small.

The layout a program sees: a fresh tmpfs as `/`, read-only and holding only the system
library folders (`/usr`, `/lib*`, `/bin`) and the Python standard library bound read-only at
their own paths, `/dev/{null,zero,random,urandom}`, its own `/proc`, and a fresh size-limited
tmpfs at `/tmp` (its working directory and the only writable place). The host's other folders
(the run folder, $HOME, the host's /tmp) do not exist there.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import sys
from dataclasses import dataclass

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACES = {"mount": CLONE_NEWNS, "uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC,
              "pid": CLONE_NEWPID, "net": CLONE_NEWNET}

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 24, 36, 38
_SYSCALLS = {"x86_64": {"pivot_root": 155, "capset": 126},
             "aarch64": {"pivot_root": 41, "capset": 91}}
NOBODY = 65534
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
DEVICES = ("null", "zero", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Limits:
    """What one program may use. `timeout_s` is wall time (the server kills at the deadline);
    the CPU rlimit is a backstop one second later."""

    timeout_s: float = 5.0
    memory_mb: int = 512
    file_mb: int = 16
    tmp_mb: int = 32
    nproc: int = 32
    nofile: int = 64
    output_chars: int = 4000


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    rc = _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(rc, f"mount {source} on {target}")


def _syscall(name: str, *args: object) -> int:
    number = _SYSCALLS.get(platform.machine(), {}).get(name)
    if number is None:
        raise OSError(38, f"{name}: no syscall number for {platform.machine()}")
    return _libc.syscall(number, *args)


def enter_namespaces(user: bool) -> None:
    """Called in the forked child before it forks the program: new mount, pid, net, ipc and uts
    namespaces; a new user namespace as well when not root (mapping the caller to root there).
    The program is the next fork, pid 1 of the new pid namespace."""
    uid, gid = os.geteuid(), os.getegid()
    flags = sum(NAMESPACES.values()) | (CLONE_NEWUSER if user else 0)
    unshare(flags)
    if user:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"0 {gid} 1")


def _bind_readonly(source: str, target: str) -> None:
    mount(source, target, None, MS_BIND | MS_REC)
    # A remount in a user namespace must keep the flags it may not clear (nosuid, atime...).
    have = os.statvfs(target).f_flag
    keep = MS_NOSUID | MS_NODEV
    for st_bit, ms_bit in ((2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME),
                           (2048, MS_NODIRATIME), (4096, MS_RELATIME)):
        keep |= ms_bit if have & st_bit else 0
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)


def stdlib_dirs() -> list[str]:
    """The standard library folders (the only import path a program gets)."""
    return [p for p in sys.path if p and os.path.isdir(p) and not p.endswith("site-packages")
            and os.path.realpath(p).startswith(os.path.realpath(sys.base_prefix))]


def build_root(mountpoint: str, tmp_mb: int) -> None:
    """Called in pid 1 of the new namespaces: assemble the read-only root on `mountpoint` and
    make it `/`; the host's root is detached and gone from this mount namespace."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", mountpoint, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    def inside(path: str) -> str:
        return mountpoint + path

    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            os.symlink(os.readlink(path), inside(path))
        elif os.path.isdir(path):
            os.makedirs(inside(path))
            _bind_readonly(path, inside(path))
    prefix = os.path.realpath(sys.base_prefix)
    if not any(prefix == d or prefix.startswith(d + "/") for d in SYSTEM_DIRS):
        os.makedirs(inside(prefix))
        _bind_readonly(prefix, inside(prefix))
    os.makedirs(inside("/dev"))
    for dev in DEVICES:
        open(inside(f"/dev/{dev}"), "w").close()
        mount(f"/dev/{dev}", inside(f"/dev/{dev}"), None, MS_BIND)
    os.makedirs(inside("/proc"))
    mount("proc", inside("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(inside("/tmp"))
    mount("tmpfs", inside("/tmp"), "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_mb}m,mode=1777")
    mount(None, mountpoint, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(mountpoint)
    _check(_syscall("pivot_root", b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/tmp")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_privileges(as_root: bool) -> None:
    """Root drops to `nobody` (which also makes RLIMIT_NPROC count); inside a user namespace
    the program stays uid 0 there but loses every capability, for good (bounding set,
    no_new_privs)."""
    if as_root:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    else:
        cap = 0
        while _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) == 0:
            cap += 1
        data = (_CapData * 2)()
        _check(_syscall("capset", ctypes.byref(_CapHeader(0x20080522, 0)), data), "capset")
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_rlimits(limits: Limits) -> None:
    """CPU (a second after the wall deadline), address space, file size, processes, files."""
    cpu = int(limits.timeout_s) + 1
    mb = 1 << 20
    for what, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)),
                        (resource.RLIMIT_AS, (limits.memory_mb * mb,) * 2),
                        (resource.RLIMIT_FSIZE, (limits.file_mb * mb,) * 2),
                        (resource.RLIMIT_NPROC, (limits.nproc,) * 2),
                        (resource.RLIMIT_NOFILE, (limits.nofile,) * 2),
                        (resource.RLIMIT_CORE, (0, 0))):
        resource.setrlimit(what, value)
