"""Can Application Default Credentials be found here? A quick, mostly offline answer.

Used to decide the ``--fallback-dotenv`` case: the ``.env`` file is used only when this says no. It never
fetches a token and never waits long. What it checks, in order (the first hit answers True):

1. ``GOOGLE_APPLICATION_CREDENTIALS`` names a file that exists (set to a missing file: False, because
   ``google.auth.default()`` fails on it too).
2. The gcloud ADC file: ``$CLOUDSDK_CONFIG/application_default_credentials.json``, else
   ``~/.config/gcloud/application_default_credentials.json`` (``%APPDATA%\\gcloud\\...`` on Windows).
3. A metadata server (GCE, GKE Workload Identity, Cloud Run), probed only when the environment hints at
   one: ``KUBERNETES_SERVICE_HOST``, ``GCE_METADATA_HOST``/``GCE_METADATA_ROOT``/``GCE_METADATA_IP``,
   ``K_SERVICE``, ``CLOUD_RUN_JOB``, or a DMI product name starting with ``Google``. The probe is one
   ``GET http://<host>/computeMetadata/v1/`` with ``Metadata-Flavor: Google`` and a short timeout
   (default 0.5 s); the answer must carry ``Metadata-Flavor: Google``. Without a hint nothing goes on
   the network, so a laptop answers at once.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Mapping
from pathlib import Path

ADC_FILE_NAME = "application_default_credentials.json"
DEFAULT_METADATA_HOST = "169.254.169.254"
DMI_PRODUCT_NAME = Path("/sys/class/dmi/id/product_name")
METADATA_HINT_VARIABLES = (
    "KUBERNETES_SERVICE_HOST",
    "GCE_METADATA_HOST",
    "GCE_METADATA_ROOT",
    "GCE_METADATA_IP",
    "K_SERVICE",
    "CLOUD_RUN_JOB",
)
"""Environment variables whose presence makes a metadata server worth probing."""


def google_credentials_available(
    *,
    environ: Mapping[str, str] | None = None,
    probe_metadata: bool = True,
    timeout: float = 0.5,
    dmi_product_name: Path = DMI_PRODUCT_NAME,
) -> bool:
    """True when Application Default Credentials look resolvable (see the module docstring for how)."""
    env = os.environ if environ is None else environ
    explicit = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    if explicit:
        return Path(explicit).is_file()
    if gcloud_adc_file(env).is_file():
        return True
    if probe_metadata and metadata_server_hinted(env, dmi_product_name):
        return metadata_server_answers(metadata_host(env), timeout)
    return False


def gcloud_adc_file(environ: Mapping[str, str]) -> Path:
    """Where ``gcloud auth application-default login`` writes its credentials."""
    config = environ.get("CLOUDSDK_CONFIG")
    if config:
        return Path(config) / ADC_FILE_NAME
    if os.name == "nt" and environ.get("APPDATA"):
        return Path(environ["APPDATA"]) / "gcloud" / ADC_FILE_NAME
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".config" / "gcloud" / ADC_FILE_NAME


def metadata_server_hinted(environ: Mapping[str, str], dmi_product_name: Path = DMI_PRODUCT_NAME) -> bool:
    """True when the environment suggests a metadata server exists (no network involved)."""
    if any(environ.get(name) for name in METADATA_HINT_VARIABLES):
        return True
    try:
        return dmi_product_name.read_text(encoding="utf-8", errors="replace").strip().startswith("Google")
    except OSError:
        return False


def metadata_host(environ: Mapping[str, str]) -> str:
    """``host[:port]`` of the metadata server, honouring the variables google-auth honours."""
    for name in ("GCE_METADATA_HOST", "GCE_METADATA_ROOT", "GCE_METADATA_IP"):
        if environ.get(name):
            return environ[name]
    return DEFAULT_METADATA_HOST


def metadata_server_answers(host: str, timeout: float) -> bool:
    """One short probe: does ``host`` answer like a Google metadata server?"""
    connection = http.client.HTTPConnection(host, timeout=timeout)
    try:
        connection.request("GET", "/computeMetadata/v1/", headers={"Metadata-Flavor": "Google"})
        response = connection.getresponse()
        response.read()
        return response.getheader("Metadata-Flavor") == "Google"
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        connection.close()
