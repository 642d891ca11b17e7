"""A pod's namespace and name from its uid, without an API-server client.

The kubelet keeps each pod's container logs in
/var/log/pods/<namespace>_<name>_<uid>/ (created before the pod's containers
start): a DaemonSet that mounts that directory read-only names every pod on
its node. Neither a namespace nor a pod name can hold "_" (DNS-1123), so the
directory name splits cleanly. A sidecar without it knows its own pod from
the downward API (POD_UID, POD_NAMESPACE, POD_NAME in its environment).
"""

from __future__ import annotations

import os
import time

POD_LOG_DIR = "/var/log/pods"
RESCAN_S = 2.0  # an unknown uid rescans the directory at most this often


class PodNames:
    def __init__(self, log_dir: str = POD_LOG_DIR, environ=os.environ):
        self.log_dir = log_dir
        self._names: dict[str, tuple[str, str]] = {}
        uid = environ.get("POD_UID", "").lower()
        if uid and environ.get("POD_NAME"):
            self._names[uid] = (environ.get("POD_NAMESPACE", ""), environ["POD_NAME"])
        self._scanned = float("-inf")

    def of(self, uid: str) -> tuple[str, str]:
        """(namespace, name) of the pod with this uid; ("", "") if unknown."""
        if not uid:
            return "", ""
        hit = self._names.get(uid)
        if hit is None and time.monotonic() - self._scanned >= RESCAN_S:
            self._scan()
            hit = self._names.get(uid)
        return hit or ("", "")

    def _scan(self) -> None:
        self._scanned = time.monotonic()
        try:
            entries = os.listdir(self.log_dir)
        except OSError:
            return
        for entry in entries:
            parts = entry.split("_")
            if len(parts) == 3 and len(parts[2]) == 36:
                self._names[parts[2]] = (parts[0], parts[1])


pod_names = PodNames()  # the agent's: configure() replaces it at start-up


def configure(log_dir: str = POD_LOG_DIR, environ=os.environ) -> None:
    global pod_names
    pod_names = PodNames(log_dir, environ)
