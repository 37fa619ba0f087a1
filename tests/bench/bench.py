#!/usr/bin/env python3
"""bench.py: incmig against QEMU's mirror and nbdcopy, same disk, same
workload, same run.  Started by run.sh (which builds countproxy and mkimg);
see README.md for what is measured and how.

For each scenario (image size, random or 25%-allocated sparse, guest write
rate) it runs every tool in turn on a fresh copy of the same image, with
the same guest (`xl-incmig guest`, same seed, default 80:10 hot spot), and
every migration link goes through the same byte-counting proxy:

  incmig          serve -> guest; migrate-receive --listen; migrate -s ""
                  --bandwidth CAP (link: migrate -> countproxy -> receiver)
  incmig-nocap    the same without --bandwidth: PUSH yields to the guest
  incmig-max      the same with --bandwidth max (no cap, no yielding)
  qemu-mirror-bg  qemu-storage-daemon exports the source to the guest;
                  blockdev-mirror sync=full copy-mode=background speed=CAP
                  to an NBD blockdev (-> countproxy -> destination
                  qemu-storage-daemon's writable NBD export); at READY the
                  guest is paused (SIGSTOP), block-job-cancel (libvirt's
                  way: a READY mirror completes with the target in sync),
                  the source export is removed (mode=hard), the guest is
                  resumed and reconnects to the destination export
  qemu-mirror-wb  the same with copy-mode=write-blocking
  qemu-mirror-wb-direct  the same with cache.direct=on at both ends (the
                  like-for-like setting for incmig's O_DIRECT export)
  nbdcopy         source file -> destination export (no cap, no guest)
  nbdcopy-cap     the same through the proxy capped at CAP (no guest)
  qemu-img-cap    qemu-img convert -n -r CAP to the destination export
  guest-alone     no migration: serve and the guest only, for as long as
                  the scenario's last incmig-nocap run (its write gaps and
                  rate over a window of the migration's length)
  incmig*-ssh     (--ssh) the same over migrate's default transport: ssh
                  to 127.0.0.1 through a private sshd (throwaway keys in
                  the scratch dir), which starts the receiver; no proxy,
                  the bytes are the report's

--dst-dir DIR puts every destination image on another device, as a second
host's disk would be (the default is beside the source's, on one disk).

Each scenario runs --repeats times (default 3), the tools interleaved
(every tool once, then every tool again...), so that a change of load
hits all of them alike; the summary gives the median and the range.
One JSON object per (scenario, tool, repeat) goes to OUT/results.json.
"""
import statistics
import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

MiB = 1 << 20
GiB = 1 << 30
HERE = os.path.dirname(os.path.abspath(__file__))


def now():
    return time.monotonic()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_for(cond, timeout, step=0.05):
    end = now() + timeout
    while now() < end:
        try:
            if cond():
                return True
        except (OSError, ValueError):
            pass
        time.sleep(step)
    return False


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Procs:
    """Processes started by one run; stopped by pid at the end."""

    def __init__(self, d):
        self.d, self.list = d, []

    def start(self, name, argv, stdout=None):
        log = open(os.path.join(self.d, name + ".log"), "w")
        p = subprocess.Popen(argv, stdout=stdout or log, stderr=log,
                             stdin=subprocess.DEVNULL)
        self.list.append((name, p))
        return p

    def stop_all(self):
        for _, p in self.list:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.terminate()
                except OSError:
                    pass
        for _, p in self.list:
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def peak_rss(P, rss):
    """Each incmig process's peak resident set (VmHWM, KiB) into rss."""
    for name, p in P.list:
        if name not in ("serve", "receive", "migrate"):
            continue
        try:
            for line in open("/proc/%d/status" % p.pid):
                if line.startswith("VmHWM:"):
                    rss[name] = max(rss.get(name, 0), int(line.split()[1]))
        except (OSError, ValueError):
            pass


class QMP:
    def __init__(self, path, timeout=10):
        wait_for(lambda: os.path.exists(path), timeout)
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.buf = b""
        self.events = []
        self._line()  # greeting
        self.cmd("qmp_capabilities")

    def _line(self, timeout=None):
        """One JSON message; socket.timeout if none within timeout."""
        end = None if timeout is None else now() + timeout
        while b"\n" not in self.buf:
            if end is not None:
                left = end - now()
                if left <= 0:
                    raise socket.timeout()
                self.s.settimeout(left)
            chunk = self.s.recv(65536)
            if not chunk:
                raise OSError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        self.s.settimeout(None)
        self.s.sendall(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        while True:
            try:
                m = self._line(120)
            except socket.timeout:
                raise RuntimeError("QMP %s: no answer within 120 s" % name)
            if "event" in m:
                self.events.append(m)
            elif "error" in m:
                raise RuntimeError("%s: %s" % (name, m["error"].get("desc")))
            elif "return" in m:
                return m["return"]

    def wait_event(self, names, timeout):
        """First queued or arriving event in names, or None at timeout."""
        end = now() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["event"] in names:
                    return self.events.pop(i)
            left = end - now()
            if left <= 0:
                return None
            try:
                self.events.append(self._line(left))
            except socket.timeout:
                return None


class Sampler:
    """The guest's --stats-json is rewritten every second; sampled here so
    that its write counter can be read at any moment of the run."""

    def __init__(self, path):
        self.path, self.samples = path, []  # (monotonic, seconds, write_bytes)
        self.stall_ms = None  # longest_stall_ms of the last sample

    def poll(self):
        j = read_json(self.path)
        if j and (not self.samples or j["seconds"] != self.samples[-1][1]):
            self.samples.append((now(), j["seconds"], j["write_bytes"]))
            self.stall_ms = j.get("longest_stall_ms")
        return j

    def sleep(self, secs):
        end = now() + secs
        while now() < end:
            self.poll()
            time.sleep(min(0.1, max(0, end - now())))

    def writes_at(self, t):
        """write_bytes at monotonic time t, by linear interpolation; the
        file's own `seconds` dates each sample (read lag removed)."""
        s = self.samples
        if len(s) < 2:
            return None
        off = min(m - sec for m, sec, _ in s)  # guest start, monotonic
        pts = [(off + sec, w) for _, sec, w in s]
        if t <= pts[0][0]:
            return pts[0][1]
        for (t0, w0), (t1, w1) in zip(pts, pts[1:]):
            if t <= t1:
                return w0 + (w1 - w0) * (t - t0) / (t1 - t0)
        return None  # after the last sample

    def rate(self, a, b):
        wa, wb = self.writes_at(a), self.writes_at(b)
        if wa is None or wb is None or b - a < 0.5:
            return None
        return (wb - wa) / (b - a)


class Bench:
    def __init__(self, a):
        self.a = a
        self.x = a.xl_incmig
        self.cap = a.cap
        self.results = []
        self.alone_s = {}  # scenario: seconds of its last incmig-nocap run

    # ---- pieces shared by the migration runs ---------------------------

    def proxy(self, P, d, target_port, rate=0):
        port = free_port()
        stats = os.path.join(d, "proxy.stats")
        argv = [self.a.countproxy, str(port), "127.0.0.1:%d" % target_port, stats]
        if rate:
            argv.append(str(rate))
        p = P.start("proxy", argv, stdout=subprocess.PIPE)
        if p.stdout.readline().strip() != b"ready":
            raise RuntimeError("countproxy did not start")
        return port, stats

    @staticmethod
    def proxy_bytes(stats):
        time.sleep(0.25)
        try:
            up, down, _ = open(stats).read().split()
            return int(up) + int(down)
        except (OSError, ValueError):
            return None

    @staticmethod
    def serve(P, d, img, x, v):
        """x serve: img exported on d/src.sock, controlled on d/src.ctl."""
        P.start("serve", [x] + v + ["serve", "--nbd", "unix:" + d + "/src.sock",
                                    "--control", d + "/src.ctl", img])
        if not wait_for(lambda: os.path.exists(d + "/src.ctl"), 20):
            raise RuntimeError("serve did not start")

    def guest(self, P, d, uris, rate):
        gj = os.path.join(d, "guest.json")
        argv = [self.x, "guest", "--nbd", ",".join(uris), "--seconds", "0",
                "--rate", str(rate), "--seed", "1",
                "--queue-depth", str(self.qd), "--stats-json", gj]
        if rate == 0:
            argv += ["--read-rate", "4M"]
        if self.a.span:
            argv += ["--span", self.a.span]
        p = P.start("guest", argv)
        s = Sampler(gj)
        # The counter must move (writes) or at least the file appear.
        ok = wait_for(lambda: (s.poll() or {}).get("write_bytes", 0) > 0
                      if rate else s.poll() is not None, 30)
        if not ok:
            raise RuntimeError("guest did not start (see guest.log)")
        # 1 s warm-up, then the no-migration reference window
        s.sleep(1.0 + self.a.baseline)
        self.stall_before = s.stall_ms  # before the migration starts
        return p, s

    def finish_guest(self, gp, s, d, r, t0, t_switch, t_end):
        s.sleep(1.6)  # one more stats rewrite on the destination
        if gp.poll() is None:
            gp.send_signal(signal.SIGCONT)
            gp.terminate()
            try:
                gp.wait(20)
            except subprocess.TimeoutExpired:
                gp.kill()
        g = read_json(os.path.join(d, "guest.json")) or {}
        r["guest_stall_ms"] = g.get("longest_stall_ms")
        r["guest_stall_before_ms"] = self.stall_before
        # First request completed on the destination minus the last one
        # on the source, as the guest's own clock sees it.
        r["guest_switch_ms"] = g.get("longest_switch_ms")
        # The guest-visible switchover: "reconnected to URI after N ms"
        # (from its last completed request on the source).
        gaps = []
        try:
            for line in open(os.path.join(d, "guest.log")):
                if line.startswith("guest: reconnected to "):
                    gaps.append(float(line.rsplit(" after ", 1)[1].split()[0]))
        except (OSError, ValueError, IndexError):
            pass
        r["guest_reconnect_ms"] = max(gaps) if gaps else None
        r["guest_mismatches"] = g.get("mismatches")
        r["guest_exit"] = gp.returncode
        if self.rate:
            base = s.rate(t0 - self.a.baseline + 0.3, t0)
            during = s.rate(t0, t_end)
            r["guest_base_MBps"] = base and round(base / 1e6, 2)
            r["guest_during_MBps"] = during and round(during / 1e6, 2)
            r["guest_write_ratio"] = (round(during / base, 3)
                                      if base and during is not None else None)
            w0, w1 = s.writes_at(t0), s.writes_at(t_switch)
            r["rewritten_bytes"] = (int(w1 - w0) if w0 is not None and
                                    w1 is not None else None)
        else:
            r["guest_write_ratio"] = None
            r["rewritten_bytes"] = 0

    # ---- the tools -------------------------------------------------------

    def start_sshd(self):
        """A private sshd on a loopback port, throwaway keys (--ssh):
        migrate's default transport as an administrator runs it."""
        k = os.path.join(self.a.work, "ssh")
        os.makedirs(k)
        for f in ("hostkey", "id"):
            subprocess.check_call(["ssh-keygen", "-q", "-t", "ed25519", "-N", "",
                                   "-f", os.path.join(k, f)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        shutil.copy(os.path.join(k, "id.pub"), os.path.join(k, "authorized_keys"))
        port = free_port()
        with open(os.path.join(k, "sshd_config"), "w") as f:
            f.write("\n".join([
                "ListenAddress 127.0.0.1", "Port %d" % port,
                "HostKey %s/hostkey" % k, "AuthorizedKeysFile %s/authorized_keys" % k,
                "PidFile %s/sshd.pid" % k, "UsePAM no", "StrictModes no",
                "PermitRootLogin prohibit-password", "PasswordAuthentication no",
                "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
                "AllowTcpForwarding no", "X11Forwarding no", "PrintMotd no",
                "UseDNS no"]) + "\n")
        os.makedirs("/run/sshd", exist_ok=True)
        self.sshd = Procs(k)
        self.sshd.start("sshd", ["/usr/sbin/sshd", "-D", "-f", k + "/sshd_config",
                                 "-E", k + "/sshd.log"])
        self.ssh_cmd = ("ssh -i %s/id -p %d -o StrictHostKeyChecking=no "
                        "-o UserKnownHostsFile=/dev/null -o BatchMode=yes "
                        "-o LogLevel=ERROR" % (k, port))
        if not wait_for(lambda: subprocess.call(
                self.ssh_cmd.split() + ["127.0.0.1", "true"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0, 15):
            raise RuntimeError("cannot log in to the bench's sshd: see %s/sshd.log" % k)

    def run_incmig(self, d, img, r, cap, x, ssh=False):
        P = Procs(d)
        try:
            src_sock, dst_sock = d + "/src.sock", d + "/dst.sock"
            v = ["-v"] if self.a.debug else []
            self.serve(P, d, img, x, v)
            if not ssh:
                rport = free_port()
                P.start("receive", [x] + v + [
                    "migrate-receive", "--listen", "127.0.0.1:%d" % rport,
                    "--image", self.dst_img(d), "--nbd", "unix:" + dst_sock,
                    "--exit-when-done"])
                if not wait_for(lambda: "waiting for the source" in
                                open(d + "/receive.log").read(), 20):
                    raise RuntimeError("receiver did not start")
                pport, stats = self.proxy(P, d, rport)
            gp, s = self.guest(P, d, ["nbd+unix:///?socket=" + src_sock,
                                      "nbd+unix:///?socket=" + dst_sock], self.rate)
            argv = [x] + v + ["migrate", "--no-progress", "--json", d + "/report.json"]
            if cap == "max":
                argv += ["--bandwidth", "max"]
            elif cap:
                argv += ["--bandwidth", str(cap)]
            if ssh:   # the receiver's log comes back in migrate.log
                argv += ["-s", self.ssh_cmd, "--receiver", x + " migrate-receive",
                         "--dest-image", self.dst_img(d), "--dest-nbd",
                         "unix:" + dst_sock, "sim:" + d + "/src.ctl", "127.0.0.1"]
            else:
                argv += ["-s", "", "sim:" + d + "/src.ctl", "127.0.0.1:%d" % pport]
            t0 = now()
            mp = P.start("migrate", argv)
            end = t0 + self.limit
            rss = {}
            while mp.poll() is None and now() < end:
                peak_rss(P, rss)
                s.sleep(0.1)
            t_end = now()
            peak_rss(P, rss)
            if mp.poll() is None:
                mp.terminate()
                mp.wait()
                r["error"] = "time limit"
            elif mp.returncode != 0:
                r["error"] = "migrate exit %d" % mp.returncode
            rep = read_json(d + "/report.json") or {}
            r["finished"] = mp.returncode == 0 and "error" not in r
            r["total_s"] = rep.get("total_s", round(t_end - t0, 3))
            r["downtime_ms"] = rep.get("downtime_ms")
            r["dst_max_wait_ms"] = rep.get("dst_max_wait_ms")
            r["push_yield_backoffs"] = rep.get("push_yield_backoffs")
            r["report_wire_bytes"] = rep.get("wire_bytes")
            r["push_rate_MBps"] = rep.get("push_rate_bps") and round(rep["push_rate_bps"] / 1e6, 1)
            if rep.get("total_s"):
                r["copy_MBps"] = round(r["allocated_bytes"] / rep["total_s"] / 1e6, 1)
            disk = (rep.get("disks") or [{}])[0]
            r["rounds"] = disk.get("rounds")
            r["stopcopy_bytes"] = (rep.get("wire") or {}).get("stopcopy")
            for k, v in rss.items():
                r["rss_%s_MiB" % k] = round(v / 1024.0, 1)
            r["pull_blocks"] = disk.get("final_dirty_blocks")
            if cap == 0 and x == self.x and r["finished"]:
                self.alone_s[r["scenario"]] = t_end - t0
            t_switch = t0 + (rep.get("push_s", t_end - t0) +
                             (rep.get("downtime_ms") or 0) / 1000.0)
            self.finish_guest(gp, s, d, r, t0, t_switch, t_end)
            r["wire_bytes"] = (r["report_wire_bytes"] if ssh else
                               self.proxy_bytes(stats))
        finally:
            P.stop_all()
            if ssh:   # a receiver left by a failed run (it is not ours)
                subprocess.call(["pkill", "-f", "--", "--image " + self.dst_img(d)])

    def dst_img(self, d):
        """The destination's image: beside the source's, or with --dst-dir
        on another device, as a second host's disk would be."""
        if not self.a.dst_dir:
            return d + "/dst.img"
        return os.path.join(self.a.dst_dir, os.path.basename(d) + ".dst.img")

    def rm_dst(self, d):
        """The image in --dst-dir and the lineage files beside it."""
        if self.a.dst_dir:
            for p in glob.glob(glob.escape(self.dst_img(d)) + "*"):
                os.unlink(p)

    def run_alone(self, d, img, r):
        """No migration: the guest on the source alone for as long as this
        scenario's last uncapped incmig run took (20 s before there is
        one). Its longest write gap over a window of the migration's
        length is the like-for-like reference: the 3 s window before a
        migration understates the gaps of a 20-30 s run (a 64 ms stall
        28 s into a 60 s run alone, 2026-12-03)."""
        P = Procs(d)
        try:
            src_sock = d + "/src.sock"
            self.serve(P, d, img, self.x, [])
            gp, s = self.guest(P, d, ["nbd+unix:///?socket=" + src_sock], self.rate)
            t0 = now()
            s.sleep(self.alone_s.get(r["scenario"], 20.0))
            t_end = now()
            r["finished"] = True
            r["total_s"] = round(t_end - t0, 3)
            self.finish_guest(gp, s, d, r, t0, t_end, t_end)
            r["guest_switch_ms"] = None  # it never switched
        finally:
            P.stop_all()

    def qsd_dest(self, P, d, size, direct=False):
        dst = self.dst_img(d)
        with open(dst, "wb") as f:
            f.truncate(size)
        port = free_port()
        P.start("qsd-dst", ["qemu-storage-daemon",
                            "--blockdev", "driver=file,node-name=f1,filename=" + dst +
                            (",cache.direct=on,aio=native" if direct else ""),
                            "--blockdev", "driver=raw,node-name=dst,file=f1",
                            "--nbd-server", "addr.type=inet,addr.host=127.0.0.1,addr.port=%d" % port,
                            "--export", "type=nbd,id=exp1,node-name=dst,name=dst,writable=on"])
        if not wait_for(lambda: socket.create_connection(("127.0.0.1", port)).close() or True, 20):
            raise RuntimeError("destination qemu-storage-daemon did not start")
        return port

    def run_mirror(self, d, img, r, mode, direct=False):
        P = Procs(d)
        try:
            size = os.path.getsize(img)
            dport = self.qsd_dest(P, d, size, direct)
            src_sock, qmp_sock = d + "/src.sock", d + "/qmp.sock"
            P.start("qsd-src", ["qemu-storage-daemon",
                                "--blockdev", "driver=file,node-name=f0,filename=" + img +
                                (",cache.direct=on,aio=native" if direct else ""),
                                "--blockdev", "driver=raw,node-name=src,file=f0",
                                "--nbd-server", "addr.type=unix,addr.path=" + src_sock,
                                "--export", "type=nbd,id=exp0,node-name=src,name=src,writable=on",
                                "--chardev", "socket,id=qmp0,path=%s,server=on,wait=off" % qmp_sock,
                                "--monitor", "chardev=qmp0"])
            q = QMP(qmp_sock)
            pport, stats = self.proxy(P, d, dport)
            gp, s = self.guest(P, d, ["nbd+unix:///src?socket=" + src_sock,
                                      "nbd://127.0.0.1:%d/dst" % dport], self.rate)
            t0 = now()
            q.cmd("blockdev-add", driver="nbd", **{"node-name": "tgt"},
                  server={"type": "inet", "host": "127.0.0.1", "port": str(pport)},
                  export="dst")
            q.cmd("blockdev-mirror", **{"job-id": "m0", "copy-mode": mode},
                  device="src", target="tgt", sync="full", speed=self.cap)
            end = t0 + self.limit
            ev = None
            while ev is None and now() < end:
                ev = q.wait_event(("BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED",
                                   "BLOCK_JOB_CANCELLED"), 0.2)
                s.poll()
            t_ready = now()
            r["finished"] = ev is not None and ev["event"] == "BLOCK_JOB_READY"
            if ev is None:
                # libvirt's --timeout-suspend: pause the guest and let the
                # mirror catch up; this downtime is reported, not "finished".
                r["error"] = "time limit: not READY; guest paused to force it"
            elif ev["event"] != "BLOCK_JOB_READY":
                raise RuntimeError("mirror ended early: %s" % ev)
            r["copy_MBps"] = round(r["allocated_bytes"] / (t_ready - t0) / 1e6, 1)
            t_pause = now()
            gp.send_signal(signal.SIGSTOP)
            if ev is None:
                q.cmd("block-job-set-speed", device="m0", speed=0)
                ev = q.wait_event(("BLOCK_JOB_READY",), self.a.force_limit)
                if ev is None:
                    r["error"] += "; not READY within %ds paused" % self.a.force_limit
            if ev is not None:
                q.cmd("block-job-cancel", device="m0")
                done = q.wait_event(("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"), 120)
                if done is None or done["data"].get("error"):
                    raise RuntimeError("mirror did not complete: %s" % done)
            q.cmd("block-export-del", id="exp0", mode="hard")
            t_done = now()
            gp.send_signal(signal.SIGCONT)
            r["total_s"] = round(t_done - t0, 3)
            r["downtime_ms"] = round((t_done - t_pause) * 1000, 1)
            self.finish_guest(gp, s, d, r, t0, t_pause, t_pause)
            r["wire_bytes"] = self.proxy_bytes(stats)
        finally:
            P.stop_all()

    def run_copy(self, d, img, r, tool):
        P = Procs(d)
        try:
            dport = self.qsd_dest(P, d, os.path.getsize(img))
            rate = self.cap if tool == "nbdcopy-cap" else 0
            pport, stats = self.proxy(P, d, dport, rate)
            uri = "nbd://127.0.0.1:%d/dst" % pport
            if tool.startswith("nbdcopy"):
                argv = ["nbdcopy", img, uri]
            else:
                argv = ["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw",
                        "-r", str(self.cap), img, uri]
            t0 = now()
            p = P.start("copy", argv)
            try:
                p.wait(self.limit)
            except subprocess.TimeoutExpired:
                p.terminate()
                p.wait()
                r["error"] = "time limit"
            t1 = now()
            if p.returncode and "error" not in r:
                r["error"] = "%s exit %d" % (argv[0], p.returncode)
            r["finished"] = "error" not in r
            r["total_s"] = round(t1 - t0, 3)
            r["downtime_ms"] = None  # no guest: not a migration
            r["copy_MBps"] = round(r["allocated_bytes"] / (t1 - t0) / 1e6, 1)
            r["guest_write_ratio"] = None
            r["rewritten_bytes"] = 0
            r["wire_bytes"] = self.proxy_bytes(stats)
        finally:
            P.stop_all()

    # ---- driver ----------------------------------------------------------

    def run(self, sc, orig, alloc, tool, rep=0):
        size_g, kind, rate, qd = sc
        self.rate, self.qd = rate, qd
        # Time limit: the quick or --time-limit value, else 60 s + 3x the
        # copy of the whole disk at the cap (mirror and qemu-img count
        # holes), at most 600 s.
        self.limit = (self.a.time_limit if self.a.time_limit_set else
                      min(600.0, 60 + 3.0 * size_g * GiB / (self.cap or 300 * MiB)))
        name = sc_name(sc)
        d = os.path.join(self.a.work, name + "." + tool)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        self.rm_dst(d)  # the receiver refuses an existing image
        img = d + "/src.img"
        subprocess.check_call(["cp", "--sparse=always", orig, img])
        # The copy's dirty pages would otherwise be written back during the
        # guest's reference window and PUSH: its rate alone measured 3.5-15
        # MB/s between runs without this, 12.6-14.8 with it.
        fd = os.open(img, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        r = {"scenario": name, "tool": tool, "rep": rep, "size": size_g * GiB,
             "image": kind, "guest_qd": qd, "guest_rate": rate,
             "cap_bps": 0 if tool.split("@")[0].replace("-ssh", "") in
             ("nbdcopy", "incmig-nocap", "incmig-max") else self.cap,
             "allocated_bytes": alloc, "finished": False, "total_s": None,
             "downtime_ms": None, "wire_bytes": None, "payload_bytes": None,
             "guest_write_ratio": None, "load_before": round(os.getloadavg()[0], 2)}
        sys.stderr.write("  %-26s %-15s ... " % (name, tool))
        sys.stderr.flush()
        try:
            if tool.startswith("incmig"):
                base, _, ref = tool.partition("@")
                ssh = base.endswith("-ssh")
                base = base[:-4] if ssh else base
                self.run_incmig(d, img, r, {"incmig": self.cap, "incmig-nocap": 0,
                                            "incmig-max": "max"}[base],
                                self.a.reference if ref else self.x, ssh)
            elif tool == "guest-alone":
                self.run_alone(d, img, r)
            elif tool.startswith("qemu-mirror"):
                self.run_mirror(d, img, r, "background" if tool.endswith("bg") else "write-blocking",
                                tool.endswith("-direct"))
            else:
                self.run_copy(d, img, r, tool)
        except Exception as e:  # one failed run does not end the benchmark
            r["finished"] = False
            r["error"] = "%s: %s" % (type(e).__name__, e)
        if r.get("rewritten_bytes") is not None:
            r["payload_bytes"] = alloc + r["rewritten_bytes"]
        r["load_after"] = round(os.getloadavg()[0], 2)
        sys.stderr.write("%s\n" % ("ok %.1fs" % r["total_s"] if r["finished"] and r["total_s"]
                                   else r.get("error", "not finished")))
        self.results.append(r)
        if not self.a.keep:
            shutil.rmtree(d, ignore_errors=True)
            self.rm_dst(d)


def fs_of(path):
    """The device and file system type holding path, from /proc/mounts."""
    best = ("?", "?", "")
    path = os.path.realpath(path)
    for line in open("/proc/mounts"):
        dev, mnt, typ = line.split()[:3]
        if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[2]):
            best = (dev, typ, mnt)
    return "%s %s" % best[:2]


SPAN = None  # --span: the guest's I/O confined to the disk's first SPAN bytes


def sc_name(sc):
    size_g, kind, rate, qd = sc
    w = "idle" if rate == 0 else "wmax" if rate >= GiB else "w%dM" % (rate // MiB)
    return "%dG-%s-%s%s%s" % (size_g, kind, w, "" if qd == 16 else "-qd%d" % qd,
                              "-span" + SPAN if SPAN else "")


# The guest's view (issue 14): switchover, write gaps and the rate a guest
# keeps, one request at a time and 16 in flight, against QEMU's
# write-blocking mirror with O_DIRECT; PUSH's idle speed against nbdcopy.
# No cap anywhere: the mirrors run at speed 0 (unlimited).
LATENCY = [((1, "random", 0, 16), ["incmig-nocap", "nbdcopy"]),
           ((1, "random", GiB, 1), ["incmig-nocap", "guest-alone", "incmig-max",
                                    "qemu-mirror-wb", "qemu-mirror-wb-direct"]),
           ((1, "random", 50 * MiB, 16), ["incmig-nocap", "qemu-mirror-wb-direct"])]


# Large disks (issue 14): sparse images with 4% allocated, the guest
# writing 20 MB/s, 1 GiB beside them as the reference; memory per process
# and stop-and-copy bytes against disk size.  With --bandwidth max: a
# yielding PUSH beside a 20 MB/s guest with 16 requests in flight sits at
# its 4 MB/s floor (16 GiB took 179-207 s on 2026-12-02), which measures
# the floor, not the size.
LARGE_SIZES = "1,16,64"


def alloc_pct(kind):
    return 100 if kind == "random" else int(kind[len("sparse"):])


def tools_for(rate, a, kind="random", size=1, qd=16):
    ts = tools_for_tcp(rate, a, kind, size, qd)
    if not a.ssh:
        return ts
    return [v for t in ts for v in
            ([t, t.replace("@", "-ssh@") if "@" in t else t + "-ssh"]
             if t.startswith("incmig") else [t])]


def tools_for_tcp(rate, a, kind="random", size=1, qd=16):
    if a.large:
        return ["incmig-max"] + (["incmig-max@ref"] if a.reference else [])
    if a.latency:
        ts = [t for t in dict(LATENCY)[(size, kind, rate, qd)] if not a.tools or t in a.tools]
        return ts + [t + "@ref" for t in ts if a.reference and t.startswith("incmig")]
    if a.tools:
        return [t for t in a.tools if rate == 0 or t in ("incmig", "qemu-mirror-bg", "qemu-mirror-wb")]
    if rate == 0 and (a.quick and kind != "random" or
                      not a.full and not a.quick and size == max(a.sizes) > 1):
        return ["incmig", "incmig-nocap", "qemu-mirror-bg", "qemu-mirror-wb", "nbdcopy"]
    if rate == 0:
        return ["incmig", "incmig-nocap", "qemu-mirror-bg", "qemu-mirror-wb",
                "nbdcopy", "nbdcopy-cap", "qemu-img-cap"]
    return ["incmig", "qemu-mirror-bg", "qemu-mirror-wb"]


def matrix(a):
    if a.large:
        return [(s, "sparse4", 20 * MiB, 16) for s in a.sizes]
    if a.latency:
        return [sc for sc, _ in LATENCY]
    if a.quick:
        return [(1, "random", 0, 16), (1, "sparse25", 0, 16), (1, "random", 50 * MiB, 16),
                (1, "sparse25", 50 * MiB, 16), (1, "random", 200 * MiB, 16)]
    full = [(s, k, r, 16) for s in a.sizes for k in ("random", "sparse25")
            for r in (0, 10 * MiB, 50 * MiB, 200 * MiB)]
    if a.full:
        return full
    # Standard `make bench`: the smallest size in full; the middle sizes
    # idle and at 50 MB/s; the largest random idle and at 50 MB/s (the
    # downtime target is stated for 16 GiB at 50 MB/s) and sparse at 50.
    small, big = min(a.sizes), max(a.sizes)
    return [sc for sc in full if sc[0] == small or
            (sc[0] != big and sc[2] in (0, 50 * MiB)) or
            (sc[0] == big and (sc[2] == 50 * MiB or sc[1] == "random" and sc[2] == 0))]


def estimate(a, m):
    """Seconds: per run the copy at the cap (or ~600 MB/s uncapped), plus
    setup, the baseline window and image copies; a mirror whose guest
    writes faster than the mirror can converge hits the time limit."""
    tot = 0
    cap = a.cap or 300 * MiB
    for s, k, r, qd in m:
        alloc = s * GiB * alloc_pct(k) / 100.0
        lim = (a.time_limit if a.time_limit_set else
               min(600.0, 60 + 3.0 * s * GiB / cap))
        tot += 1 + alloc / 1.5e9  # mkimg
        for t in tools_for(r, a, k, s, qd) * a.repeats:
            run = 7 + a.baseline + alloc / 1e9  # setup, baseline, cp
            if t == "guest-alone":
                run += 20  # as long as the uncapped migration
            elif t.split("@")[0].replace("-ssh", "") in ("nbdcopy", "incmig-nocap", "incmig-max"):
                run += alloc / 6e8
            elif t == "qemu-mirror-bg" and r >= 10 * MiB:
                run += lim + a.force_limit  # never READY (hot spot)
            else:
                run += (alloc + min(r, cap) * alloc / cap) / cap
            tot += min(run, lim + a.force_limit + 10)
    return tot


def table(results, out):
    cols = [("scenario", 22), ("tool", 15), ("fin", 3), ("total_s", 8),
            ("downtime_ms", 11), ("g_gap_ms", 8), ("wire_MB", 8),
            ("payload_MB", 10), ("wire/pay", 8), ("copy_MBps", 9),
            ("g_ratio", 7)]
    lines = [" ".join(n.rjust(w) if i > 1 else n.ljust(w)
                      for i, (n, w) in enumerate(cols))]

    def f(v, fmt):
        return "-" if v is None else fmt % v
    for r in results:
        wp = (r["wire_bytes"] / r["payload_bytes"]
              if r.get("wire_bytes") and r.get("payload_bytes") else None)
        vals = [r["scenario"], r["tool"], "yes" if r["finished"] else "NO",
                f(r["total_s"], "%.2f"), f(r["downtime_ms"], "%.1f"),
                f(r.get("guest_reconnect_ms"), "%.0f"),
                f(r["wire_bytes"] and r["wire_bytes"] / 1e6, "%.0f"),
                f(r["payload_bytes"] and r["payload_bytes"] / 1e6, "%.0f"),
                f(wp, "%.3f"), f(r.get("copy_MBps"), "%.1f"),
                f(r["guest_write_ratio"], "%.3f")]
        lines.append(" ".join(v.rjust(w) if i > 1 else v.ljust(w)
                              for i, (v, (_, w)) in enumerate(zip(vals, cols))))
    return "\n".join(lines)


SUMMARY = [("total_s", "total_s", "%.2f"), ("downtime_ms", "downtime_ms", "%.1f"),
           ("guest_switch_ms", "g_switch_ms", "%.1f"),
           ("guest_stall_ms", "g_maxgap_ms", "%.0f"),
           ("guest_stall_before_ms", "g_gap_alone", "%.0f"),
           ("guest_write_ratio", "g_ratio", "%.2f"),
           ("dst_max_wait_ms", "dst_wait_ms", "%.1f"), ("wire_pay", "wire/pay", "%.3f"),
           ("copy_MBps", "copy_MBps", "%.0f")]


def med(results, sc, tool, key):
    """(median, min, max, n) of key over the repeats, or None."""
    v = [r[key] for r in results if r["scenario"] == sc and r["tool"] == tool
         and r.get("finished") and r.get(key) is not None]
    return (statistics.median(v), min(v), max(v), len(v)) if v else None


def summary(results):
    """One line per (scenario, tool): median [min-max] of each figure."""
    for r in results:
        r["wire_pay"] = (r["wire_bytes"] / r["payload_bytes"]
                         if r.get("wire_bytes") and r.get("payload_bytes") else None)
    keys = []
    for r in results:
        if (r["scenario"], r["tool"]) not in keys:
            keys.append((r["scenario"], r["tool"]))
    lines = ["%-24s %-22s %3s  %s" % ("scenario", "tool", "n", "  ".join(
        "%-20s" % h for _, h, _ in SUMMARY))]
    for sc, tool in keys:
        cells = []
        n = 0
        for k, _, fmt in SUMMARY:
            m = med(results, sc, tool, k)
            if m:
                n = max(n, m[3])
                cells.append("%-20s" % ((fmt + " [" + fmt + "-" + fmt + "]") % m[:3]))
            else:
                cells.append("%-20s" % "-")
        lines.append("%-24s %-22s %3d  %s" % (sc, tool, n, "  ".join(cells)))
    return "\n".join(lines)


def large_summary(results):
    """Per disk size and incmig build: downtime, guest-seen switchover, the
    guest's longest wait for a block after GO, stop-and-copy bytes and
    each process's peak RSS, medians [ranges]; with --reference, this
    build's medians over the reference build's, measured alike."""
    keys = [("downtime_ms", "%.1f"), ("guest_switch_ms", "%.1f"),
            ("dst_max_wait_ms", "%.1f"), ("stopcopy_bytes", "%.0f"),
            ("rss_serve_MiB", "%.1f"), ("rss_receive_MiB", "%.1f"),
            ("rss_migrate_MiB", "%.1f"), ("total_s", "%.1f")]
    lines = ["%-22s %-15s %s" % ("scenario", "build", " ".join("%-22s" % k for k, _ in keys))]
    scs = sorted({r["scenario"] for r in results}, key=lambda x: int(x.split("G")[0]))
    for sc in scs:
        for tool in ("incmig-max", "incmig-max-ssh", "incmig-max@ref", "incmig-max-ssh@ref"):
            if not any(r["scenario"] == sc and r["tool"] == tool for r in results):
                continue
            cells = []
            for k, fmt in keys:
                m = med(results, sc, tool, k)
                cells.append("%-22s" % (((fmt + " [" + fmt + "-" + fmt + "]") % m[:3]) if m else "-"))
            build = "reference" if "@" in tool else "this"
            lines.append("%-22s %-15s %s" % (sc, build + (" ssh" if "-ssh" in tool else ""),
                                             " ".join(cells)))
        ratios = []
        for k, _ in keys[:3] + keys[-1:]:
            a, b = med(results, sc, "incmig-max", k), med(results, sc, "incmig-max@ref", k)
            if a and b and b[0]:
                ratios.append("%s %.2f" % (k, a[0] / b[0]))
        if ratios:
            lines.append("%-22s this / reference: %s" % (sc, ", ".join(ratios)))
    return "\n".join(lines)


def verdicts_latency(results):
    """Issue 14's targets, on the medians of the repeats."""
    out = []

    def ok(c):
        return "ok    " if c else "BEHIND"
    scs = []
    for r in results:
        if r["scenario"] not in scs:
            scs.append(r["scenario"])
    for sc in scs:
        im = med(results, sc, "incmig-nocap", "guest_switch_ms")
        q = med(results, sc, "qemu-mirror-wb-direct", "guest_switch_ms")
        if im and q:
            x = im[0] / q[0] if q[0] else float("inf")
            out.append("%s %s guest-seen switchover incmig %.1f ms / QEMU write-blocking "
                       "O_DIRECT %.1f ms = %.2f (target <= 1.0; and <= 5 ms: %s)"
                       % (ok(x <= 1.0), sc, im[0], q[0], x, "yes" if im[0] <= 5 else "NO"))
        g = med(results, sc, "incmig-nocap", "guest_write_ratio")
        if g and sc.endswith("-qd1"):
            out.append("%s %s one-at-a-time guest keeps %.2f of its rate alone during "
                       "an uncapped migration (target >= 0.9)" % (ok(g[0] >= 0.9), sc, g[0]))
            gm = med(results, sc, "incmig-max", "guest_write_ratio")
            if gm:
                out.append("       %s the same with --bandwidth max: %.2f" % (sc, gm[0]))
            gap = med(results, sc, "incmig-nocap", "guest_stall_ms")
            alone = med(results, sc, "guest-alone", "guest_stall_ms")
            short = med(results, sc, "incmig-nocap", "guest_stall_before_ms")
            if gap and alone:
                out.append("%s %s longest write gap %.0f ms, alone %.0f ms over as long "
                           "(target <= alone + 20; alone in the 3 s before: %s ms)"
                           % (ok(gap[0] <= alone[0] + 20), sc, gap[0], alone[0],
                              "%.0f" % short[0] if short else "-"))
            ga = med(results, sc, "guest-alone", "guest_write_ratio")
            if ga:
                out.append("       %s the guest alone keeps %.2f [%.2f-%.2f] of its rate in "
                           "the 3 s before (its own variation)" % ((sc,) + ga[:3]))
            rm = med(results, sc, "incmig-nocap", "guest_during_MBps")
            ra = med(results, sc, "guest-alone", "guest_during_MBps")
            if rm and ra:
                out.append("       %s the guest writes %.1f MB/s during the migration, %.1f "
                           "alone over as long: %.2f" % (sc, rm[0], ra[0], rm[0] / ra[0]))
            tn = med(results, sc, "incmig-nocap", "total_s")
            tm = med(results, sc, "incmig-max", "total_s")
            if tn and tm:
                out.append("       %s total time yielding %.2f s vs --bandwidth max %.2f s "
                           "(the cost of yielding: %.1fx)" % (sc, tn[0], tm[0], tn[0] / tm[0]))
        wp = med(results, sc, "incmig-nocap", "wire_pay")
        if wp:
            out.append("%s %s bytes / (allocated + rewritten) %.3f (target <= 1.01)"
                       % (ok(wp[0] <= 1.01), sc, wp[0]))
        a, b = med(results, sc, "incmig-nocap", "copy_MBps"), med(results, sc, "nbdcopy", "copy_MBps")
        if a and b:
            x = a[0] / b[0]
            out.append("%s %s PUSH speed idle / nbdcopy %.0f / %.0f MB/s = %.2f (target >= 0.95)"
                       % (ok(x >= 0.95), sc, a[0], b[0], x))
    return out


def verdicts(results):
    """incmig against the targets of issue 3, as ratios."""
    out = []
    by = {}
    for r in results:
        by.setdefault(r["scenario"], {})[r["tool"]] = r

    def ok(c):
        return "ok    " if c else "BEHIND"
    for sc, t in by.items():
        im, ref = t.get("incmig-nocap"), t.get("nbdcopy")
        if im and ref and im.get("copy_MBps") and ref.get("copy_MBps"):
            x = im["copy_MBps"] / ref["copy_MBps"]
            out.append("%s %s PUSH rate / nbdcopy (both uncapped): %.3f (target >= 0.95)"
                       % (ok(x >= 0.95), sc, x))
        im, ref = t.get("incmig"), t.get("nbdcopy-cap")
        if im and ref and im.get("copy_MBps") and ref.get("copy_MBps"):
            x = im["copy_MBps"] / ref["copy_MBps"]
            out.append("%s %s PUSH rate / nbdcopy on the capped link: %.3f (target >= 0.95)"
                       % (ok(x >= 0.95), sc, x))
        im = t.get("incmig")
        if not im:
            continue
        if im.get("wire_bytes") and im.get("payload_bytes"):
            x = im["wire_bytes"] / im["payload_bytes"]
            out.append("%s %s wire / (allocated + rewritten): %.3f (target <= 1.02)"
                       % (ok(x <= 1.02), sc, x))
        if im["guest_rate"] >= 50 * MiB and im["downtime_ms"] is not None:
            out.append("%s %s downtime %.1f ms, guest reconnect gap %s ms (target <= 5 ms%s)"
                       % (ok(im["downtime_ms"] <= 5), sc, im["downtime_ms"],
                          im.get("guest_reconnect_ms"),
                          "" if im["size"] >= 16 * GiB else "; stated for 16 GiB"))
        if im["guest_rate"] >= 2 * im["cap_bps"] > 0:
            g = im["guest_write_ratio"]
            out.append("%s %s finished=%s at writes %.0fx the cap, guest write ratio %s (target finished, >= 0.95)"
                       % (ok(im["finished"] and g is not None and g >= 0.95), sc,
                          im["finished"], im["guest_rate"] / im["cap_bps"], g))
        for m in ("qemu-mirror-bg", "qemu-mirror-wb"):
            q = t.get(m)
            if q and q["finished"] and q.get("downtime_ms") is not None and \
               im.get("downtime_ms") is not None and q["downtime_ms"] < im["downtime_ms"]:
                out.append("BEHIND %s downtime %.1f ms vs %s %.1f ms"
                           % (sc, im["downtime_ms"], m, q["downtime_ms"]))
            if q and q["finished"] and q.get("total_s") and im.get("total_s") and \
               q["total_s"] < im["total_s"]:
                out.append("BEHIND %s total %.2f s vs %s %.2f s (guest write ratio %s vs %s)"
                           % (sc, im["total_s"], m, q["total_s"],
                              im["guest_write_ratio"], q["guest_write_ratio"]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--latency", action="store_true",
                    help="the guest's view only (issue 14), no cap")
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs of each tool per scenario, interleaved")
    ap.add_argument("--full", action="store_true", help="the whole matrix")
    ap.add_argument("--large", action="store_true",
                    help="1, 16 and 64 GiB sparse images: memory and downtime against size")
    ap.add_argument("--sizes", default=None,
                    help="GiB, comma-separated (default 1,4,16; --large: 1,16,64)")
    ap.add_argument("--reference", default=None, metavar="XL_INCMIG",
                    help="--large or --latency: another build's xl-incmig, run "
                    "interleaved as incmig-*@ref, and (--large) this build's "
                    "figures as ratios to it")
    ap.add_argument("--out", default=None)
    ap.add_argument("--work", default=None, help="scratch dir (default /var/tmp)")
    ap.add_argument("--cap", type=int, default=100 * MiB, help="bytes/s")
    ap.add_argument("--time-limit", type=float, default=None)
    ap.add_argument("--tools", default=None)
    ap.add_argument("--only", default=None, help="scenarios whose name contains this")
    ap.add_argument("--estimate-only", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--dst-dir", default=None, metavar="DIR",
                    help="the destinations' images in DIR (another device: a "
                    "second host's disk); default: beside the sources'")
    ap.add_argument("--span", default=None, metavar="SIZE",
                    help="the guest's I/O only to the disk's first SIZE (e.g. 1G): "
                    "the same workload at every disk size")
    ap.add_argument("--debug", action="store_true",
                    help="incmig's debug messages (timings of the pause) in the "
                    "kept logs; with --keep")
    ap.add_argument("--ssh", action="store_true",
                    help="every incmig tool also over ssh (migrate's default "
                    "transport), through a private sshd on 127.0.0.1")
    ap.add_argument("--xl-incmig", required=True)
    ap.add_argument("--countproxy", required=True)
    ap.add_argument("--mkimg", required=True)
    a = ap.parse_args()
    if a.reference and not (a.large or a.latency):
        ap.error("--reference goes with --large or --latency")
    if a.reference and not os.access(a.reference, os.X_OK):
        ap.error("--reference %s: not an executable" % a.reference)
    a.sizes = [int(s) for s in (a.sizes or (LARGE_SIZES if a.large else "1,4,16")).split(",")]
    a.tools = a.tools.split(",") if a.tools else None
    a.time_limit_set = a.time_limit is not None or a.quick
    if a.time_limit is None:
        a.time_limit = 30.0 if a.quick else 600.0
    a.force_limit = 15.0 if a.quick else 120.0
    a.baseline = 3.0 if a.quick or a.latency else 5.0
    if a.latency:
        a.cap = 0   # uncapped, the mirrors too (speed 0)
        a.time_limit_set = True
        a.time_limit = 120.0
    global SPAN
    SPAN = a.span
    if a.debug and not a.keep:
        ap.error("--debug goes with --keep (its messages are in the kept logs)")
    if a.repeats < 1:
        ap.error("--repeats must be at least 1")
    m = matrix(a)
    if a.only:
        m = [sc for sc in m if a.only in sc_name(sc)]
    est = estimate(a, m)
    fa = argparse.Namespace(**{**vars(a), "full": True, "latency": False, "large": False})
    print("bench: %d scenarios, about %.0f min estimated (time limit %s a run)%s"
          % (len(m), est / 60, "%.0f s" % a.time_limit if a.time_limit_set else
             "60 s + 3x disk/cap, <= 600 s",
             "" if a.full or a.quick else "; --full: %d scenarios, about %.0f min"
             % (len(matrix(fa)), estimate(fa, matrix(fa)) / 60)))
    if a.estimate_only:
        return 0
    base = a.work or "/var/tmp"
    if not os.path.isdir(base):
        print("bench: --work %s: not a directory" % base)
        return 1
    if a.dst_dir and not os.path.isdir(a.dst_dir):
        print("bench: --dst-dir %s: not a directory" % a.dst_dir)
        return 1
    need = max(sc[0] * alloc_pct(sc[1]) / 100.0 for sc in m) * GiB * 3.2
    st = os.statvfs(base)
    if st.f_bavail * st.f_frsize < need:
        print("bench: %s has %.1f GiB free, needs %.1f GiB" % (
            base, st.f_bavail * st.f_frsize / GiB, need / GiB))
        return 1
    a.work = os.path.join(base, "incmig-bench.%d" % os.getpid())
    os.makedirs(a.work)
    a.out = a.out or os.path.join(a.work, "out")
    os.makedirs(a.out, exist_ok=True)
    up = open("/proc/uptime").read().split()[0]
    print("bench: load %s at start (uptime %ss), %d CPUs; scratch %s"
          % (" ".join("%.2f" % x for x in os.getloadavg()), up, os.cpu_count(), a.work))
    if a.dst_dir:
        print("bench: destination images in %s (%s), sources in %s (%s)"
              % (a.dst_dir, fs_of(a.dst_dir), a.work, fs_of(a.work)))
    b = Bench(a)
    t_start = now()
    try:
        if a.ssh:
            b.start_sshd()
        images = {}
        for sc in m:
            size_g, kind = sc[0], sc[1]
            key = (size_g, kind)
            if key not in images:
                for k in list(images):  # keep one source image on disk
                    os.unlink(images.pop(k)[0])
                path = os.path.join(a.work, "%dG-%s.orig" % key)
                alloc = int(subprocess.check_output(
                    [a.mkimg, path, str(size_g * 1024), str(alloc_pct(kind))]))
                images[key] = (path, alloc)
            for rep in range(a.repeats):   # interleaved: every tool, then again
                for tool in tools_for(sc[2], a, sc[1], sc[0], sc[3]):
                    b.run(sc, images[key][0], images[key][1], tool, rep)
    finally:
        res = os.path.join(a.out, "results.json")
        with open(res, "w") as f:
            json.dump(b.results, f, indent=1)
        print()
        print(table(b.results, a.out))
        print()
        print("medians [ranges] of %d interleaved runs:" % a.repeats)
        print(summary(b.results))
        print()
        if a.large:
            print("large disks, medians [ranges]:")
            print(large_summary(b.results))
            print()
        print("incmig against the targets (medians, ratios measured in this run):")
        for line in verdicts_latency(b.results) + ([] if a.latency else verdicts(b.results)):
            print("  " + line)
        print()
        print("bench: %.1f min, load %s at end" % ((now() - t_start) / 60,
              " ".join("%.2f" % x for x in os.getloadavg())))
        print("bench: results in %s" % res)
        if a.ssh and getattr(b, "sshd", None):
            b.sshd.stop_all()
        for k in os.listdir(a.work):
            p = os.path.join(a.work, k)
            if p != a.out and not a.keep:
                shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.unlink(p)
        if not a.keep and not os.listdir(a.work):
            os.rmdir(a.work)
    return 0


def interrupted(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # SIGTERM (or ^C; a shell's background job ignores SIGINT) ends the
    # benchmark with the results so far printed.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
