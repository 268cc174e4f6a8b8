"""One lock for moto's models.

moto's backends are plain Python objects without locks. The HTTP handlers (one thread per
request) and the reconcile pass both change them: Auto Scaling launches and terminates, target
groups register and deregister. Holding this lock around every moto call and around the parts
of a reconcile pass that read or change moto keeps each of those a consistent step. Nothing slow
runs under it (no Docker call, no HTTP probe, no forwarded request): those work on copies.

Lock order: this lock before `Machines.lock`, never the other way round.
"""

import threading

lock = threading.RLock()
