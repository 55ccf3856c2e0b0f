#!/usr/bin/env python3
"""Drives a restore_* test program through dump/restore cycles until the e2e
GoogleTest driver (tests/e2e on main) takes over:

  restore_cycle.py MINICRIU PROGRAM [--cycles N] [--detach] [--plain]

Starts PROGRAM READY DATA (stdio on /dev/null), waits for READY, then N times:
dump (the tree is killed), reap it (we are a child subreaper), restore. Then
sends SIGUSR1 and prints and returns the program's exit status (0 = all state
survived)."""
import argparse, ctypes, os, signal, subprocess, sys, tempfile, time

PR_SET_CHILD_SUBREAPER = 36


def wait_file(path, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path):
            return open(path).read().strip()
        time.sleep(0.01)
    sys.exit(f"timeout waiting for {path}")


def run(cmd):
    print("$", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    sys.stdout.write(r.stderr)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("minicriu")
    ap.add_argument("program")
    ap.add_argument("--cycles", type=int, default=1)
    ap.add_argument("--detach", action="store_true", help="restore -d (else wait in minicriu)")
    ap.add_argument("--plain", action="store_true", help="no checkpoint: proves the program")
    ap.add_argument("--leave-running", action="store_true", help="dump --leave-running only")
    a = ap.parse_args()
    a.program = os.path.abspath(a.program)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    work = tempfile.mkdtemp(prefix="restore_cycle.")
    ready, data = os.path.join(work, "ready"), os.path.join(work, "data")
    prog = subprocess.Popen([a.program, ready, data], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    pid = int(wait_file(ready))
    waiter = None
    for cycle in range(0 if a.plain else a.cycles):
        d = os.path.join(work, f"ckpt{cycle}")
        os.mkdir(d)
        cmd = [a.minicriu, "-v", "dump", "-t", str(pid), "-D", d]
        if a.leave_running:
            cmd.append("--leave-running")
        if run(cmd).returncode != 0:
            sys.exit("dump failed")
        if a.leave_running:
            break
        # The dumped tree was killed: reap it, or its pid stays taken.
        if waiter is not None:
            waiter.wait()
        else:
            os.waitpid(pid, 0)
        cmd = [a.minicriu, "-v", "restore", "-D", d] + (["-d"] if a.detach else [])
        print("$", " ".join(cmd), flush=True)
        t0 = time.time()
        waiter = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        if a.detach:
            out, err = waiter.communicate()
            sys.stdout.write(err)
            if waiter.returncode != 0:
                sys.exit(f"restore failed: {waiter.returncode}")
            print(f"restore -d printed {out.strip()} ({time.time() - t0:.3f} s)")
            waiter = None  # the restored process is now our child (subreaper)
        else:
            for line in waiter.stderr:
                sys.stdout.write(line)
                if "restored pid" in line:
                    break
            else:
                waiter.wait()
                sys.exit(f"restore failed: {waiter.returncode}")
    time.sleep(0.1)
    os.kill(pid, signal.SIGUSR1)
    if waiter is not None:
        rest = waiter.stderr.read()
        sys.stdout.write(rest)
        waiter.wait()
        status = waiter.returncode
        print(f"minicriu restore exited {status} (the restored program's status)")
    else:
        _, st = os.waitpid(pid, 0)
        status = os.waitstatus_to_exitcode(st)
        print(f"program {pid} exited {status}")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
