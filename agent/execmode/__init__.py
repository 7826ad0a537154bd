"""``secrets-agent exec``: secrets as environment variables of the app, by exec or by a small supervisor.

Plain ``exec`` replaces the agent process with the app (``exec_replace``): the app keeps the agent's pid
(PID 1 in a container), receives signals directly, and nothing of the agent stays behind. The environment
is fixed at start, so a rotated secret reaches the app only when it restarts.

``exec --watch`` keeps the agent as a small supervisor (``WatchedChild``), in the manner of tini and
dumb-init: every catchable signal it receives goes to the app, orphans reparented to it are reaped, it
exits with the app's status, and on rotation it restarts the app with the new environment (or sends it a
signal; a running process's environment cannot be changed from outside, so with a reload signal the app
must re-read its secrets from files).

Exit statuses follow the shell: the app's own status, ``128 + N`` when it died of signal N, 127 when the
command was not found and 126 when it could not be executed.
"""
