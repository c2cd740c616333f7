"""The pod runner: a test-only stand-in for the part of a kubelet that runs containers.

Started by `cluster.py` (one per local control plane). It watches the pods bound
to the fake kwok nodes (never those of the real node, `node.py`). kwok gives each
one a Running status and a loopback IP (its node's podCIDR is inside 127.0.0.0/8)
but reports it not Ready; the runner:

1. Starts the pod's process once it has an IP, when the pod says what backs it:
   - annotation `e2e.llmfleet.io/command`: a JSON argv, with `{ip}` and `{port}`
     replaced by the pod IP and the first container port, or
   - a container whose image name contains `llmfleet` and whose command is
     `["llmfleet"]`: runs `<repo>/.venv/bin/llmfleet` with the container's args
     (`--host` rewritten to the pod IP) and env (values, simple fieldRefs, $(VAR)).
   Every process also gets `LLMFLEET_BIND_HOST=<pod IP>`: all pods share this
   machine's network namespace, so an llmfleet server that would bind 0.0.0.0 in
   its own pod binds that instead. Output: `<state>/pods/<ns>/<pod>/<container>.log`.
2. Probes it (the container's readinessProbe httpGet/tcpSocket, else a TCP
   connect to its port) and reports the pod Ready once it answers. A pod with no
   backing process is reported Ready at once.
3. On deletion waits out a `preStop.sleep`, sends SIGTERM, SIGKILL at the end of
   the pod's grace period, and deletes the pod (grace 0) once the process has
   exited, as a kubelet does. A process that exits on its own makes the pod not
   Ready and is restarted with backoff (restartCount counts).

What it does not emulate: containers or images (the command runs on this machine
with this machine's files), network namespaces (ports of all pods share one
stack; each pod has its own IP), resource limits or isolation of any kind,
volumes, ConfigMap/Secret env sources, cluster DNS (Service and LWS leader names
do not resolve), Service links and KUBERNETES_SERVICE_* env (nothing may reach a
ClusterIP here), liveness/startup probes and periodic readiness re-probing, exec
probes, preStop exec/httpGet hooks, init containers (kwok marks them completed),
logs/exec through the API. Processes die with the runner; a new runner starts
them again for the pods it lists.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeapi import Api, ApiError
from manifests import REAL_NODE_NAME

JSON = dict[str, Any]
COMMAND_ANNOTATION = "e2e.llmfleet.io/command"
# Set to the pod IP for every process: pods here share one network namespace, so a
# server that would bind 0.0.0.0 in its own pod must bind this address instead.
BIND_HOST_ENV = "LLMFLEET_BIND_HOST"
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
FIELD_REFS = {
    "metadata.name": lambda pod: pod["metadata"]["name"],
    "metadata.namespace": lambda pod: pod["metadata"]["namespace"],
    "metadata.uid": lambda pod: pod["metadata"]["uid"],
    "spec.nodeName": lambda pod: pod["spec"].get("nodeName", ""),
    "spec.serviceAccountName": lambda pod: pod["spec"].get("serviceAccountName", ""),
    "status.podIP": lambda pod: pod["status"].get("podIP", ""),
    "status.hostIP": lambda pod: pod["status"].get("hostIP", ""),
}


# ---- what backs a pod (pure) -------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """How to tell the process answers: GET http://ip:port/path, or TCP connect if path is None."""

    port: int
    path: str | None = None


@dataclass(frozen=True)
class Launch:
    container: str
    argv: list[str]
    env: dict[str, str]
    probe: Probe | None
    prestop_sleep: float = 0.0  # lifecycle.preStop.sleep: delay before SIGTERM


def _container_port(container: JSON, port: int | str | None = None) -> int | None:
    """`port` as a number (a named port is looked up); the first container port if None."""
    ports = container.get("ports") or []
    if isinstance(port, int):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        return next((p["containerPort"] for p in ports if p.get("name") == port), None)
    return ports[0]["containerPort"] if ports else None


def _probe(container: JSON) -> Probe | None:
    readiness = container.get("readinessProbe") or {}
    if "httpGet" in readiness:
        port = _container_port(container, readiness["httpGet"].get("port"))
        return Probe(port, readiness["httpGet"].get("path", "/")) if port else None
    if "tcpSocket" in readiness:
        port = _container_port(container, readiness["tcpSocket"].get("port"))
        return Probe(port) if port else None
    port = _container_port(container)
    return Probe(port) if port else None


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args and env values; $$ escapes a dollar."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
        lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]),
        text,
    )


def container_env(pod: JSON, container: JSON) -> dict[str, str]:
    env = {"HOSTNAME": pod["metadata"]["name"]}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = _expand(var["value"], env)
        elif "fieldRef" in var.get("valueFrom", {}):
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            label = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
            if label:
                env[var["name"]] = pod["metadata"].get(label[1], {}).get(label[2], "")
            elif path in FIELD_REFS:
                env[var["name"]] = FIELD_REFS[path](pod)
    return env


def _rewrite_host(args: list[str], ip: str) -> list[str]:
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--host" and i + 1 < len(out):
            out[i + 1] = ip
        elif arg.startswith("--host="):
            out[i] = f"--host={ip}"
    return out


def _prestop_sleep(container: JSON) -> float:
    sleep = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
    return float(sleep.get("seconds", 0))


def _launch(container: JSON, argv: list[str], env: dict[str, str], ip: str) -> Launch:
    env = env | {BIND_HOST_ENV: ip}
    return Launch(container["name"], argv, env, _probe(container), _prestop_sleep(container))


def launch_for(pod: JSON, llmfleet: str) -> Launch | None:
    """What process backs `pod` (which must have an IP), or None if nothing does."""
    ip = pod["status"]["podIP"]
    containers = pod["spec"]["containers"]
    annotation = (pod["metadata"].get("annotations") or {}).get(COMMAND_ANNOTATION)
    if annotation:
        container = containers[0]
        port = str(_container_port(container) or "")
        argv = [arg.replace("{ip}", ip).replace("{port}", port) for arg in json.loads(annotation)]
        return _launch(container, argv, container_env(pod, container), ip)
    for container in containers:
        if "llmfleet" in container.get("image", "") and container.get("command") == ["llmfleet"]:
            env = container_env(pod, container)
            args = _rewrite_host([_expand(arg, env) for arg in container.get("args") or []], ip)
            # The image has llmfleet on PATH (the launcher runs `llmfleet engine-sim`).
            env["PATH"] = f"{Path(llmfleet).parent}:{os.environ.get('PATH', '')}"
            return _launch(container, [llmfleet, *args], env, ip)
    return None


def answers(ip: str, probe: Probe) -> bool:
    try:
        if probe.path is None:
            with socket.create_connection((ip, probe.port), timeout=1):
                return True
        with urllib.request.urlopen(f"http://{ip}:{probe.port}{probe.path}", timeout=2) as response:
            return 200 <= int(response.status) < 400
    except OSError:
        return False


# ---- the runner (I/O) -------------------------------------------------------------------


@dataclass
class PodState:
    pod: JSON
    launch: Launch | None = None
    process: subprocess.Popen[bytes] | None = None
    handled: bool = False  # started its process, or reported Ready with none
    terminating: bool = False
    deleted: bool = False
    restarts: int = 0
    term_at: float | None = None  # when to send SIGTERM (after a preStop sleep)
    term_sent: bool = False
    kill_at: float | None = None  # when to send SIGKILL (end of the grace period)


class Runner:
    """Reconciles pods with local processes; every change goes through one queue."""

    def __init__(self, api: Api, state: Path, llmfleet: str) -> None:
        self.api = api
        self.state = state
        self.llmfleet = llmfleet
        self.pods: dict[str, PodState] = {}
        self.inbox: queue.Queue[tuple[str, str, JSON | None]] = queue.Queue()

    # -- events in

    def watch_pods(self) -> None:
        """Thread: list + watch bound pods forever, feeding the inbox."""
        # Bound pods, except those of the real node (node.py), whose kubelet runs them.
        selector = urllib.parse.quote(f"spec.nodeName!=,spec.nodeName!={REAL_NODE_NAME}")
        path = f"/api/v1/pods?fieldSelector={selector}"
        while True:
            try:
                listing = self.api.get(path)
                for pod in listing["items"]:
                    self.inbox.put(("pod", "ADDED", pod))
                self.inbox.put(("listed", "", {"items": listing["items"]}))
                (self.state / "podrunner.ready").touch()
                version = listing["metadata"]["resourceVersion"]
                while True:
                    for event in self.api.watch(path, version):
                        if event["type"] == "ERROR":
                            raise ApiError(event["object"].get("code", 500), str(event["object"]))
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            self.inbox.put(("pod", event["type"], event["object"]))
            except (ApiError, OSError, ValueError) as error:
                print(f"watch restarted: {error}", flush=True)
                time.sleep(1)

    def run(self) -> None:
        threading.Thread(target=self.watch_pods, daemon=True).start()
        while True:
            try:
                kind, uid_or_type, pod = self.inbox.get(timeout=0.2)
            except queue.Empty:
                self._signal_due()
                continue
            if kind == "pod" and pod is not None:
                self.sync(pod, deleted=uid_or_type == "DELETED")
            elif kind == "listed" and pod is not None:
                self._forget_missing({item["metadata"]["uid"] for item in pod["items"]})
            elif uid_or_type in self.pods:
                getattr(self, f"_on_{kind}")(self.pods[uid_or_type])
            self._signal_due()

    # -- reconcile

    def _forget_missing(self, listed: set[str]) -> None:
        """After a relist: pods deleted while the watch was down count as deleted."""
        for uid in set(self.pods) - listed:
            self.sync(self.pods[uid].pod, deleted=True)

    def sync(self, pod: JSON, deleted: bool) -> None:
        uid = pod["metadata"]["uid"]
        st = self.pods.setdefault(uid, PodState(pod))
        st.pod = pod
        if deleted:
            st.deleted = True
            self._stop(st, grace=1, prestop=0)
        elif pod["metadata"].get("deletionTimestamp"):
            st.terminating = True
            if self._alive(st):
                grace = pod["metadata"].get("deletionGracePeriodSeconds") or 30
                self._stop(st, grace, prestop=st.launch.prestop_sleep if st.launch else 0)
            else:
                self._delete(st)
        elif pod["status"].get("podIP") and not st.handled:
            st.handled = True
            st.launch = launch_for(pod, self.llmfleet)
            if st.launch is None:
                self._report_ready(st, True, "NoLocalProcess")
            else:
                self._start(st)
        if st.deleted and not self._alive(st):
            del self.pods[uid]

    def _start(self, st: PodState) -> None:
        assert st.launch is not None
        meta = st.pod["metadata"]
        workdir = self.state / "pods" / meta["namespace"] / meta["name"]
        workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k in PASSED_ENV} | st.launch.env
        with (workdir / f"{st.launch.container}.log").open("ab") as log:
            st.process = subprocess.Popen(
                st.launch.argv,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        print(
            f"Started {meta['namespace']}/{meta['name']} pid {st.process.pid}: {st.launch.argv}",
            flush=True,
        )
        process, uid = st.process, meta["uid"]
        threading.Thread(target=self._wait_exit, args=(process, uid), daemon=True).start()
        ready_args = (process, uid, st.pod["status"]["podIP"], st.launch.probe)
        threading.Thread(target=self._wait_ready, args=ready_args, daemon=True).start()

    def _wait_exit(self, process: subprocess.Popen[bytes], uid: str) -> None:
        process.wait()
        self.inbox.put(("exited", uid, None))

    def _wait_ready(
        self, process: subprocess.Popen[bytes], uid: str, ip: str, probe: Probe | None
    ) -> None:
        while process.poll() is None:
            if probe is None or answers(ip, probe):
                self.inbox.put(("ready", uid, None))
                return
            time.sleep(0.2)

    def _on_ready(self, st: PodState) -> None:
        if self._alive(st) and not st.terminating and not st.deleted:
            self._report_ready(st, True, "ProcessAnswers")

    def _on_exited(self, st: PodState) -> None:
        code = st.process.returncode if st.process else None
        st.process, st.term_at, st.term_sent, st.kill_at = None, None, False, None
        meta = st.pod["metadata"]
        print(f"Process of {meta['namespace']}/{meta['name']} exited with {code}", flush=True)
        if st.deleted:
            del self.pods[meta["uid"]]
        elif st.terminating:
            self._delete(st)
        else:
            st.restarts += 1
            self._report_ready(st, False, f"ProcessExited{code}")
            delay = min(2.0**st.restarts, 30.0)
            threading.Timer(delay, self.inbox.put, args=(("restart", meta["uid"], None),)).start()

    def _on_restart(self, st: PodState) -> None:
        if st.process is None and not st.terminating and not st.deleted and st.launch:
            self._start(st)

    # -- process signals

    @staticmethod
    def _alive(st: PodState) -> bool:
        return st.process is not None and st.process.poll() is None

    def _stop(self, st: PodState, grace: float, prestop: float) -> None:
        """Schedule SIGTERM after `prestop` seconds and SIGKILL after `grace` (the earliest
        of what was scheduled before and now wins), as a kubelet stops a container."""
        if not self._alive(st):
            return
        now = time.monotonic()
        term_at, kill_at = now + min(prestop, grace), now + grace
        st.term_at = term_at if st.term_at is None else min(st.term_at, term_at)
        st.kill_at = kill_at if st.kill_at is None else min(st.kill_at, kill_at)
        self._signal_due()

    def _signal_due(self) -> None:
        now = time.monotonic()
        for st in self.pods.values():
            if not self._alive(st) or st.process is None:
                continue
            if st.term_at is not None and now >= st.term_at and not st.term_sent:
                st.process.send_signal(signal.SIGTERM)
                st.term_sent = True
            if st.kill_at is not None and now >= st.kill_at:
                st.process.kill()

    def stop_all(self) -> None:
        for st in self.pods.values():
            self._stop(st, grace=5, prestop=0)
        deadline = time.monotonic() + 5
        while any(self._alive(st) for st in self.pods.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for st in self.pods.values():
            if self._alive(st) and st.process:
                st.process.kill()

    # -- API writes

    def _pod_path(self, st: PodState) -> str:
        meta = st.pod["metadata"]
        return f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"

    def _report_ready(self, st: PodState, ready: bool, reason: str) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = "True" if ready else "False"
        conditions = [
            {"type": kind, "status": status, "reason": reason, "lastTransitionTime": now}
            for kind in ("Ready", "ContainersReady")
        ]
        containers = []
        for c in st.pod["status"].get("containerStatuses") or []:
            backed = st.launch is not None and c["name"] == st.launch.container
            restarts = st.restarts if backed else c.get("restartCount", 0)
            containers.append({**c, "ready": ready, "restartCount": restarts})
        patch = {"status": {"conditions": conditions, "containerStatuses": containers}}
        try:
            st.pod = self.api.strategic_patch(f"{self._pod_path(st)}/status", patch)
        except ApiError as error:
            if error.status not in (404, 409):
                raise

    def _delete(self, st: PodState) -> None:
        options = {"gracePeriodSeconds": 0, "preconditions": {"uid": st.pod["metadata"]["uid"]}}
        try:
            self.api.delete(self._pod_path(st), options)
        except ApiError as error:
            if error.status not in (404, 409):
                raise


def main() -> None:
    parser = argparse.ArgumentParser(description="Run local processes for pods on the fake nodes.")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument(
        "--llmfleet", required=True, help="the llmfleet console script of the repo's venv"
    )
    args = parser.parse_args()
    runner = Runner(Api.from_kubeconfig(args.kubeconfig), args.state, args.llmfleet)

    def shutdown(signum: int, frame: object) -> None:
        runner.stop_all()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    runner.run()


if __name__ == "__main__":
    main()
