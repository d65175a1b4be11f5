"""Run a command under the agent unit's restrictions without systemd (systemd is not PID 1
on a CI box), as close to hardware/systemd/scribelink-agent.service as the kernel allows:

  unit setting                      here
  ProtectSystem=strict              every mount re-mounted read-only in a private mount namespace
  StateDirectory= (state, spool)    bind-mounted back read-write: the only writable places
  PrivateTmp=yes                    fresh tmpfs on /tmp and /var/tmp
  ProtectHome=yes                   empty read-only tmpfs on /root and /home (--expose puts back
                                    what this machine needs, e.g. a Python that lives in /root)
  PrivateDevices/DevicePolicy=closed  fresh /dev with null, zero, full, random, urandom, tty,
                                    plus --device nodes (ALSA, the puck tty) only
  ProtectKernelTunables=yes         /proc/sys and /sys read-only
  User=, SupplementaryGroups=       setpriv --reuid/--regid/--groups
  NoNewPrivileges=yes               setpriv --no-new-privs
  CapabilityBoundingSet=            setpriv --bounding-set=-all --inh-caps=-all
  MemoryMax=                        a memory cgroup made by the caller (--cgroup DIR)
  LimitCORE=0                       prlimit --core=0

  RestrictAddressFamilies=          seccomp filter: socket() other than AF_UNIX/INET/INET6
                                    -> EAFNOSUPPORT (x86-64 only, --seccomp)
  MemoryDenyWriteExecute=yes        seccomp filter: W+X mmap, mprotect/pkey_mprotect to X,
                                    shmat SHM_EXEC -> EPERM
  SystemCallFilter=~@privileged @resources   seccomp filter: the set-uid/gid, chown,
                                    clock, module, reboot, swap, mount, chroot, ptrace,
                                    scheduling and rlimit calls -> EPERM (a deny list that
                                    approximates systemd's allow list @system-service)

Not reproduced: the rest of @system-service's allow list, RestrictNamespaces=,
LockPersonality=, RestrictRealtime=, ProtectProc=.

Usage (as root): python unit_sandbox.py --writable DIR... [--expose PATH...] [--device DEV...]
    [--uid N --gid N --groups G,G] [--cgroup DIR] -- COMMAND...
"""

from __future__ import annotations

import argparse
import ctypes
import os
import stat
import sys
from pathlib import Path

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
ST_FLAGS = {os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC}
CLONE_NEWNS = 0x00020000
HIDDEN = ("/tmp", "/var/tmp", "/root", "/home")  # replaced by fresh tmpfs
# Mounts left alone: the kernel's API filesystems, and the machinery that runs this box.
UNTOUCHED = ("/proc", "/mnt")
DEVICES = {
    "null": (1, 3),
    "zero": (1, 5),
    "full": (1, 7),
    "random": (1, 8),
    "urandom": (1, 9),
    "tty": (5, 0),
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else s.encode()

    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} -> {target}: {os.strerror(err)}")


def _remount(target: str, *, read_only: bool) -> None:
    keep = 0
    f_flag = os.statvfs(target).f_flag
    for st_bit, ms_bit in ST_FLAGS.items():
        if f_flag & st_bit:
            keep |= ms_bit
    _mount(None, target, None, MS_REMOUNT | MS_BIND | keep | (MS_RDONLY if read_only else 0))


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            points.append(point)
    return points


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def _bind(fd: int, target: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        Path(target).touch()
    # /proc/self/fd/N reaches the original, even where a tmpfs now covers its path.
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)


def enter(writable: list[str], expose: list[str], devices: list[str]) -> None:
    """Build the unit's filesystem view in a new mount namespace (we are still root)."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Held open before anything covers them; opened in the new namespace because a bind
    # mount's source must belong to it.
    held = {}
    for path in [*writable, *expose, *devices]:
        held[path] = (os.open(path, os.O_PATH), os.path.isdir(path))

    # ProtectSystem=strict
    for point in sorted(set(_mount_points())):
        if not _under(point, UNTOUCHED):
            try:
                _remount(point, read_only=True)
            except OSError:
                pass  # a mount the kernel will not re-flag (checked by the caller's probe)
    _mount("/proc/sys", "/proc/sys", None, MS_BIND | MS_REC)
    _remount("/proc/sys", read_only=True)

    # PrivateTmp, ProtectHome
    for hidden in HIDDEN:
        if os.path.isdir(hidden):
            mode = "1777" if hidden.endswith("tmp") else "0755"
            _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode}")
    for path in expose:
        fd, is_dir = held[path]
        _bind(fd, path, is_dir)
        _remount(path, read_only=True)
    for path in writable:
        fd, is_dir = held[path]
        _bind(fd, path, is_dir)
        _remount(path, read_only=False)
    for hidden in ("/root", "/home"):
        if os.path.isdir(hidden):
            _remount(hidden, read_only=True)

    # DevicePolicy=closed: a fresh /dev with the basics and the allowed devices only
    _mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=0755")
    for name, (major, minor) in DEVICES.items():
        os.mknod(f"/dev/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(f"/dev/{name}", 0o666)
    os.makedirs("/dev/shm")
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"/dev/{name}")
    os.symlink("/proc/self/fd", "/dev/fd")
    for path in devices:
        fd, is_dir = held[path]
        _bind(fd, path, is_dir)
    for fd, _ in held.values():
        os.close(fd)


# --- seccomp (x86-64 numbers; the filter refuses other architectures) -------------------

AUDIT_ARCH_X86_64 = 0xC000003E
EPERM, EAFNOSUPPORT = 1, 97
SYS_SOCKET, SYS_MMAP, SYS_MPROTECT, SYS_PKEY_MPROTECT, SYS_SHMAT = 41, 9, 10, 329, 30
AF_ALLOWED = (1, 2, 10)  # AF_UNIX, AF_INET, AF_INET6
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0x8000
DENIED = {
    # @resources
    "ioprio_set": 251,
    "mbind": 237,
    "migrate_pages": 256,
    "move_pages": 279,
    "sched_setaffinity": 203,
    "sched_setattr": 314,
    "sched_setparam": 142,
    "sched_setscheduler": 144,
    "set_mempolicy": 238,
    "setpriority": 141,
    "setrlimit": 160,
    # @privileged (and @mount, @debug, which @system-service leaves out)
    "chown": 92,
    "fchown": 93,
    "lchown": 94,
    "fchownat": 260,
    "adjtimex": 159,
    "clock_adjtime": 305,
    "clock_settime": 227,
    "settimeofday": 164,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "ioperm": 173,
    "iopl": 172,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "reboot": 169,
    "swapon": 167,
    "swapoff": 168,
    "acct": 163,
    "bpf": 321,
    "capset": 126,
    "chroot": 161,
    "fanotify_init": 300,
    "open_by_handle_at": 304,
    "pivot_root": 155,
    "quotactl": 179,
    "setdomainname": 171,
    "sethostname": 170,
    "setfsuid": 122,
    "setfsgid": 123,
    "setuid": 105,
    "setgid": 106,
    "setreuid": 113,
    "setregid": 114,
    "setresuid": 117,
    "setresgid": 119,
    "setgroups": 116,
    "vhangup": 153,
    "mount": 165,
    "umount2": 166,
    "ptrace": 101,
    "process_vm_writev": 311,
}
_LD, _JEQ, _JGE, _AND, _RET = 0x20, 0x15, 0x35, 0x54, 0x06
_ALLOW, _KILL = 0x7FFF0000, 0x80000000


def _errno(n: int) -> int:
    return 0x00050000 | n


def _arg(i: int) -> int:  # offset of the low 32 bits of args[i] in struct seccomp_data
    return 16 + 8 * i


def seccomp_program() -> list[tuple[int, int, int, int]]:
    prog = [
        (_LD, 0, 0, 4),
        (_JEQ, 1, 0, AUDIT_ARCH_X86_64),
        (_RET, 0, 0, _KILL),
        (_LD, 0, 0, 0),
        (_JGE, 0, 1, 0x40000000),
        (_RET, 0, 0, _errno(EPERM)),
    ]  # no x32
    for nr in sorted(DENIED.values()):
        prog += [(_JEQ, 0, 1, nr), (_RET, 0, 0, _errno(EPERM))]
    prog += [  # RestrictAddressFamilies=
        (_LD, 0, 0, 0),
        (_JEQ, 0, 6, SYS_SOCKET),
        (_LD, 0, 0, _arg(0)),
        (_JEQ, 2, 0, AF_ALLOWED[0]),
        (_JEQ, 1, 0, AF_ALLOWED[1]),
        (_JEQ, 0, 1, AF_ALLOWED[2]),
        (_RET, 0, 0, _ALLOW),
        (_RET, 0, 0, _errno(EAFNOSUPPORT)),
    ]
    # MemoryDenyWriteExecute=: (syscall, argument, bits that must not all be set)
    for nr, arg, bits in (
        (SYS_MMAP, 2, PROT_WRITE | PROT_EXEC),
        (SYS_MPROTECT, 2, PROT_EXEC),
        (SYS_PKEY_MPROTECT, 2, PROT_EXEC),
        (SYS_SHMAT, 2, SHM_EXEC),
    ):
        prog += [
            (_LD, 0, 0, 0),
            (_JEQ, 0, 4, nr),
            (_LD, 0, 0, _arg(arg)),
            (_AND, 0, 0, bits),
            (_JEQ, 0, 1, bits),
            (_RET, 0, 0, _errno(EPERM)),
        ]
    return [*prog, (_RET, 0, 0, _ALLOW)]


def install_seccomp() -> None:
    """Load the filter into this process (no_new_privs must already be set); it is
    inherited across execve by the command."""
    import platform
    import struct

    if platform.machine() != "x86_64":
        raise OSError("the seccomp filter here is written for x86-64 only")
    prog = seccomp_program()
    raw = b"".join(struct.pack("<HBBI", *insn) for insn in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(buf))
    PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writable", action="append", default=[], help="StateDirectory= paths")
    p.add_argument(
        "--expose",
        action="append",
        default=[],
        help="read-only paths to keep visible under /tmp, /root or /home",
    )
    p.add_argument("--device", action="append", default=[], help="device nodes to allow")
    p.add_argument("--uid", type=int, default=65534)
    p.add_argument("--gid", type=int, default=65534)
    p.add_argument("--groups", default="", help="supplementary gids, comma separated")
    p.add_argument("--cgroup", help="a memory cgroup directory to join (MemoryMax=)")
    p.add_argument("--chdir", default="/")
    p.add_argument(
        "--seccomp",
        action="store_true",
        help="also apply the seccomp filter (x86-64): address families, W^X, "
        "privileged and resource syscalls",
    )
    p.add_argument("--exec-with-seccomp", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command")
    if args.exec_with_seccomp:  # the last stage, already unprivileged
        install_seccomp()
        os.execvp(command[0], command)
    if os.geteuid() != 0:
        print("unit_sandbox: needs root to build the mount namespace", file=sys.stderr)
        return 2
    if args.cgroup:
        Path(args.cgroup, "cgroup.procs").write_text(str(os.getpid()))
    enter(
        [os.path.abspath(w) for w in args.writable],
        [os.path.abspath(e) for e in args.expose],
        [os.path.abspath(d) for d in args.device],
    )
    os.chdir(args.chdir)
    groups = ["--groups", args.groups] if args.groups else ["--clear-groups"]
    # The filter goes on after setpriv and prlimit, which need the calls it refuses.
    seccomp_stage = (
        [sys.executable, os.path.abspath(__file__), "--exec-with-seccomp", "--"]
        if args.seccomp
        else []
    )
    os.execvp(
        "setpriv",
        [
            "setpriv",
            f"--reuid={args.uid}",
            f"--regid={args.gid}",
            *groups,
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
            "prlimit",
            "--core=0",
            "--",
            *seccomp_stage,
            *command,
        ],
    )
    return 127


if __name__ == "__main__":
    sys.exit(main())
