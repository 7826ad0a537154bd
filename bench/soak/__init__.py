"""`make soak`: the agent under fire, for minutes, with one table and an exit code at the end.

``python -m bench.soak --duration 10m [--seed N] [--secrets 20] [--json] [--plan]``

One real ``secrets-agent run`` (a child process) against the Secret Manager emulator (a process of its own)
with Pub/Sub events from the official Pub/Sub emulator, writing to a small tmpfs of its own, telling a real
app (``testing/apps/reloading_app.py``) to reload. For ``--duration`` the soak (see ``plan.py`` for the
schedule, drawn from ``--seed``; ``--plan`` prints it and runs nothing):

* rotates secrets every second through the official client: one username/password **pair** (two secrets,
  user first) and one single token per tick; every value names its secret and generation and carries a
  checksum (``testing/soak_values.py``, shared with the soak's test);
* switches emulator faults on and off in phases: UNAVAILABLE, RESOURCE_EXHAUSTED, latency spikes past the
  call timeout, corrupted checksums, a tiny access quota, a full outage;
* SIGKILLs the agent at random times and restarts it; stops the Pub/Sub emulator and restarts it on the
  same port; fills the output tmpfs up and frees it (``chaos.py``);
* reads all the while (``observers.py``): every snapshot through ``..data`` and every file on its own; the
  endpoint, with the token from ``<output>/.token``, plus a long-poll; the app's log of what it read at
  each SIGHUP. A torn read (a value cut or malformed), a mixed read (files of one ``..data`` read from
  different snapshots, an env file line that differs from its file, an endpoint body that is not the
  version its headers state) or a rollback (a version older than one already served) breaks an invariant.

Then rotations and faults stop and it times convergence (``convergence.py``): every secret at the emulator's
latest version in the files and on the endpoint, /readyz 200, and the app's last read. The agent's memory is
sampled all along; the trend is fitted over the one process that lives through the memory window (no kills
there). At the end (``report.py``): one table (``--json``: a document), exit 1 when an invariant broke, 2 for
bad arguments.

The modules, bottom up: ``plan`` (the schedule, pure), ``world`` (the processes and the volume),
``observers`` (the readers), ``chaos`` (the operator and the disruptions), ``convergence``, ``report``
(the invariants judged), ``run`` (one run composed of them all), ``__main__`` (the command).
"""
