"""The network trap the offline tests run first in a fresh interpreter (a script prelude).

It defines ``attempts`` (every refused call, for the test to assert empty) and makes socket
connects, DNS lookups and ``urllib`` opens raise. ``PIP_TRAP`` also refuses pip/uv subprocesses.
"""
NETWORK_TRAP = r'''
import json, socket, subprocess, sys, urllib.request
from pathlib import Path
attempts = []
def trap(name):
    def refuse(*args, **kwargs):
        attempts.append(f"{name}{args[:2]!r}")
        raise OSError(f"network disabled in this test: {name}")
    return refuse
socket.socket.connect = trap("connect")
socket.socket.connect_ex = trap("connect_ex")
socket.create_connection = trap("create_connection")
socket.getaddrinfo = trap("getaddrinfo")
urllib.request.urlopen = trap("urlopen")
'''

PIP_TRAP = r'''
real_popen_init = subprocess.Popen.__init__
def popen(self, args, *a, **k):  # pip/uv installs run as subprocesses
    words = [str(w) for w in (args if isinstance(args, (list, tuple)) else str(args).split())]
    if "pip" in words or Path(words[0]).name in ("pip", "pip3", "uv"):
        attempts.append(f"subprocess {args!r}")
        raise OSError("package installs disabled in this test")
    return real_popen_init(self, args, *a, **k)
subprocess.Popen.__init__ = popen
'''
