"""Telling the app its secrets changed: signal, HTTP and command notifiers behind one ``Notifier`` protocol,
the coordinator that debounces and retries them, and the ``.notified`` record of what the app was told."""
