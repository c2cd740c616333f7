"""The operator on the local control plane, installed the way the chart installs it.

Used by `make run` (`python e2e/localop.py demo`), `make cluster-down` (`down`) and
the e2e fixtures. `up` installs the chart with `helm upgrade --install` (CRD,
service account, least-privilege RBAC; the operator Deployment at 0 replicas, since no
image runs here), then runs `llmfleet operator` on this machine with a kubeconfig holding
only that service account's token, as the in-cluster operator would run. `demo` also
applies the simulated example and asks one of its pods, then applies the autoscaled
simulated example and sends it a burst until it scales out. `down` stops it by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SYSTEM = "llmfleet-system"
RELEASE = "llmfleet"
ACCOUNT = f"{RELEASE}-operator"
GATEWAY_ACCOUNT = f"{RELEASE}-gateway"
CRDS = ("crd/llmdeployments.llmfleet.io", "crd/llmtenants.llmfleet.io")


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _check(result: subprocess.CompletedProcess[str]) -> str:
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, result.args))}: {result.stderr.strip()}")
    return result.stdout


def helm() -> str:
    """The helm binary, installed by `e2e/install-helm.sh` when missing (cached)."""
    found = subprocess.run(
        ["bash", str(REPO / "e2e" / "install-helm.sh")], capture_output=True, text=True, check=False
    )
    return _check(found).split()[-1]


def install_chart(kubeconfig: Path, *sets: str) -> None:
    """`helm upgrade --install` of the chart (CRDs, RBAC; the operator and gateway at 0
    replicas), with ``sets`` as further ``--set`` values.

    A CRD applied before without Helm (`kubectl apply -f crds/`) is adopted by the
    release, the way Helm documents: it gets the release's label and annotations first.
    """
    for crd in CRDS:
        if kubectl(kubeconfig, "get", crd).returncode != 0:
            continue
        _check(
            kubectl(kubeconfig, "label", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite")
        )
        _check(
            kubectl(
                kubeconfig,
                "annotate",
                crd,
                f"meta.helm.sh/release-name={RELEASE}",
                f"meta.helm.sh/release-namespace={SYSTEM}",
                "--overwrite",
            )
        )
    chart = str(REPO / "charts" / "llmfleet")
    _check(
        subprocess.run(
            [
                helm(),
                "upgrade",
                "--install",
                RELEASE,
                chart,
                f"--kubeconfig={kubeconfig}",
                "--namespace",
                SYSTEM,
                "--create-namespace",
                "--set",
                "operator.replicas=0",
                # The gateway runs on this machine too, with its service account's token.
                "--set",
                "gateway.autoscaling.enabled=false",
                "--set",
                "gateway.replicas=0",
                *(flag for value in sets for flag in ("--set", value)),
                "--wait",
                "--timeout=120s",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    )
    _check(kubectl(kubeconfig, "wait", "--for=condition=Established", *CRDS))


def service_account_kubeconfig(admin: Path, out: Path, account: str = ACCOUNT) -> Path:
    """A kubeconfig for one of the chart's service accounts (the operator's by default): its
    token, nothing else."""
    token = _check(
        kubectl(admin, "create", "token", account, "-n", SYSTEM, "--duration=12h")
    ).strip()
    config = yaml.safe_load(admin.read_text())
    config["users"] = [{"name": account, "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = account
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    return out


@dataclass
class LocalOperator:
    """`llmfleet operator` as a local process; its PID and log live in the state folder."""

    kubeconfig: Path
    state: Path
    metrics_port: int = 18080
    identity: str = "local"
    namespaces: tuple[str, ...] = ()
    """Watch only these (default: every namespace)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def pidfile(self) -> Path:
        return self.state / f"operator-{self.identity}.pid"

    @property
    def log(self) -> Path:
        return self.state / "logs" / f"operator-{self.identity}.log"

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            str(REPO / ".venv" / "bin" / "llmfleet"),
            "operator",
            f"--kubeconfig={self.kubeconfig}",
            f"--metrics-port={self.metrics_port}",
            "--metrics-address=127.0.0.1",
            "--health-port=0",
            "--resync-seconds=10",
            f"--lease-namespace={SYSTEM}",
            f"--lease-name={ACCOUNT}",
            f"--identity={self.identity}",
            *(f"--namespace={namespace}" for namespace in self.namespaces),
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pidfile.write_text(str(self.process.pid))

    def pid(self) -> int | None:
        """The operator's PID while it runs (reaping it first if this process started it)."""
        if self.process is not None and self.process.poll() is not None:
            return None
        try:
            pid = int(self.pidfile.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while self.pid() is not None and time.monotonic() < deadline:
                time.sleep(0.2)
            if self.pid() is not None:
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=timeout)  # reap the child this process started
            self.process = None
        self.pidfile.unlink(missing_ok=True)


def state_dir() -> Path:
    return Path(os.environ.get("LLMFLEET_STATE_DIR") or REPO / ".llmfleet").resolve()


def up(admin: Path, state: Path) -> LocalOperator:
    """Install the chart and start the operator with its service account (idempotent)."""
    install_chart(admin)
    operator = LocalOperator(
        service_account_kubeconfig(admin, state / "operator.kubeconfig"), state
    )
    if operator.pid() is None:
        operator.start()
    return operator


DEMO = REPO / "examples" / "llama-8b-simulated.yaml"
AUTOSCALED = REPO / "examples" / "llama-8b-simulated-autoscaled.yaml"


def complete(ip_port: str, max_tokens: int) -> str:
    """POST one completion to an engine; the reply's body."""
    body = json.dumps({"model": "llama-8b", "prompt": "Hello", "max_tokens": max_tokens})
    request = urllib.request.Request(
        f"http://{ip_port}/v1/completions", body.encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        text: str = reply.read().decode()
    return text


def demo(admin: Path) -> None:
    """Apply the simulated example, wait until it is Ready, and ask one of its pods; then
    apply the autoscaled one and send it a burst until it has scaled to its maximum."""

    def run(*args: str) -> str:
        return _check(kubectl(admin, *args, "-n", "default"))

    name = yaml.safe_load(DEMO.read_text())["metadata"]["name"]
    selector = f"llmfleet.io/deployment={name}"
    run("apply", "-f", str(DEMO))
    run("wait", f"llmdeployment/{name}", "--for=condition=Ready", "--timeout=180s")
    print(run("get", "llmdeployments"))
    print(run("get", "pods", "-o", "wide", "-l", selector))
    ip = run("get", "pods", "-l", selector, "-o", "jsonpath={.items[0].status.podIP}")
    print(f"POST http://{ip}:8000/v1/completions ->", complete(f"{ip}:8000", 8))

    scaled = yaml.safe_load(AUTOSCALED.read_text())
    name, most = scaled["metadata"]["name"], scaled["spec"]["autoscaling"]["maxReplicas"]
    run("apply", "-f", str(AUTOSCALED))
    run("wait", f"llmdeployment/{name}", "--for=condition=Ready", "--timeout=180s")
    print(f"\nA burst of 10 concurrent clients on {name}, spread over its ready pods:")
    stop = threading.Event()

    def client(number: int) -> None:
        while not stop.is_set():
            endpoints = run("get", f"llmdeployment/{name}", "-o", "jsonpath={.status.endpoints}")
            choices = json.loads(endpoints or "[]")
            if choices:
                complete(choices[number % len(choices)], 50)

    clients = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(10)]
    for thread in clients:
        thread.start()
    deadline = time.monotonic() + 120
    ready = 0
    while ready < most and time.monotonic() < deadline:
        time.sleep(2)
        ready = int(run("get", f"llmdeployment/{name}", "-o", "jsonpath={.status.readyReplicas}"))
    stop.set()
    for thread in clients:
        thread.join(timeout=60)
    print(run("get", "llmdeployment", name))
    decisions = run("get", f"llmdeployment/{name}", "-o", "jsonpath={.status.decisions}")
    for decision in json.loads(decisions or "[]"):
        print(f"  {decision['fromReplicas']} -> {decision['toReplicas']}: {decision['message']}")
    print(f"Quiet now: it scales back to 1 after 20 s (kubectl get llmd {name} -w).")


def down(state: Path) -> None:
    """Stop the local operator, if one runs."""
    LocalOperator(state / "operator.kubeconfig", state).stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["up", "demo", "down"])
    args = parser.parse_args()
    state = state_dir()
    if args.action in ("up", "demo"):
        operator = up(state / "kubeconfig", state)
        print(f"operator running (pid {operator.pid()}), log: {operator.log}")
        if args.action == "demo":
            demo(state / "kubeconfig")
            print(f"export KUBECONFIG={state / 'kubeconfig'}    # then: kubectl get llmd -A")
    else:
        down(state)
        print("operator stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
